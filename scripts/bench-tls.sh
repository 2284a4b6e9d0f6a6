# shellcheck shell=bash
# Sourced by scripts/bench.sh for --tls and --tls-surge: the same load tool
# over TLS (`--url https://…`: rustls, no certificate check, no session
# resumption, so every connect is a full handshake) against ssehub with
# --tls-cert/--tls-key and nginx+nchan with `listen … ssl`, both with one
# ECDSA P-256 certificate made here with openssl, one worker each.
#
# --tls (--quick shrinks every number):
#   tls-ladder      idle TLS subscribers 5k, 10k, 15k, 19.5k: RSS per subscriber
#   fanout          10k subscribers x 1000 events x 100 B, as fast as possible
#                   and at 200/s: plain ssehub, ssehub over TLS, nchan over TLS
#   connects        20 s of connect + full handshake + GET /healthz + close,
#                   32 at once, the server pinned to core 0 and the load tool
#                   to core 1: handshakes/s and server CPU per handshake
#   surge           as --tls-surge
# --tls-surge: 1,000 TLS streams get events at 200/s while 10,000 more
#   clients connect over TLS (256 at once; the measured subscribers' workers
#   5 below the rest of the tool in nice): delivery latency to the 1,000,
#   and the completion of the events emitted while the crowd connected.
#
# connects and surge measure time, not only CPU, so on a machine shared
# with other work they run (as root) at nice -10, server and load tool
# alike: what a dedicated machine would give them. Without root they run
# as the rest, and the "others' CPU" cells tell how much that cost.

