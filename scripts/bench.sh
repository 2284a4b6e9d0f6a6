#!/usr/bin/env bash
# Side by side benchmark: ssehub against nchan (nginx + libnginx-mod-nchan),
# the same scenarios driven by the same load tool (benches/load/) and wrk,
# each scenario on a freshly started server, on loopback only. docs/benchmarks.md
# explains the method and holds the last full run.
#
#   scripts/bench.sh            full run (8-10 minutes on 2 cores)
#   scripts/bench.sh --quick    smoke run with small numbers (1-2 minutes)
#   scripts/bench.sh --only ssehub|nchan
#   scripts/bench.sh --storage  the storage engines instead (ssehub only, 1-2 minutes)
#   scripts/bench.sh --redis    the redis engine instead (ssehub only, 4 minutes)
#   scripts/bench.sh --redis-ab OTHER
#                               emits with redis, alternating another ssehub
#                               binary (OTHER) and this one, 3 rounds (2 minutes)
#   scripts/bench.sh --drain    reconnect spread of a --drain stop (ssehub
#                               only, 1 minute)
#   scripts/bench.sh --tls      over TLS: ssehub against nginx+nchan with ssl
#                               (scripts/bench-tls.sh; 16 minutes on 2 busy
#                               cores, --quick 4)
#   scripts/bench.sh --tls-surge
#                               only the TLS surge: delivery to 1,000 streams
#                               while 10,000 clients connect (2 minutes)
#   scripts/bench.sh --million [N]
#                               N subscribers (default 1,000,000) over K
#                               --reuse-port redis-engine processes, held,
#                               then 10 events to all (scripts/bench-million.sh;
#                               at most 15 minutes; root sets kernel settings
#                               for the run and restores them)
#   scripts/bench.sh --failover five kill -9 of a Redis master under three
#                               Sentinels: the time to the first acknowledged
#                               emit after each, and nothing lost (ssehub
#                               only, about 2.5 minutes; scripts/bench-failover.sh)
#   scripts/bench.sh --fairness one account's load against another's
#                               emit -> delivery latency, and the cost of
#                               limits (ssehub only, 6 minutes; see
#                               scripts/bench-fairness.sh)
#
# It builds ssehub (release) and the load tool, installs nginx,
# libnginx-mod-nchan, wrk and gnuplot-nox from Debian when missing (root or
# sudo, the first time only), then writes to target/bench/:
#   results.txt  the raw RESULT lines, each with server=<name>, and # notes
#   table.md     the side by side table (also printed)
#   chart.png    RSS vs idle subscribers and completion p99 vs subscribers
#   logs/        every load-tool table, wrk summary, server log, nginx.conf
# A full run also copies the chart to docs/bench.png.
#
# Scenarios (full; --quick shrinks every number):
#   ladder     idle subscribers 5k, 10k, 15k, 19.5k: RSS per subscriber
#   fanout     1k, 5k, 10k subscribers x 1000 events x 100 B at 200/s (the
#              p99 curve), and 10k as fast as possible (rate 0)
#   emit       wrk -t2 -c64 -d10s, no subscriber, server on core 0 and wrk
#              on core 1; then the same against GET /healthz: wrk's ceiling
#   handshake  19.5k idle subscribers held 60 s: server CPU (ssehub writes a
#              :sse-handshake every 15 s; nchan sends nothing to an idle
#              EventSource, so for it this is plain idle cost)
#
# Storage (--storage): the fdatasync latency of this disk (dd oflag=dsync,
# 1000 appends of 200 B, in the dir the data dirs live in); emit with wrk
# -t2 -c64 pinned as above for memory and log --fsync never|everysec|always
# (syncs/s and events per sync from /metrics); fan-out 5k subscribers x
# 1000 events as fast as possible with memory and with log; recovery: start
# with 10,000 sources x 100 events of 200 B retained.
#
# Redis (--redis): a redis-server of Debian's (installed when missing) on a
# free loopback port, appendonly yes, appendfsync everysec then always, a
# fresh dir and no data per run; emit with wrk as above (Redis unpinned)
# against memory and redis, with Redis's CPU per event, pinned and then
# unpinned; MEMORY USAGE of what the run left; fan-out 10k x 1000 as fast as
# possible with memory and with redis; three --reuse-port processes on one
# port holding 50,000 subscribers (--quick: 6,000) with an event each
# second, then 59,850 for the largest count. --redis-ab: the pinned
# everysec emit of OTHER, of this build and of memory, in turn, 3 times.
#
# Drain (--drain): the load tool's `drain` scenario starts the ssehub
# processes itself (engine memory, --reuse-port on one port): 19,000
# subscribers (--quick: 2,000) over 2 worker processes on node A alone;
# node B starts (its READY=1 awaited), A gets SIGTERM with --drain 10s, and
# every subscriber, acting as EventSource (waits its `retry:`, 3 s without
# one), reconnects through the port to B; then C starts and B gets SIGTERM
# with --drain 0s. Per stop: reconnects per 100 ms window (max, p99, mean
# over the windows from the SIGTERM to the last reconnect) and that span.
#
# Every ssehub gets a fresh --data-dir under a temporary dir (the default
# engine is log --fsync everysec).
#
# Environment: BENCH_PORT (first port tried, default 18080).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BENCH_ARGS=("$@")
QUICK=0 STORAGE=0
SERVERS="ssehub nchan"
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --only) SERVERS=${2:?--only needs ssehub or nchan}; shift ;;
    --storage) STORAGE=1 ;;
    --redis) STORAGE=redis ;;
    --drain) STORAGE=drain ;;
    --tls) STORAGE=tls ;;
    --tls-surge) STORAGE=tls_surge ;;
    --fairness) STORAGE=fairness ;;
    --failover) STORAGE=failover ;;
    --million)
      STORAGE=million
      case ${2:-} in [0-9]*) MILLION_N=${2//[,_]/}; shift ;; esac
      ;;
    --redis-ab) STORAGE=redis_ab AB_BIN=${2:?--redis-ab needs an ssehub binary}; shift ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
for s in $SERVERS; do
  case $s in ssehub | nchan) ;; *) echo "bench.sh: unknown server $s" >&2; exit 2 ;; esac
done

if [ $QUICK = 1 ]; then
  LADDER=1000,2000 HOLD=1s
  CURVE="500 1000 2000" FAN_N=2000 EVENTS=200
  WRK_SECS=3
  HS_N=2000 HS_SECS=16s
  REUSE_N=6000 REUSE_MAX=
