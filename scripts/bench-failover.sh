# shellcheck shell=bash
# Sourced by scripts/bench.sh for --failover: how long the redis engine
# takes to acknowledge emits again after its master dies.
#
# - A Redis master with two replicas (appendonly yes, appendfsync always)
#   and three Sentinels (down-after-milliseconds 1000, failover-timeout
#   4000), each on a free loopback port with a dir of its own under the
#   bench's temporary dir; one ssehub node on them (redis-sentinel://,
#   --redis-replicas 1).
# - A client of this script's (python3, one keep-alive connection) emits
#   to one source every 10 ms and logs each emit's send and answer times,
#   status and id; a subscriber on the node logs every id it receives
#   (reconnecting with Last-Event-ID if its stream ends).
# - Five rounds: kill -9 of the master the Sentinels name; measured: the
#   time from the kill to the answer of the first emit sent after it that
#   was acknowledged (202). The old master is then started again, and the
#   next round waits until the Sentinels have made it a replica that
#   follows the new master.
# - At the end every acknowledged event must have reached the subscriber
#   once, in order: lost and duplicated are counted. Both logs are kept in
#   target/bench/logs/ (failover-emits.txt: sent, answered, status, id).
# - Bounded: each wait has a deadline (a promotion 20 s, an acknowledged
#   emit 20 s, the old master following 60 s; the end 10 s), so a run takes
#   at most about 9 minutes, normally 2 to 3; a missed deadline fails it.

FO_ROUNDS=${FO_ROUNDS:-5}
FO_DIR= FO_CLIENT= FO_NODE=
FO_PORTS=() FO_PIDS=() FO_SENTINELS=() FO_SENTINEL_PIDS=()

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# fo_redis I: starts Redis server I (0 the first master, the others its replicas).
fo_redis() {
  local i=$1 port=${FO_PORTS[$1]} follow=()
  [ "$i" = 0 ] || follow=(--replicaof 127.0.0.1 "${FO_PORTS[0]}")
  mkdir -p "$FO_DIR/redis-$i"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$FO_DIR/redis-$i" --save '' --appendonly yes \
    --appendfsync always --repl-diskless-sync-delay 0 --daemonize no "${follow[@]}" >>"$LOGS/failover-redis-$i.log" 2>&1 &
  FO_PIDS[i]=$!
  fo_until 10 "redis-server $i answers" "[ \"\$(redis-cli -p $port PING 2>/dev/null)\" = PONG ]"
}

# fo_until SECONDS WHAT CONDITION: polls CONDITION (a shell command) every 20 ms.
fo_until() {
  local deadline
  deadline=$(awk -v t="$(now_s)" -v s="$1" 'BEGIN { printf "%.3f", t + s }')
  until eval "$3"; do
    if awk -v t="$(now_s)" -v d="$deadline" 'BEGIN { exit !(t > d) }'; then
      say "bench: failover: not within $1 s: $2"
      FAILED+=("failover: $2")
      return 1
    fi
    sleep 0.02
  done
}

# fo_master: the index of the server all three Sentinels name as master (fails if they differ).
fo_master() {
  local s port first= i
  for s in "${FO_SENTINELS[@]}"; do
    port=$(redis-cli -p "$s" SENTINEL get-master-addr-by-name main 2>/dev/null | sed -n 2p)
    [ -n "$port" ] || return 1
    [ -z "$first" ] || [ "$port" = "$first" ] || return 1
    first=$port
  done
  for i in "${!FO_PORTS[@]}"; do
    [ "${FO_PORTS[$i]}" = "$first" ] && { echo "$i"; return 0; }
  done
  return 1
}

# fo_field SENTINEL NAME: a field of SENTINEL master main.
fo_field() { redis-cli -p "$1" SENTINEL master main 2>/dev/null | awk -v n="$2" 'prev == n { print; exit } { prev = $0 }'; }

fo_ready() {
  local s i
  for s in "${FO_SENTINELS[@]}"; do
    [ "$(fo_field "$s" num-slaves)" = 2 ] && [ "$(fo_field "$s" num-other-sentinels)" = 2 ] || return 1
  done
  for i in 1 2; do
    redis-cli -p "${FO_PORTS[$i]}" INFO replication 2>/dev/null | grep -q master_link_status:up || return 1
  done
}

# fo_follows I: server I is a replica whose link to its master is up.
fo_follows() {
  local info
  info=$(redis-cli -p "${FO_PORTS[$1]}" INFO replication 2>/dev/null | tr -d '\r')
  grep -q '^role:slave' <<<"$info" && grep -q '^master_link_status:up' <<<"$info"
}

# fo_first_ack T: seconds from T to the answer of the first emit sent after T that was acknowledged.
fo_first_ack() {
  awk -v t="$1" '$1 > t && $3 == 202 { printf "%.3f", $2 - t; found = 1; exit } END { exit !found }' "$FO_DIR/emits" 2>/dev/null
}