tls_setup() {
  local dir=$TMP/tls
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
  chmod 644 "$dir/key.pem" # nginx's worker reads it as nobody
  SCHEME=https
  TLS_ARGS=(--tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem")
  NGX_SSL=" ssl"
  NGX_TLS="ssl_certificate $dir/cert.pem; ssl_certificate_key $dir/key.pem; ssl_protocols TLSv1.2 TLSv1.3;"
}

tls_plain() { SCHEME=http TLS_ARGS=() NGX_SSL= NGX_TLS=; }

if [ $QUICK = 1 ]; then
  TLS_LADDER=1000,2000 TLS_FAN=2000 TLS_EVENTS=200 TLS_CONNECT_SECS=5s
  SURGE_N=200 SURGE_CROWD=2000 SURGE_EVENTS=3000
else
  TLS_LADDER=5000,10000,15000,19500 TLS_FAN=10000 TLS_EVENTS=1000 TLS_CONNECT_SECS=20s
  SURGE_N=1000 SURGE_CROWD=10000 SURGE_EVENTS=9000
fi

# surge: at 200/s the emits last 45 s (15 with --quick), past the crowd.
# PRIO: nice -10 as root (see above), else nothing.
PRIO=()
[ "$(id -u)" -ne 0 ] || PRIO=(nice -n -10)

tls_surge_one() {
  PIN_SRV=("${PRIO[@]}") PIN_TOOL=("${PRIO[@]}")
  load ssehub surge surge --n $SURGE_N --crowd $SURGE_CROWD --crowd-inflight 256 --events $SURGE_EVENTS \
    --bytes $BYTES --rate $RATE --window $SURGE_EVENTS --timeout 300s
  PIN_SRV=() PIN_TOOL=()
}

run_tls_surge() {
  SERVERS=ssehub
  tls_setup
  tls_surge_one
}

run_tls() {
  local s r
  SERVERS="ssehub nchan"
  tls_plain
  for r in 0 $RATE; do
    load ssehub "plain-fanout-rate$r" fanout --n $TLS_FAN --events $TLS_EVENTS --bytes $BYTES --rate $r \
      --window $TLS_EVENTS --timeout 600s
  done
  tls_setup
  for s in $SERVERS; do
    load "$s" tls-ladder ladder --steps "$TLS_LADDER" --hold "$HOLD"
    for r in 0 $RATE; do
      load "$s" "tls-fanout-rate$r" fanout --n $TLS_FAN --events $TLS_EVENTS --bytes $BYTES --rate $r \
        --window $TLS_EVENTS --timeout 600s
    done
  done
  PIN_SRV=("${PRIO[@]}") PIN_TOOL=("${PRIO[@]}")
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_SRV+=(taskset -c 0) PIN_TOOL+=(taskset -c 1)
  fi
  for s in $SERVERS; do
    load "$s" tls-connects connects --secs $TLS_CONNECT_SECS --inflight 32
  done
  PIN_SRV=() PIN_TOOL=()
  tls_surge_one
}

# step SERVER N KEY: a value of the tls-ladder step N.
step() {
  awk -v srv="$1" -v n="$2" -v key="$3" '$1 == "RESULT" && index($0, " server=" srv " ") && index($0, " label=tls-ladder ") &&
      index($0, " step=" n " ") { for (i = 2; i <= NF; i++) if (index($i, key "=") == 1) v = substr($i, length(key) + 2) }
    END { print (v == "" ? "n/a" : v) }' "$RESULTS"
}

# ratio A B: A / B to 2 places, or n/a.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }

tls_table() {
  local n r a b
  printf '| over TLS, one run | ssehub | nchan | ssehub ÷ nchan |\n|---|---:|---:|---:|\n'
  for n in ${TLS_LADDER//,/ }; do
    a=$(step ssehub "$n" rss_per_sub_b) b=$(step nchan "$n" rss_per_sub_b)
    printf '| idle %s: subscribers held | %s | %s | |\n' "$n" "$(step ssehub "$n" held_end)" "$(step nchan "$n" held_end)"
    printf '| idle %s: server RSS per subscriber (B) | %s | %s | %s |\n' "$n" "$a" "$b" "$(ratio "$a" "$b")"
  done
  a=$(get ssehub tls-ladder rss_slope_b ladder-fit) b=$(get nchan tls-ladder rss_slope_b ladder-fit)
  printf '| idle: RSS per subscriber, fitted slope (B) | %s | %s | %s |\n' "$a" "$b" "$(ratio "$a" "$b")"
  for r in 0 $RATE; do
    local label="fan-out $TLS_FAN x $TLS_EVENTS x $BYTES B $([ "$r" = 0 ] && echo 'max rate' || echo "@ $r/s")"
    a=$(perm ssehub "tls-fanout-rate$r") b=$(perm nchan "tls-fanout-rate$r")
    printf '| %s: CPU-s per million deliveries (plain ssehub: %s; TLS ÷ plain %s) | %s | %s | %s |\n' "$label" \
      "$(perm ssehub "plain-fanout-rate$r")" "$(ratio "$a" "$(perm ssehub "plain-fanout-rate$r")")" "$a" "$b" "$(ratio "$a" "$b")"
    printf '| … deliveries/s (plain ssehub: %s) | %s | %s | |\n' "$(get ssehub "plain-fanout-rate$r" deliveries_per_s)" \
      "$(get ssehub "tls-fanout-rate$r" deliveries_per_s)" "$(get nchan "tls-fanout-rate$r" deliveries_per_s)"
    printf '| … completion p99 (ms) (plain ssehub: %s) | %s | %s | |\n' "$(ms ssehub "plain-fanout-rate$r" done_p99_us)" \
      "$(ms ssehub "tls-fanout-rate$r" done_p99_us)" "$(ms nchan "tls-fanout-rate$r" done_p99_us)"
    printf '| … lost / duplicated; others'"'"' CPU (%% of all cores) | %s; %s | %s; %s | |\n' \
      "$(lossdup ssehub "tls-fanout-rate$r")" "$(get ssehub "tls-fanout-rate$r" others_cpu_pct)" \
      "$(lossdup nchan "tls-fanout-rate$r")" "$(get nchan "tls-fanout-rate$r" others_cpu_pct)"
  done
  printf '| full handshakes/s, server on core 0, tool on core 1 | %s | %s | %s |\n' "$(get ssehub tls-connects connects_per_s)" \
    "$(get nchan tls-connects connects_per_s)" "$(ratio "$(get ssehub tls-connects connects_per_s)" "$(get nchan tls-connects connects_per_s)")"
  printf '| … server CPU per handshake (µs); its core busy (%%) | %s; %s | %s; %s | %s |\n' \
    "$(get ssehub tls-connects srv_us_per_connect)" "$(get ssehub tls-connects srv_core_pct)" \
    "$(get nchan tls-connects srv_us_per_connect)" "$(get nchan tls-connects srv_core_pct)" \
    "$(ratio "$(get ssehub tls-connects srv_us_per_connect)" "$(get nchan tls-connects srv_us_per_connect)")"
  printf '| … load tool CPU per handshake (µs); failed | %s; %s | %s; %s | |\n' \
    "$(get ssehub tls-connects tool_us_per_connect)" "$(get ssehub tls-connects connect_failed)" \
    "$(get nchan tls-connects tool_us_per_connect)" "$(get nchan tls-connects connect_failed)"
  tls_surge_table | tail -n +3
}

tls_surge_table() {
  printf '| over TLS, one run | ssehub |\n|---|---:|\n'
  printf '| surge: %s streams at %s/s while %s clients connect: delivery p99 / max (ms) | %s / %s |\n' "$SURGE_N" "$RATE" \
    "$SURGE_CROWD" "$(ms ssehub surge lat_p99_us)" "$(ms ssehub surge lat_max_us)"
  printf '| … events emitted while the crowd connected; their completion p99 (ms) | %s; %s |\n' \
    "$(get ssehub surge during_events)" "$(ms ssehub surge during_done_p99_us)"
  printf '| … crowd connected, in (s); connects/s; connect p99 (ms) | %s, %s; %s; %s |\n' "$(get ssehub surge crowd_held)" \
    "$(get ssehub surge crowd_s)" "$(get ssehub surge crowd_per_s)" "$(get ssehub surge crowd_connect_p99_ms)"
  printf '| … lost / duplicated; others'"'"' CPU (%% of all cores) | %s; %s |\n' "$(lossdup ssehub surge)" "$(get ssehub surge others_cpu_pct)"
}