else
  LADDER=5000,10000,15000,19500 HOLD=2s
  CURVE="1000 5000 10000" FAN_N=10000 EVENTS=1000
  WRK_SECS=10
  HS_N=19500 HS_SECS=60s
  REUSE_N=50000 REUSE_MAX=59850
fi
RATE=200 BYTES=100

OUT=$ROOT/target/bench
LOGS=$OUT/logs
RESULTS=$OUT/results.txt
NCHAN_MOD=/usr/lib/nginx/modules/ngx_nchan_module.so

say() { printf '%s\n' "$*" >&2; }

# ---- what it needs ---------------------------------------------------------
install_missing() {
  local need=()
  [ "$STORAGE" != drain ] || return 0 # ssehub and the load tool only
  [ "$STORAGE" != fairness ] || { command -v wrk >/dev/null && return 0; } # and wrk
  [[ $STORAGE != million && $STORAGE != failover ]] || { command -v redis-server >/dev/null && return 0; } # and Redis
  command -v nginx >/dev/null || need+=(nginx)
  [[ $STORAGE != tls* ]] || command -v openssl >/dev/null || need+=(openssl)
  [ -e $NCHAN_MOD ] || need+=(libnginx-mod-nchan)
  command -v wrk >/dev/null || need+=(wrk)
  [[ $STORAGE != redis && $STORAGE != million && $STORAGE != failover ]] || command -v redis-server >/dev/null || need+=(redis-server)
  command -v gnuplot >/dev/null || need+=(gnuplot-nox)
  [ ${#need[@]} -eq 0 ] && return
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  say "bench: installing ${need[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
}

build() {
  say "bench: building ssehub (release) and the load tool"
  cargo build --release --quiet
  SSEHUB=$ROOT/target/release/ssehub
  [ "$STORAGE" != failover ] || return 0 # it needs no load tool
  LOAD=$(cargo bench --bench load --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*/load-[^"]*"' | tail -1 | cut -d'"' -f4)
  [ -x "$LOAD" ] || { say "bench: cannot find the load tool's executable"; exit 1; }
}

# ---- servers ---------------------------------------------------------------
SRV_MAIN= # the process we started (ssehub, or nginx's master)
SRV_PID=  # the one measured (ssehub, or nginx's only worker)
PORT=${BENCH_PORT:-18080}
TMP=$(mktemp -d /tmp/ssehub-bench.XXXXXX)
chmod 755 "$TMP" # nginx's worker runs as nobody when started by root

stop_server() {
  [ -n "$SRV_MAIN" ] || return 0
  kill -TERM "$SRV_MAIN" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$SRV_MAIN" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SRV_MAIN" 2>/dev/null || true
  wait "$SRV_MAIN" 2>/dev/null || true
  SRV_MAIN= SRV_PID=
}

cleanup() {
  local rc=$?
  stop_server
  stop_redis
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Each fresh server gets a fresh port, so no TIME_WAIT of the last run is met.
next_port() {
  PORT=$((PORT + 1))
  while port_open $PORT; do PORT=$((PORT + 1)); done
}

wait_listening() {
  for _ in $(seq 100); do
    port_open $PORT && return 0
    kill -0 "$SRV_MAIN" 2>/dev/null || break
    sleep 0.1
  done
  say "bench: $1 did not start on port $PORT (see $LOGS/$1.log)"
  exit 1
}

# Set by wrk_emit: the server on core 0, wrk on core 1 (see there).
PIN_SRV=()
PIN_TOOL=()

# Engine flags of the next ssehub (--storage sets them per run).
ENGINE_ARGS=()
# --tls: the next server speaks TLS (ssehub's flags; nginx's directives).
SCHEME=http
TLS_ARGS=()
NGX_SSL= NGX_TLS=

start_ssehub() {
  next_port
  DATA=$TMP/data-$PORT
  SSEHUB_API_KEY=$KEY RUST_LOG=info "${PIN_SRV[@]}" "$SSEHUB" serve --listen 127.0.0.1:$PORT --source load \
    --data-dir "$DATA" "${ENGINE_ARGS[@]}" "${TLS_ARGS[@]}" >>"$LOGS/ssehub.log" 2>&1 &
  SRV_MAIN=$! SRV_PID=$!
  wait_listening ssehub
}

# One worker process, as ssehub is one thread: each server gets one core.
# The fd limit is the hard one for both. nginx's connection slots are twice
# that: nchan takes more than one slot for some subscribers, and with slots =
# fds nginx stopped at ~18.7k subscribers ("worker_connections are not
# enough") with descriptors to spare; this way the fd limit is the limit, as
# for ssehub. Keep-alive is not capped at 1000 requests (nginx's default)
# since ssehub does not cap it either.
start_nchan() {
  next_port
  local dir=$TMP/nginx hard
  hard=$(ulimit -Hn)
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<EOF
load_module $NCHAN_MOD;
worker_processes 1;
worker_rlimit_nofile $hard;
pid $dir/nginx.pid;
error_log "$LOGS/nchan-error.log" warn;
events { worker_connections $((2 * hard)); }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
  nchan_message_buffer_length 100;
  $NGX_TLS
  server {
    listen 127.0.0.1:$PORT backlog=4096$NGX_SSL;
    location ~ ^/pub/(\w+)\$ {
      nchan_publisher http;
      nchan_channel_id \$1;
    }
    location ~ ^/sub/(\w+)\$ {
      nchan_subscriber eventsource;
      nchan_channel_id \$1;
      nchan_subscriber_first_message newest;
    }
    # Plain nginx, for wrk's ceiling (as ssehub's /healthz).
    location = /healthz { return 200 "ok\\n"; }
  }
}
EOF
  cp "$dir/nginx.conf" "$LOGS/nginx.conf"
  "${PIN_SRV[@]}" nginx -p "$dir" -e "$LOGS/nchan-error.log" -c "$dir/nginx.conf" -g 'daemon off;' >>"$LOGS/nchan.log" 2>&1 &
  SRV_MAIN=$!
  wait_listening nchan
  # The master listens before it forks its worker.
  for _ in $(seq 100); do
    SRV_PID=$(awk '{print $1}' "/proc/$SRV_MAIN/task/$SRV_MAIN/children")
    [ -n "$SRV_PID" ] && return 0
    sleep 0.1
  done
  say "bench: nginx started no worker"
  exit 1
}

start_server() { stop_server; "start_$1"; }

# ---- measurements ----------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_s() { sed 's/.*) //' "/proc/$1/stat" | awk -v t="$CLK_TCK" '{printf "%.3f", ($12 + $13) / t}'; }

FAILED=()

# busy_s: CPU seconds the whole machine has spent busy since boot.
busy_s() { awk -v t="$CLK_TCK" '$1 == "cpu" { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / t; exit }' /proc/stat; }
now_s() { date +%s.%N; }

# others BUSY0 SRV0 T0 TOOL_CPU: the % of all cores that processes other than
# the server and the load tool took since the three readings: other
# engineers' builds and tests on a shared machine. Shown in the table.
others() {
  awk -v b0="$1" -v b1="$(busy_s)" -v s0="$2" -v s1="$(cpu_s "$SRV_PID")" -v t0="$3" -v t1="$(now_s)" \
    -v tool="$4" -v n="$(nproc)" 'BEGIN { o = (b1 - b0) - (s1 - s0) - tool; printf "%.0f", (o < 0 ? 0 : o) * 100 / (n * (t1 - t0)) }'
}

# load SERVER LABEL SCENARIO ARGS...: one load-tool run against a fresh server.
load() {
  local server=$1 label=$2 log b0 s0 t0 tool pct key=
  shift 2
  log=$LOGS/$server-$label.log
  [ "$server" = ssehub ] && key=$KEY # nchan takes no key
  start_server "$server"
  say "bench: $server $label"
  b0=$(busy_s) s0=$(cpu_s "$SRV_PID") t0=$(now_s)
  if ! SSEHUB_API_KEY=$key timeout --foreground -k 5 900 "${PIN_TOOL[@]}" "$LOAD" "$@" --target "$server" \
    --url "$SCHEME://127.0.0.1:$PORT" --pid "$SRV_PID" >"$log" 2>&1; then
    FAILED+=("$server $label")
    say "bench: $server $label FAILED; the end of $log:"
    tail -5 "$log" >&2
  fi
  tool=$(sed -n 's/.* tool_cpu_total_s=\([0-9.]*\).*/\1/p' "$log" | tail -1)
  pct=$(others "$b0" "$s0" "$t0" "${tool:-0}")
  sed -n "s/^RESULT \(.*\)/RESULT server=$server label=$label \1 others_cpu_pct=$pct/p" "$log" >>"$RESULTS"
  stop_server
}

# wrk_emit SERVER: emit throughput with no subscriber, plus both sides' CPU;
# then wrk's ceiling: the same wrk against the server's cheapest answer
# (GET /healthz), which no emit can beat. With two cores or more the server
# runs on core 0 and wrk on core 1, for both servers alike: unpinned, the
# scheduler often ran the server and a wrk thread on one core while the
# other idled (up to 20 % of the machine idle, measured), and which server
# that hurt more changed from run to run.
wrk_emit() {
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_SRV=(taskset -c 0) PIN_TOOL=(taskset -c 1)
  fi
  wrk_run "$1" emit
  wrk_run "$1" ceiling
  PIN_SRV=() PIN_TOOL=()
}

# wrk_run SERVER emit|ceiling: one wrk run against a fresh server.
wrk_run() {
  local server=$1 label=$2 log=$LOGS/$1-$2.log url args b0 c0 c1 t0 tool pct busy
  start_server "$server"
  url=http://127.0.0.1:$PORT
  case $label-$server in
    emit*-ssehub) args=(-s "$ROOT/scripts/wrk/emit.lua" "$url" -- load $BYTES) ;;
    emit-nchan) args=(-s "$ROOT/scripts/wrk/nchan.lua" "$url" -- load $BYTES) ;;
    *) args=(--latency "$url/healthz") ;;
  esac
  say "bench: $server $label (wrk -t2 -c64 -d${WRK_SECS}s${PIN_TOOL[*]:+, pinned})"
  b0=$(busy_s) c0=$(cpu_s "$SRV_PID") t0=$(now_s)
  # `times` prints the subshell's children's CPU (wrk's) on its second line.
  tool=$( (SSEHUB_API_KEY=$KEY timeout --foreground -k 5 $((WRK_SECS + 60)) "${PIN_TOOL[@]}" wrk -t2 -c64 \
    -d${WRK_SECS}s "${args[@]}" >"$log" 2>&1 || echo "wrk failed" >>"$log"
    times) | awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.2f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }')
  pct=$(others "$b0" "$c0" "$t0" "$tool")
  busy=$(awk -v b0="$b0" -v b1="$(busy_s)" -v t0="$t0" -v t1="$(now_s)" -v n="$(nproc)" 'BEGIN { printf "%.0f", (b1 - b0) * 100 / (n * (t1 - t0)) }')
  c1=$(cpu_s "$SRV_PID")
  [ "$server" = ssehub ] && metrics >"$LOGS/$server-$label.metrics"
  # Without a script wrk prints only its summary: the same line from it.
  grep -q '^RESULT' "$log" || awk '/ requests in / { n = $1 } /^Requests\/sec:/ { r = $2 }
    /^ +99%/ { p = $2; m = (p ~ /us$/ ? 1 : p ~ /ms$/ ? 1000 : 1e6); sub(/[a-z]+$/, "", p); p99 = p * m }
    END { if (n) printf "RESULT scenario=ceiling requests=%d req_per_s=%.0f lat_p99_us=%d\n", n, r, p99 }' "$log" >>"$log"
  if grep -q '^RESULT' "$log"; then
    sed -n "s/^RESULT \(.*\)/RESULT server=$server label=$label \1/p" "$log" |
      awk -v c0="$c0" -v c1="$c1" -v t="$tool" -v secs="$WRK_SECS" -v o="$pct" -v busy="$busy" '{
        n = $0; sub(/.* requests=/, "", n); sub(/ .*/, "", n)
        printf "%s srv_cpu_s=%.3f srv_core_pct=%.1f srv_us_per_emit=%.2f tool_cpu_s=%s tool_us_per_req=%.2f others_cpu_pct=%s busy_pct=%s\n",
          $0, c1 - c0, (c1 - c0) * 100 / secs, (c1 - c0) * 1e6 / (n > 0 ? n : 1), t, t * 1e6 / (n > 0 ? n : 1), o, busy }' >>"$RESULTS"
  else
    FAILED+=("$server $label")
    say "bench: $server $label FAILED; see $log"
  fi
  stop_server
}