fo_stop() {
  local p
  [ -z "$FO_CLIENT" ] || { kill -TERM "$FO_CLIENT" 2>/dev/null || true; wait "$FO_CLIENT" 2>/dev/null || true; }
  [ -z "$FO_NODE" ] || { kill -TERM "$FO_NODE" 2>/dev/null || true; wait "$FO_NODE" 2>/dev/null || true; }
  FO_CLIENT= FO_NODE=
  for p in "${FO_SENTINEL_PIDS[@]}" "${FO_PIDS[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  FO_SENTINEL_PIDS=() FO_PIDS=()
}
# bench.sh's EXIT trap (cleanup: the temporary dir) runs after this, with the run's exit code.
trap 'rc=$?; fo_stop; (exit $rc); cleanup' EXIT

# The emitter and the subscriber (see the top): ARGS port key dir.
FO_CLIENT_PY='
import http.client, json, os, socket, sys, threading, time
port, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
auth = {"Authorization": "Bearer " + key}
stopping = lambda: os.path.exists(out + "/stop")

def emitter():
    conn, n = None, 0
    with open(out + "/emits", "w", buffering=1) as log:
        while not stopping():
            sent, status, eid = time.time(), 0, "-"
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("POST", "/v1/sources/failover/events", body=json.dumps({"n": n}), headers=auth)
                r = conn.getresponse()
                body, status = r.read(), r.status
                if status == 202:
                    eid = json.loads(body)["id"]
            except Exception:
                conn.close() if conn else None
                conn = None
            log.write("%.6f %.6f %d %s\n" % (sent, time.time(), status, eid))
            n += 1
            time.sleep(0.01)

def subscriber():
    last = None
    with open(out + "/seen", "w", buffering=1) as log:
        while not os.path.exists(out + "/caught-up"):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                resume = "Last-Event-ID: %s\r\n" % last if last else ""
                s.sendall(("GET /sources/failover/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s\r\n" % (key, resume)).encode())
                buf = b""
                while not os.path.exists(out + "/caught-up"):
                    try:
                        data = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not data:
                        break
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if line.startswith(b"id: "):
                            last = line[4:].decode()
                            log.write(last + "\n")
                        elif line == b"event: gap":
                            log.write("gap\n")
                s.close()
            except OSError:
                time.sleep(0.1)

threads = [threading.Thread(target=f) for f in (emitter, subscriber)]
for t in threads:
    t.start()
for t in threads:
    t.join()
'