# metrics: the current ssehub's /metrics.
metrics() {
  exec 3<>"/dev/tcp/127.0.0.1/$PORT"
  printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
  cat <&3
  exec 3<&-
}

# ---- storage ---------------------------------------------------------------
# fsync_probe: mean µs of a 200 B append with O_DSYNC (a write + fdatasync).
fsync_probe() {
  local f=$TMP/probe n=1000 t0 t1
  t0=$(now_s)
  dd if=/dev/zero of="$f" bs=200 count=$n oflag=dsync status=none
  t1=$(now_s)
  rm -f "$f"
  awk -v a="$t0" -v b="$t1" -v n=$n 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }'
}

# recovery: fills a log, stops it, and times the next start to listening.
recovery() {
  local t0 t1 line
  ENGINE_ARGS=(--history 100)
  start_server ssehub
  say "bench: recovery: filling 10,000 sources x 100 events of 200 B"
  SSEHUB_API_KEY=$KEY python3 "$ROOT/scripts/populate.py" "http://127.0.0.1:$PORT" 10000 100 200 >>"$LOGS/populate.log" 2>&1 ||
    { FAILED+=("ssehub recovery"); say "bench: populate failed, see $LOGS/populate.log"; return; }
  local dir=$DATA
  stop_server
  : >"$LOGS/ssehub-recovery.log"
  t0=$(now_s)
  SSEHUB_API_KEY=$KEY RUST_LOG=info "$SSEHUB" serve --listen 127.0.0.1:$PORT --data-dir "$dir" --history 100 \
    >>"$LOGS/ssehub-recovery.log" 2>&1 &
  SRV_MAIN=$! SRV_PID=$!
  for _ in $(seq 3000); do port_open $PORT && break; sleep 0.01; done
  t1=$(now_s)
  line=$(grep -m1 'recovered' "$LOGS/ssehub-recovery.log" || true)
  echo "RESULT server=ssehub label=recovery start_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
    "read_s=$(sed -n 's/.* in \([0-9.]*\) s,.*/\1/p' <<<"$line")" \
    "read_bytes=$(sed -n 's/.*(\([0-9]*\) bytes.*/\1/p' <<<"$line")" \
    "mb_per_s=$(sed -n 's/.* \([0-9]*\) MB\/s.*/\1/p' <<<"$line")" \
    "data_dir_bytes=$(du -sb "$dir" | cut -f1)" >>"$RESULTS"
  stop_server
}

run_storage() {
  local probe e syncs emits
  probe=$(fsync_probe)
  echo "RESULT server=ssehub label=probe fdatasync_us=$probe" >>"$RESULTS"
  say "bench: a 200 B append + fdatasync takes $probe µs here"
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_SRV=(taskset -c 0) PIN_TOOL=(taskset -c 1)
  fi
  for e in memory never everysec always; do
    case $e in memory) ENGINE_ARGS=(--engine memory) ;; *) ENGINE_ARGS=(--engine log --fsync $e) ;; esac
    wrk_run ssehub "emit-$e"
    syncs=$(sed -n 's/^ssehub_log_syncs_total //p' "$LOGS/ssehub-emit-$e.metrics")
    sync_s=$(sed -n 's/^ssehub_log_sync_seconds_total //p' "$LOGS/ssehub-emit-$e.metrics")
    emits=$(get ssehub "emit-$e" requests)
    echo "RESULT server=ssehub label=syncs-$e syncs=${syncs:-0} syncs_per_s=$(awk -v s="${syncs:-0}" -v t=$WRK_SECS 'BEGIN { printf "%.0f", s / t }')" \
      "events_per_sync=$(awk -v s="${syncs:-0}" -v n="$emits" 'BEGIN { if (s > 0) printf "%.1f", n / s; else print "na" }')" \
      "sync_us=$(awk -v s="${syncs:-0}" -v t="${sync_s:-0}" 'BEGIN { if (s > 0) printf "%.0f", t * 1e6 / s; else print "na" }')" \
      "sync_busy=$(awk -v t="${sync_s:-0}" -v d=$WRK_SECS 'BEGIN { printf "%.2f", t / d }')" >>"$RESULTS"
  done
  PIN_SRV=() PIN_TOOL=()
  for e in memory log; do
    ENGINE_ARGS=(--engine $e)
    load ssehub "fanout-$FAN_N-rate0-$e" fanout --n "$FAN_N" --events "$EVENTS" --bytes $BYTES --rate 0 --timeout 600s
  done
  recovery
  ENGINE_ARGS=()
}

storage_table() {
  local m f e
  m=$(get ssehub emit-memory emits_per_s)
  printf '| storage, one run | value |\n|---|---:|\n'
  printf '| 200 B append + fdatasync on this disk (µs) | %s |\n' "$(get ssehub probe fdatasync_us)"
  for e in memory never everysec always; do
    printf '| emit, wrk -t2 -c64 -d%ss pinned, %s: emits/s | %s |\n' "$WRK_SECS" "$e" "$(get ssehub "emit-$e" emits_per_s)"
    [ $e = memory ] && continue
    printf '| … %s ÷ memory | %s |\n' "$e" "$(awk -v a="$(get ssehub "emit-$e" emits_per_s)" -v b="$m" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')"
    printf '| … %s: latency p99 (ms) / server CPU per emit (µs) | %s / %s |\n' "$e" "$(ms ssehub "emit-$e" lat_p99_us)" "$(get ssehub "emit-$e" srv_us_per_emit)"
    printf '| … %s: syncs/s, events per sync | %s, %s |\n' "$e" "$(get ssehub "syncs-$e" syncs_per_s)" "$(get ssehub "syncs-$e" events_per_sync)"
    printf '| … %s: mean fdatasync under this load (µs), share of the run spent syncing | %s, %s |\n' "$e" "$(get ssehub "syncs-$e" sync_us)" "$(get ssehub "syncs-$e" sync_busy)"
  done
  printf '| always: 0.8 × min(memory, 64 ÷ fdatasync latency) (emits/s) | %s |\n' \
    "$(awk -v m="$m" -v p="$(get ssehub probe fdatasync_us)" 'BEGIN { c = 64e6 / p; printf "%.0f", 0.8 * (m < c ? m : c) }')"
  for e in memory log; do
    f="fanout-$FAN_N-rate0-$e"
    printf '| fan-out %s subs max rate, %s: server CPU-s per million deliveries | %s |\n' "$FAN_N" "$e" "$(perm ssehub "$f")"
    printf '| fan-out %s subs max rate, %s: deliveries/s, lost/dup | %s, %s |\n' "$FAN_N" "$e" "$(get ssehub "$f" deliveries_per_s)" "$(lossdup ssehub "$f")"
  done
  printf '| recovery, 10,000 sources × 100 events × 200 B: start to listening (s) | %s |\n' "$(get ssehub recovery start_s)"
  printf '| … log read (s, bytes, MB/s) | %s, %s, %s |\n' "$(get ssehub recovery read_s)" "$(get ssehub recovery read_bytes)" "$(get ssehub recovery mb_per_s)"
  printf '| … data dir (bytes) | %s |\n' "$(get ssehub recovery data_dir_bytes)"
}