run_failover() {
  local i s round m kill_at promoted_at ack refused first=() lines acked
  FO_DIR=$TMP/failover
  mkdir -p "$FO_DIR"
  say "bench: failover: $(redis-server --version | cut -d' ' -f1-3); a master, 2 replicas, 3 Sentinels; $FO_ROUNDS rounds"
  for i in 0 1 2; do FO_PORTS[i]=$(free_port); done
  for i in 0 1 2; do fo_redis "$i" || return 0; done
  for i in 0 1 2; do
    s=$(free_port)
    mkdir -p "$FO_DIR/sentinel-$i"
    printf '%s\n' "port $s" "bind 127.0.0.1" "dir $FO_DIR/sentinel-$i" "sentinel monitor main 127.0.0.1 ${FO_PORTS[0]} 2" \
      "sentinel down-after-milliseconds main 1000" "sentinel failover-timeout main 4000" "sentinel parallel-syncs main 2" \
      >"$FO_DIR/sentinel-$i/sentinel.conf"
    redis-server "$FO_DIR/sentinel-$i/sentinel.conf" --sentinel >>"$LOGS/failover-sentinel-$i.log" 2>&1 &
    FO_SENTINEL_PIDS+=($!)
    FO_SENTINELS+=("$s")
  done
  fo_until 30 "the Sentinels find each other and the replicas" fo_ready || return 0
  next_port
  local hosts
  hosts=$(printf '127.0.0.1:%s,' "${FO_SENTINELS[@]}")
  SSEHUB_API_KEY=$KEY RUST_LOG=info "$SSEHUB" serve --listen 127.0.0.1:$PORT --data-dir "$FO_DIR/data" \
    --redis "redis-sentinel://${hosts%,}#main" --redis-replicas 1 >>"$LOGS/failover-ssehub.log" 2>&1 &
  FO_NODE=$!
  fo_until 10 "ssehub answers" "curl -sf http://127.0.0.1:$PORT/healthz >/dev/null" || return 0
  curl -sf -X POST -H "Authorization: Bearer $KEY" -d '{"name":"failover"}' "http://127.0.0.1:$PORT/v1/sources" >/dev/null
  python3 -c "$FO_CLIENT_PY" "$PORT" "$KEY" "$FO_DIR" 2>>"$LOGS/failover-client.log" &
  FO_CLIENT=$!
  fo_until 10 "the first emit is acknowledged" "fo_first_ack 0 >/dev/null" || return 0
  sleep 1 # a second of steady emits before the first kill
  for round in $(seq "$FO_ROUNDS"); do
    m=$(fo_master) || { say "bench: failover: the Sentinels do not agree on a master"; FAILED+=("failover: no master"); return 0; }
    kill_at=$(now_s)
    kill -KILL "${FO_PIDS[$m]}"
    wait "${FO_PIDS[$m]}" 2>/dev/null || true
    fo_until 20 "round $round: a replica is promoted" "s=\$(fo_master) && [ \"\$s\" != $m ]" || return 0
    promoted_at=$(now_s)
    fo_until 20 "round $round: an emit is acknowledged" "fo_first_ack $kill_at >/dev/null" || return 0
    ack=$(fo_first_ack "$kill_at")
    first+=("$ack")
    refused=$(awk -v t="$kill_at" -v a="$ack" '$1 > t && $1 < t + a && $3 != 202 { n++ } END { print n + 0 }' "$FO_DIR/emits")
    say "bench: failover round $round: kill -9 of redis-server $m; the Sentinels named another" \
      "$(awk -v a="$kill_at" -v b="$promoted_at" 'BEGIN { printf "%.2f", b - a }') s after it (polled); the first emit sent after it acknowledged at $ack s"
    echo "RESULT server=ssehub label=failover-$round kill_to_ack_s=$ack kill_to_promoted_s=$(awk -v a="$kill_at" -v b="$promoted_at" \
      'BEGIN { printf "%.3f", b - a }') refused=$refused" >>"$RESULTS"
    # The old master comes back, and the Sentinels make it a replica, before the next round.
    fo_redis "$m" || return 0
    fo_until 60 "round $round: the old master follows the new one" "fo_follows $m" || return 0
  done
  # The end: emits stop; the subscriber must have every acknowledged event.
  touch "$FO_DIR/stop"
  acked=$(awk '$3 == 202 { id = $4 } END { print id }' "$FO_DIR/emits")
  fo_until 10 "the subscriber has the last acknowledged event" "grep -qx -- '$acked' '$FO_DIR/seen'" || true
  touch "$FO_DIR/caught-up"
  wait "$FO_CLIENT" 2>/dev/null || true
  FO_CLIENT=
  cp "$FO_DIR/emits" "$LOGS/failover-emits.txt"
  cp "$FO_DIR/seen" "$LOGS/failover-seen.txt"
  lines=$(awk '
      FNR == NR { if ($3 == 202) { acked[$4] = 1; n_acked++ } else refused++; n++; t = $2 - $1; if (t > slowest) slowest = t; next }
      $1 == "gap" { gaps++; next }
      { if (seen[$1]++) dup++; split($1, a, "-"); if (a[1] < ms || (a[1] == ms && a[2] < seq)) disorder++; ms = a[1] + 0; seq = a[2] + 0 }
      END {
        for (id in acked) if (!(id in seen)) loss++
        printf "emits=%d acked=%d refused=%d slowest_s=%.3f loss=%d dup=%d disorder=%d gaps=%d", n, n_acked, refused, slowest, loss, dup, disorder, gaps
      }' "$FO_DIR/emits" "$FO_DIR/seen")
  read -r -a sorted <<<"$(printf '%s\n' "${first[@]}" | sort -n | tr '\n' ' ')"
  echo "RESULT server=ssehub label=failover rounds=${#first[@]} min_s=${sorted[0]} median_s=${sorted[$((${#sorted[@]} / 2))]}" \
    "max_s=${sorted[$((${#sorted[@]} - 1))]} each_s=$(IFS=,; echo "${first[*]}") $lines" >>"$RESULTS"
  fo_stop
}

failover_table() {
  printf '| failover, one run (%s × kill -9 of the master) | value |\n|---|---:|\n' "$(get ssehub failover rounds)"
  printf '| kill -9 → first acknowledged emit sent after it: min / median / max (s) | %s / %s / %s |\n' \
    "$(get ssehub failover min_s)" "$(get ssehub failover median_s)" "$(get ssehub failover max_s)"
  printf '| … each round (s) | %s |\n' "$(get ssehub failover each_s | sed 's/,/, /g')"
  printf '| kill -9 → the Sentinels all name the new master (polled every 20 ms), each round (s) | %s |\n' \
    "$(for i in $(seq "$FO_ROUNDS"); do get ssehub "failover-$i" kill_to_promoted_s; done | paste -sd, | sed 's/,/, /g')"
  printf '| emits sent / acknowledged / refused (503 or no answer) | %s / %s / %s |\n' \
    "$(get ssehub failover emits)" "$(get ssehub failover acked)" "$(get ssehub failover refused)"
  printf '| … refused of those sent from a kill to the first acknowledged after it, each round | %s |\n' \
    "$(for i in $(seq "$FO_ROUNDS"); do get ssehub "failover-$i" refused; done | paste -sd, | sed 's/,/, /g')"
  printf '| slowest answer to an emit (s) | %s |\n' "$(get ssehub failover slowest_s)"
  printf '| subscriber: acknowledged events lost / duplicated | %s |\n' "$(lossdup ssehub failover)"
  printf '| … out of order, gap frames | %s, %s |\n' "$(get ssehub failover disorder)" "$(get ssehub failover gaps)"
}