# ---- redis -----------------------------------------------------------------
REDIS_PID= REDIS_PORT=
start_redis() { # appendfsync
  stop_redis
  REDIS_PORT=$((PORT + 500))
  while port_open $REDIS_PORT; do REDIS_PORT=$((REDIS_PORT + 1)); done
  local dir=$TMP/redis-$REDIS_PORT
  mkdir -p "$dir"
  redis-server --port $REDIS_PORT --bind 127.0.0.1 --dir "$dir" --save '' --appendonly yes \
    --appendfsync "$1" --maxmemory-policy noeviction --daemonize no >>"$LOGS/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do port_open $REDIS_PORT && return 0; sleep 0.05; done
  say "bench: redis-server did not start (see $LOGS/redis.log)"
  exit 1
}
stop_redis() {
  [ -n "$REDIS_PID" ] || return 0
  kill -TERM "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=
}
redis_info() { redis-cli -p $REDIS_PORT INFO "$1" | tr -d '\r' | sed -n "s/^$2://p"; }

# redis_emit APPENDFSYNC LABEL: wrk's emits against a fresh Redis, with
# Redis's CPU and memory.
redis_emit() {
  local r0 r1 n
  start_redis "$1"
  ENGINE_ARGS=(--redis "redis://127.0.0.1:$REDIS_PORT")
  r0=$(cpu_s $REDIS_PID)
  wrk_run ssehub "emit-redis-$2"
  r1=$(cpu_s $REDIS_PID)
  n=$(get ssehub "emit-redis-$2" requests)
  # What the run left in Redis (MEMORY USAGE, every node of a stream): the
  # source's history (--history 100, + 1, + up to a node) and the partition
  # streams (MAXLEN ~ 10000 entries each; an entry holds one script call's events).
  echo "RESULT server=ssehub label=redis-$2 redis_cpu_s=$(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.2f", b - a }')" \
    "redis_cpu_ms_per_1000=$(awk -v a="$r0" -v b="$r1" -v n="$n" 'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / n; else print "na" }')" \
    "history_events=$(streams 'ssehub:h:*' XLEN) history_bytes=$(streams 'ssehub:h:*' MEMORY USAGE)" \
    "partition_entries=$(streams 'ssehub:p:*' XLEN) partition_bytes=$(streams 'ssehub:p:*' MEMORY USAGE)" >>"$RESULTS"
  stop_redis
}

# streams PATTERN COMMAND...: COMMAND (XLEN, MEMORY USAGE) summed over the keys.
streams() {
  local pattern=$1
  shift
  redis-cli -p $REDIS_PORT --scan --pattern "$pattern" | while read -r k; do
    if [ "$1" = MEMORY ]; then redis-cli -p $REDIS_PORT MEMORY USAGE "$k" SAMPLES 0; else redis-cli -p $REDIS_PORT "$@" "$k"; fi
  done | awk '$1 ~ /^[0-9]+$/ { s += $1 } END { print s + 0 }'
}

run_redis() {
  say "bench: $(redis-server --version | cut -d' ' -f1-3)"
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_SRV=(taskset -c 0) PIN_TOOL=(taskset -c 1)
  fi
  ENGINE_ARGS=(--engine memory)
  wrk_run ssehub emit-memory
  redis_emit everysec everysec
  redis_emit always always
  # Unpinned: the scheduler places ssehub, wrk and Redis on the two cores.
  PIN_SRV=() PIN_TOOL=()
  ENGINE_ARGS=(--engine memory)
  wrk_run ssehub emit-memory-free
  redis_emit everysec everysec-free
  ENGINE_ARGS=(--engine memory)
  load ssehub "fanout-$FAN_N-rate0-memory" fanout --n "$FAN_N" --events "$EVENTS" --bytes $BYTES --rate 0 --timeout 600s
  start_redis everysec
  ENGINE_ARGS=(--redis "redis://127.0.0.1:$REDIS_PORT")
  load ssehub "fanout-$FAN_N-rate0-redis" fanout --n "$FAN_N" --events "$EVENTS" --bytes $BYTES --rate 0 --timeout 600s
  reuse_port reuse-port "$REUSE_N" 3
  # The largest count: three processes' descriptors (20,000 each, hard limit)
  # nearly full; the held count is what they reached.
  [ -z "$REUSE_MAX" ] || reuse_port reuse-port-max "$REUSE_MAX" 4
  stop_redis
  ENGINE_ARGS=()
}

# reuse_port LABEL N WORKERS: three processes on one port (--reuse-port, one
# Redis), the load tool's WORKERS spreading N subscribers over 127.0.0.x.
reuse_port() {
  local label=$1 n=$2 workers=$3 pids=() i log=$LOGS/ssehub-$1.log
  next_port
  for i in 1 2 3; do
    SSEHUB_API_KEY=$KEY RUST_LOG=info "$SSEHUB" serve --listen 127.0.0.1:$PORT --source load --reuse-port \
      --data-dir "$TMP/data-reuse-$i" --redis "redis://127.0.0.1:$REDIS_PORT" >>"$LOGS/ssehub.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 100); do port_open $PORT && break; sleep 0.1; done
  sleep 0.5
  say "bench: ssehub reuse-port x3, $n subscribers"
  if ! SSEHUB_API_KEY=$KEY timeout --foreground -k 5 600 "$LOAD" fanout --n "$n" --events 20 --bytes $BYTES --rate 10 \
    --workers "$workers" --timeout 300s --target ssehub --url "http://127.0.0.1:$PORT" --pid "${pids[0]}" >"$log" 2>&1; then
    FAILED+=("ssehub $label")
    tail -5 "$log" >&2
  fi
  sed -n "s/^RESULT \(.*\)/RESULT server=ssehub label=$label \1/p" "$log" >>"$RESULTS"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}

# run_redis_ab: AB_BIN and this build with redis, and memory, alternating.
run_redis_ab() {
  local i this=$SSEHUB
  [ -x "$AB_BIN" ] || { say "bench: --redis-ab: $AB_BIN is not an executable"; exit 2; }
  PIN_SRV=(taskset -c 0) PIN_TOOL=(taskset -c 1)
  for i in 1 2 3; do
    SSEHUB=$AB_BIN
    redis_emit everysec "other-$i"
    SSEHUB=$this
    redis_emit everysec "this-$i"
    ENGINE_ARGS=(--engine memory)
    wrk_run ssehub "emit-memory-$i"
  done
  PIN_SRV=() PIN_TOOL=()
  ENGINE_ARGS=()
}

redis_ab_table() {
  local k label
  # three LABEL KEY: the three rounds' values, joined.
  three() { echo "$(get ssehub "$1-1" "$2") / $(get ssehub "$1-2" "$2") / $(get ssehub "$1-3" "$2")"; }
  printf '| pinned, one run, 3 rounds | %s | this build | memory |\n|---|---:|---:|---:|\n' "$(basename "$AB_BIN")"
  printf '| emits/s | %s | %s | %s |\n' "$(three emit-redis-other emits_per_s)" "$(three emit-redis-this emits_per_s)" "$(three emit-memory emits_per_s)"
  printf '| ssehub CPU per emit (µs) | %s | %s | %s |\n' "$(three emit-redis-other srv_us_per_emit)" "$(three emit-redis-this srv_us_per_emit)" "$(three emit-memory srv_us_per_emit)"
  printf '| Redis CPU per event (µs) | %s | %s | |\n' "$(three redis-other redis_cpu_ms_per_1000)" "$(three redis-this redis_cpu_ms_per_1000)"
}

redis_table() {
  local m e
  m=$(get ssehub emit-memory emits_per_s)
  printf '| redis, one run | value |\n|---|---:|\n'
  printf '| emit, wrk -t2 -c64 -d%ss, memory: emits/s | %s |\n' "$WRK_SECS" "$m"
  for e in everysec always; do
    printf '| … redis, appendfsync %s: emits/s (÷ memory) | %s (%s) |\n' "$e" "$(get ssehub "emit-redis-$e" emits_per_s)" \
      "$(awk -v a="$(get ssehub "emit-redis-$e" emits_per_s)" -v b="$m" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')"
    printf '| … %s: latency p99 (ms) / ssehub CPU per emit (µs) / Redis CPU per 1,000 events (ms) | %s / %s / %s |\n' "$e" \
      "$(ms ssehub "emit-redis-$e" lat_p99_us)" "$(get ssehub "emit-redis-$e" srv_us_per_emit)" "$(get ssehub "redis-$e" redis_cpu_ms_per_1000)"
    printf '| … %s: Redis memory per retained history event (B; %s retained); partition streams (KiB, %s entries) | %s; %s |\n' "$e" \
      "$(get ssehub "redis-$e" history_events)" "$(get ssehub "redis-$e" partition_entries)" \
      "$(awk -v b="$(get ssehub "redis-$e" history_bytes)" -v n="$(get ssehub "redis-$e" history_events)" 'BEGIN { if (n > 0) printf "%.0f", b / n; else print "n/a" }')" \
      "$(awk -v b="$(get ssehub "redis-$e" partition_bytes)" 'BEGIN { printf "%.0f", b / 1024 }')"
  done
  m=$(get ssehub emit-memory-free emits_per_s)
  printf '| unpinned (ssehub, wrk and Redis placed by the scheduler): memory emits/s | %s |\n' "$m"
  printf '| … redis, appendfsync everysec: emits/s (÷ memory) | %s (%s) |\n' "$(get ssehub emit-redis-everysec-free emits_per_s)" \
    "$(awk -v a="$(get ssehub emit-redis-everysec-free emits_per_s)" -v b="$m" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')"
  printf '| … CPU per emit (µs): ssehub / Redis / wrk; the machine busy (%% of 2 cores) | %s / %s / %s; %s |\n' \
    "$(get ssehub emit-redis-everysec-free srv_us_per_emit)" "$(get ssehub redis-everysec-free redis_cpu_ms_per_1000)" \
    "$(get ssehub emit-redis-everysec-free tool_us_per_req)" "$(get ssehub emit-redis-everysec-free busy_pct)"
  for e in memory redis; do
    printf '| fan-out %s subs max rate, %s: deliveries/s, CPU-s per million, lost/dup | %s, %s, %s |\n' "$FAN_N" "$e" \
      "$(get ssehub "fanout-$FAN_N-rate0-$e" deliveries_per_s)" "$(perm ssehub "fanout-$FAN_N-rate0-$e")" "$(lossdup ssehub "fanout-$FAN_N-rate0-$e")"
  done
  printf '| 3 × --reuse-port, one Redis: subscribers held of %s, deliveries, lost/dup | %s, %s, %s |\n' "$REUSE_N" \
    "$(get ssehub reuse-port held)" "$(get ssehub reuse-port deliveries)" "$(lossdup ssehub reuse-port)"
  printf '| … delivery p99 (ms) | %s |\n' "$(ms ssehub reuse-port lat_p99_us)"
  [ -z "$REUSE_MAX" ] || printf '| … the largest count: subscribers held of %s (the rest refused at a descriptor limit), delivery p99 (ms), lost/dup | %s, %s, %s |\n' \
    "$REUSE_MAX" "$(get ssehub reuse-port-max held)" "$(ms ssehub reuse-port-max lat_p99_us)" "$(lossdup ssehub reuse-port-max)"
}

run_server() {
  local s=$1 n
  load "$s" ladder ladder --steps "$LADDER" --hold "$HOLD"
  for n in $CURVE; do
    # Every event may be outstanding, so a server that falls behind the
    # schedule shows it as completion time, not as a lower emit rate.
    load "$s" "fanout-$n-rate$RATE" fanout --n "$n" --events "$EVENTS" --bytes $BYTES --rate $RATE \
      --window "$EVENTS" --timeout 600s
  done
  load "$s" "fanout-$FAN_N-rate0" fanout --n "$FAN_N" --events "$EVENTS" --bytes $BYTES --rate 0 --timeout 600s
  wrk_emit "$s"
  load "$s" handshake handshake --n "$HS_N" --secs "$HS_SECS"
}

# ---- report ----------------------------------------------------------------
# get SERVER LABEL KEY [SCENARIO]: a value from results.txt, or n/a.
get() {
  awk -v srv="$1" -v label="$2" -v key="$3" -v sc="${4:-}" '
    $1 != "RESULT" { next }
    {
      delete f
      for (i = 2; i <= NF; i++) { eq = index($i, "="); f[substr($i, 1, eq - 1)] = substr($i, eq + 1) }
    }
    f["server"] == srv && f["label"] == label && (sc == "" || f["scenario"] == sc) && (key in f) { v = f[key] }
    END { print (v == "" || v == "na" ? "n/a" : v) }' "$RESULTS"
}

# fmt SCALE DECIMALS VALUE: VALUE / SCALE, or n/a as is.
fmt() { case $3 in n/a) echo n/a ;; *) awk -v s="$1" -v d="$2" -v v="$3" 'BEGIN { printf "%.*f", d, v / s }' ;; esac; }

# Cell helpers for the table: each takes the server first.
v() { get "$1" "$2" "$3" "${4:-}"; }
lossdup() { echo "$(get "$1" "$2" loss)/$(get "$1" "$2" dup)"; }
perm() { fmt 1 2 "$(get "$1" "$2" srv_cpu_s_per_m)"; }
ms() { fmt 1000 1 "$(get "$1" "$2" "$3")"; }
both_cpu() { echo "$(get "$1" "$2" srv_cpu_s) / $(get "$1" "$2" tool_cpu_s)"; }
top_rss() { fmt 1024 1 "$(get "$1" ladder rss_after_kb ladder)"; }
top_per_sub() { get "$1" ladder rss_per_sub_b ladder; }
emit_cpu() { echo "$(get "$1" emit srv_core_pct) / $(get "$1" emit tool_cpu_s)"; }
# The mean and max of others_cpu_pct over a server's runs (one per label).
others_cpu() {
  awk -v srv="$1" '$1 == "RESULT" && index($0, " server=" srv " ") {
      split($0, a, " label="); split(a[2], b, " "); o = $0; sub(/.* others_cpu_pct=/, "", o); sub(/ .*/, "", o)
      seen[b[1]] = o
    }
    END { for (l in seen) { v = seen[l] + 0; n++; sum += v; if (v > max) max = v }
      if (n) printf "%.0f / %.0f", sum / n, max; else print "n/a" }' "$RESULTS"
}
hs_us() { if [ "$1" = nchan ]; then echo n/a; else
  awk -v c="$(get "$1" handshake srv_cpu_s)" -v n="$(get "$1" handshake handshakes)" 'BEGIN { if (n > 0) printf "%.1f", c * 1e6 / n; else print "n/a" }'; fi; }
hs() { if [ "$1" = nchan ]; then echo "$3"; else get "$1" handshake "$2"; fi; }

# row LABEL CMD ARGS...: one line of the table, CMD SERVER ARGS... per cell.
row() {
  local label=$1 cells="" s
  shift
  for s in $SERVERS; do cells+=" $("$1" "$s" "${@:2}") |"; done
  printf '| %s |%s\n' "$label" "$cells"
}

table() {
  local top=${LADDER##*,} fix="fanout-$FAN_N-rate$RATE" max="fanout-$FAN_N-rate0" n
  printf '| | %s |\n' "${SERVERS// / | }"
  printf '|---|%s\n' "$(for _ in $SERVERS; do printf -- '---:|'; done)"
  row "idle: subscribers held at the top step ($top asked)" v ladder held_end ladder
  row "idle: server RSS at the top step (MiB)" top_rss
  row "idle: server RSS per subscriber, fitted slope (B)" v ladder rss_slope_b ladder-fit
  row "idle: server RSS per subscriber at the top step (B)" top_per_sub
  row "idle: kernel memory per connection, both ends, fitted (B)" v ladder kernel_slope_b ladder-fit
  for n in $CURVE; do
    row "fan-out $n subs @ $RATE/s: completion p99 (ms)" ms "fanout-$n-rate$RATE" done_p99_us
  done
  row "fan-out $FAN_N @ $RATE/s: emit rate achieved (/s)" v "$fix" emit_rate
  row "fan-out $FAN_N @ $RATE/s: server CPU-s per million deliveries" perm "$fix"
  row "fan-out $FAN_N @ $RATE/s: delivery latency p99 (ms)" ms "$fix" lat_p99_us
  row "fan-out $FAN_N @ $RATE/s: lost / duplicated" lossdup "$fix"
  row "fan-out $FAN_N @ $RATE/s: server / load-tool CPU (s)" both_cpu "$fix"
  row "fan-out $FAN_N @ $RATE/s: others' CPU meanwhile (% of all cores)" v "$fix" others_cpu_pct
  row "fan-out $FAN_N max rate: server CPU-s per million deliveries" perm "$max"
  row "fan-out $FAN_N max rate: deliveries/s" v "$max" deliveries_per_s
  row "fan-out $FAN_N max rate: emits/s achieved" v "$max" emit_rate
  row "fan-out $FAN_N max rate: completion p99 (ms)" ms "$max" done_p99_us
  row "fan-out $FAN_N max rate: lost / duplicated" lossdup "$max"
  row "fan-out $FAN_N max rate: server / load-tool CPU (s)" both_cpu "$max"
  row "fan-out $FAN_N max rate: others' CPU meanwhile (% of all cores)" v "$max" others_cpu_pct
  row "emit, wrk -t2 -c64 -d${WRK_SECS}s, no subscriber, server on core 0, wrk on core 1: emits/s" v emit emits_per_s
  row "emit: wrk's ceiling, GET /healthz pinned the same (requests/s)" v ceiling req_per_s
  row "emit: latency p99 (ms)" ms emit lat_p99_us
  row "emit: wrk's ceiling, latency p99 (ms)" ms ceiling lat_p99_us
  row "emit: non-2xx / errors" v emit non_2xx
  row "emit: server CPU (% of one core) / wrk CPU (s)" emit_cpu
  row "emit: server CPU per emit (µs)" v emit srv_us_per_emit
  row "emit: wrk CPU per emit (µs)" v emit tool_us_per_req
  row "emit: others' CPU meanwhile (% of all cores)" v emit others_cpu_pct
  row "handshake: idle subscribers held for ${HS_SECS}" v handshake held_end
  row "handshake: server CPU (% of one core)" v handshake srv_core_pct
  row "handshake: server CPU per handshake (µs)" hs_us
  row "handshake: periodic handshakes received" hs handshakes "none (no keep-alive)"
  row "handshake: busiest 100 ms window (% of them)" hs peak_share_pct n/a
  row "handshake: load-tool CPU (s)" v handshake tool_cpu_s
  row "handshake: others' CPU meanwhile (% of all cores)" v handshake others_cpu_pct
  row "machine: other processes' CPU during the runs, mean / max (% of all cores)" others_cpu
}

chart() {
  local s plots_rss=() plots_p99=() n
  for s in $SERVERS; do
    # (subscribers, MiB): the fresh server, then each ladder step.
    awk -v srv="$s" '$1 == "RESULT" {
        delete f
        for (i = 2; i <= NF; i++) { eq = index($i, "="); f[substr($i, 1, eq - 1)] = substr($i, eq + 1) }
        if (f["server"] != srv || f["scenario"] != "ladder") next
        if (!started) { print 0, f["rss_before_kb"] / 1024; started = 1 }
        print f["held"], f["rss_after_kb"] / 1024
      }' "$RESULTS" >"$OUT/rss-$s.dat"
    : >"$OUT/p99-$s.dat"
    for n in $CURVE; do
      local p
      p=$(get "$s" "fanout-$n-rate$RATE" done_p99_us)
      [ "$p" = n/a ] || echo "$n $(fmt 1000 2 "$p")" >>"$OUT/p99-$s.dat"
    done
    plots_rss+=("'$OUT/rss-$s.dat' using 1:2 with linespoints title '$s'")
    plots_p99+=("'$OUT/p99-$s.dat' using 1:2 with linespoints title '$s'")
  done
  local IFS=,
  gnuplot <<EOF
set terminal pngcairo size 1200,480 font 'DejaVu Sans,10'
set output '$OUT/chart.png'
set multiplot layout 1,2 title "ssehub vs nchan: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
set grid
set key left top
set xlabel 'subscribers'
set format x '%.0f'
set title 'Server RSS with idle subscribers'
set ylabel 'RSS (MiB)'
set yrange [0:*]
plot ${plots_rss[*]}
set title "Completion p99: emit to the last subscriber ($EVENTS x $BYTES B events at $RATE/s)"
set ylabel 'p99 (ms)'
set logscale y
set yrange [*:*]
plot ${plots_p99[*]}
unset multiplot
EOF
}

# run_drain: the load tool's drain scenario (it starts the nodes itself).
run_drain() {
  local n=19000 log=$LOGS/drain.log
  [ $QUICK = 0 ] || n=2000
  next_port
  say "bench: drain: $n subscribers on one node, stopped with --drain 10s, then its sibling with --drain 0s"
  if ! SSEHUB_API_KEY=$KEY timeout --foreground -k 5 600 "$LOAD" drain --n "$n" --drains 10s,0s --workers 2 \
    --server "$SSEHUB" --url "http://127.0.0.1:$PORT" --timeout 60s >"$log" 2>&1; then
    FAILED+=("ssehub drain")
    tail -5 "$log" >&2
  fi
  # One RESULT line per stop, labelled by its drain: drain-10.00, drain-0.00.
  awk '$1 == "RESULT" && / drain_s=/ { d = $0; sub(/.* drain_s=/, "", d); sub(/ .*/, "", d)
      sub(/^RESULT /, "RESULT server=ssehub label=drain-" d " "); print }' "$log" >>"$RESULTS"
}

drain_table() {
  local d
  printf '| one run | --drain 10s | --drain 0s |\n|---|---:|---:|\n'
  for d in streams:"streams on the stopped node" ended:"streams it ended" exit_ms:"SIGTERM -> it exited (ms)" \
    back:"reconnected to the sibling" retries:"reconnects retried" span_ms:"SIGTERM -> last reconnect up (ms)" \
    rc_max:"reconnects per 100 ms: max" rc_p99:"reconnects per 100 ms: p99" rc_mean:"reconnects per 100 ms: mean" \
    rc_max_pct:"largest 100 ms window (% of the streams)" up_max:"handshakes per 100 ms: max" \
    due_max:"reconnects due per 100 ms: max" due_p99:"reconnects due per 100 ms: p99" \
    late_max_ms:"load tool: most a reconnect began late (ms)"; do
    printf '| %s | %s | %s |\n' "${d#*:}" "$(get ssehub drain-10.00 "${d%%:*}")" "$(get ssehub drain-0.00 "${d%%:*}")"
  done
}

# ---- main ------------------------------------------------------------------
install_missing
build
ulimit -n "$(ulimit -Hn)"
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log "$OUT"/*.dat
KEY=bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
{
  echo "# scripts/bench.sh$([ $QUICK = 1 ] && echo ' --quick') $(date -u +%FT%TZ) ssehub $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo +changes)"
  echo "# $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -r), RLIMIT_NOFILE $(ulimit -Hn)"
  echo "# $(nginx -v 2>&1), nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "# load at start:$(uptime | sed 's/.*load average: / /')"
} >"$RESULTS"
say "bench: $(sed -n 4p "$RESULTS" | cut -c3-)"
# ssehub_only NAME: --storage and --redis, ssehub alone; run_NAME, then NAME_table.
ssehub_only() {
  SERVERS=ssehub
  "run_$1"
  echo "# load at end:$(uptime | sed 's/.*load average: / /')" >>"$RESULTS"
  "$1_table" | tee "$OUT/$1.md"
  say "bench: raw results in $RESULTS, logs in $LOGS"
  [ ${#FAILED[@]} -eq 0 ] || { say "bench: FAILED: ${FAILED[*]}"; exit 1; }
  exit 0
}
case $STORAGE in
  tls | tls_surge)
    # shellcheck source=scripts/bench-tls.sh
    . "$ROOT/scripts/bench-tls.sh"
    "run_$STORAGE"
    echo "# load at end:$(uptime | sed 's/.*load average: / /')" >>"$RESULTS"
    "${STORAGE}_table" | tee "$OUT/$STORAGE.md"
    say "bench: raw results in $RESULTS, logs in $LOGS"
    [ ${#FAILED[@]} -eq 0 ] || { say "bench: FAILED: ${FAILED[*]}"; exit 1; }
    exit 0
    ;;
  drain) ssehub_only drain ;;
  fairness)
    . "$ROOT/scripts/bench-fairness.sh"
    ssehub_only fairness
    ;;
  million)
    # shellcheck source=scripts/bench-million.sh
    . "$ROOT/scripts/bench-million.sh"
    million_in_netns "${BENCH_ARGS[@]}"
    ssehub_only million
    ;;
  failover)
    # shellcheck source=scripts/bench-failover.sh
    . "$ROOT/scripts/bench-failover.sh"
    ssehub_only failover
    ;;
  redis) ssehub_only redis ;;
  redis_ab) ssehub_only redis_ab ;;
  1) ssehub_only storage ;;
esac
for s in $SERVERS; do run_server "$s"; done
echo "# load at end:$(uptime | sed 's/.*load average: / /')" >>"$RESULTS"

table | tee "$OUT/table.md"
chart
if [ $QUICK = 0 ] && [ "$SERVERS" = "ssehub nchan" ]; then
  mkdir -p "$ROOT/docs"
  cp "$OUT/chart.png" "$ROOT/docs/bench.png"
fi
say "bench: raw results in $RESULTS, chart in $OUT/chart.png, logs in $LOGS"
if [ ${#FAILED[@]} -gt 0 ]; then
  say "bench: FAILED: ${FAILED[*]}"
  exit 1
fi
