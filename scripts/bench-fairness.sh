# scripts/bench.sh --fairness (sourced by it; uses its helpers): does one
# account's load push another account's emit -> delivery latency up?
#
# Two accounts from a --keys-file: A (sources=200000) and B. B's probe is
# the load tool's fanout scenario: one subscriber, events of 100 B emitted
# at 10/s ($FAIR_EVENTS of them, default 200: 20 s); it reports each
# event's emit -> delivery latency (p50, p99, max). Each case is a fresh
# server (log engine, --fsync everysec). The server and B's probe run on
# core 0 at nice -10, A's load on core 1 at nice 0: what B measures is then
# the server's delay, not the probe's processes waiting behind A's tools
# for a core (with the probe on A's core, wrk reading pages of sources
# alone put B's p50 at 6 ms against 0.2 ms on the server's core, with the
# server 88 % idle), nor the server behind whatever else the machine runs
# (as root; otherwise nice leaves the priority as it is, and says so).
#   base     B alone
#   flood    A holds 5,000 streams (the load tool's idle scenario, on a
#            source of its own that is not emitted to) and floods the node
#            with emits: wrk -t2 -c64, as fast as it can (100 B, source a)
#   list     A has 100,000 sources (scripts/populate.py) and lists them in
#            a loop: wrk -t1 -c4 scripts/wrk/list.lua, 1,000 a page
#   compact  A has 100,000 sources with a live subscribe token each, and
#            emits 256 KiB events at 50/s (13 MB/s), so that the log
#            compacts every few seconds (the count is reported)
# Then emits/s without any limit and with every limit set but not reached
# (--emit-rate, --account-emit-rate, --max-streams-per-account), wrk -t2
# -c64 pinned as the emit scenario, alternating, three times each.
#
# BENCH_SSEHUB_OTHER=PATH also runs every case with another ssehub binary
# (an older build, say), labelled base-other, flood-other, ….
# FAIR_CASES="list" (say) runs only those cases ("none": the emits/s
# rounds alone), FAIR_EMITS=0 leaves out
# the emits/s rounds, and FAIR_EVENTS_QUICK sets B's events with --quick
# (default 50): for iterating on one case.

FAIR_EVENTS=${FAIR_EVENTS:-200}
[ $QUICK = 0 ] || FAIR_EVENTS=${FAIR_EVENTS_QUICK:-50}
FAIR_CASES=${FAIR_CASES:-base flood list compact}
FAIR_EMITS=${FAIR_EMITS:-1}
FAIR_SOURCES=100000
[ $QUICK = 0 ] || FAIR_SOURCES=10000
FAIR_STREAMS=5000
[ $QUICK = 0 ] || FAIR_STREAMS=500
BG=()      # A's load: the processes this script started, stopped after the probe
BG_WAIT=() # … and those that stop by themselves (wrk, to print its summary)
PRIO=(nice -n -10)

stop_bg() {
  local p
  for p in "${BG[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${BG[@]}" "${BG_WAIT[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  BG=() BG_WAIT=()
}

# metric NAME: its value on the current server (0 if absent).
metric() { metrics | awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }'; }

# probe LABEL: B's events at 10/s, one subscriber; appends its RESULT line.
probe() {
  local label=$1 log=$LOGS/fair-$1.log c0 c1
  c0=$(metric ssehub_log_compactions_total)
  say "bench: fairness $label: B emits $FAIR_EVENTS events at 10/s to one subscriber"
  if ! SSEHUB_API_KEY=$KB timeout --foreground -k 5 300 "${PIN_SRV[@]}" "$LOAD" fanout --n 1 --events "$FAIR_EVENTS" \
    --rate 10 --bytes 100 --source b --timeout 60s --url "http://127.0.0.1:$PORT" --pid "$SRV_PID" >"$log" 2>&1; then
    FAILED+=("fairness $label")
    say "bench: fairness $label FAILED; the end of $log:"
    tail -5 "$log" >&2
  fi
  c1=$(metric ssehub_log_compactions_total)
  sed -n "s/^RESULT \(.*\)/RESULT server=ssehub label=fair-$label \1 compactions=$((c1 - c0)) load=$(cut -d' ' -f1 /proc/loadavg)/p" \
    "$log" >>"$RESULTS"
}

# a_tool LOG CMD...: one of A's load tools, in the background, on core 1.
a_tool() {
  local log=$1
  shift
  SSEHUB_API_KEY=$KA "${PIN_TOOL[@]}" "$@" >"$log" 2>&1 &
  case $1 in wrk) BG_WAIT+=($!) ;; *) BG+=($!) ;; esac
}

populate_a() { # SOURCES TOKENS
  say "bench: fairness: A makes $1 sources with $2 token(s) each"
  SSEHUB_API_KEY=$KA python3 "$ROOT/scripts/populate.py" "http://127.0.0.1:$PORT" "$1" 0 0 "$2" >>"$LOGS/fair-populate.log" 2>&1 ||
    { FAILED+=("fairness populate"); say "bench: populate failed, see $LOGS/fair-populate.log"; }
}

fair_case() {
  local label=$1 secs=$((FAIR_EVENTS / 10 + 3)) n
  start_server ssehub
  case $label in
    flood*)
      a_tool "$LOGS/fair-$label-streams.log" "$LOAD" idle --n "$FAIR_STREAMS" --hold 900s --source held \
        --url "http://127.0.0.1:$PORT"
      for _ in $(seq 600); do
        n=$(metric ssehub_subscribers)
        [ "$n" -ge "$FAIR_STREAMS" ] && break
        sleep 0.1
      done
      say "bench: fairness flood: A holds $n streams"
      curl -s -o /dev/null -H "Authorization: Bearer $KA" -d '{"name":"a"}' "http://127.0.0.1:$PORT/v1/sources"
      a_tool "$LOGS/fair-$label-wrk.log" wrk -t2 -c64 -d${secs}s -s "$ROOT/scripts/wrk/emit.lua" "http://127.0.0.1:$PORT" -- a 100
      ;;
    list*)
      populate_a $FAIR_SOURCES 0
      a_tool "$LOGS/fair-$label-wrk.log" wrk -t1 -c4 -d${secs}s -s "$ROOT/scripts/wrk/list.lua" "http://127.0.0.1:$PORT"
      ;;
    compact*)
      populate_a $FAIR_SOURCES 1
      a_tool "$LOGS/fair-$label-emits.log" "$LOAD" fanout --n 1 --events $((secs * 50)) --rate 50 --bytes 262144 \
        --source r0 --window 100 --timeout 60s --url "http://127.0.0.1:$PORT"
      ;;
  esac
  sleep 1
  probe "$label"
  [ "${label%-other}" = base ] || echo "RESULT server=ssehub label=fair-$label-a streams=$(metric ssehub_subscribers)" \
    "emitted=$(metric ssehub_events_emitted_total) rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$SRV_PID/status")" >>"$RESULTS"
  stop_bg
  metrics >"$LOGS/fair-$label.metrics"
  stop_server
  for f in "$LOGS"/fair-"$label"-*.log; do
    [ -e "$f" ] && sed -n "s/^RESULT \(.*\)/RESULT server=ssehub label=fair-$label-tool \1/p" "$f" >>"$RESULTS"
  done
  return 0
}

run_fairness() {
  local keys=$TMP/keys r bin=$SSEHUB
  KA=ka-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  KB=kb-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  printf '%s a sources=200000\n%s b\n' "$KA" "$KB" >"$keys"
  chmod 600 "$keys"
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_SRV=(taskset -c 0 "${PRIO[@]}") PIN_TOOL=(taskset -c 1)
  fi
  ENGINE_ARGS=(--keys-file "$keys")
  for c in $FAIR_CASES; do [ "$c" = none ] || fair_case $c; done
  if [ -n "${BENCH_SSEHUB_OTHER:-}" ]; then
    SSEHUB=$BENCH_SSEHUB_OTHER
    for c in $FAIR_CASES; do [ "$c" = none ] || fair_case $c-other; done
    SSEHUB=$bin
  fi
  PIN_SRV=() PIN_TOOL=()
  [ "$FAIR_EMITS" = 0 ] && return 0
  # Alternating, and the order turned each round (A B, B A, A B): the
  # machine's rate drifts over a run (one run fell from 150,835 to
  # 114,046 emits/s over its six), which a fixed order charges to the
  # second of each pair.
  local limits=(--emit-rate 1000000 --account-emit-rate 1000000 --max-streams-per-account 1000000)
  for r in 1 2 3; do
    if [ $((r % 2)) = 1 ]; then
      ENGINE_ARGS=() && wrk_emit_pinned "emit-nolimits-$r"
      ENGINE_ARGS=("${limits[@]}") && wrk_emit_pinned "emit-limits-$r"
    else
      ENGINE_ARGS=("${limits[@]}") && wrk_emit_pinned "emit-limits-$r"
      ENGINE_ARGS=() && wrk_emit_pinned "emit-nolimits-$r"
    fi
  done
  ENGINE_ARGS=()
}

# wrk_emit_pinned LABEL: as the emit scenario (server on core 0, wrk on
# core 1), both at nice -10.
wrk_emit_pinned() {
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_SRV=(taskset -c 0 "${PRIO[@]}") PIN_TOOL=(taskset -c 1 "${PRIO[@]}")
  fi
  wrk_run ssehub "$1"
  PIN_SRV=() PIN_TOOL=()
}

fairness_table() {
  local c a b l
  printf '| one run, B: 10 events/s, one subscriber | B emit -> delivery p50 / p99 / max (ms) | A meanwhile | compactions during the probe | load average |\n|---|---:|---|---:|---:|\n'
  for c in base flood list compact base-other flood-other list-other compact-other; do
    [ "$(get ssehub "fair-$c" lat_p99_us)" = n/a ] && continue
    case $c in
      base*) a="nothing" ;;
      flood*) a="$(get ssehub "fair-$c-a" streams) streams held; wrk -c64 emits: $(get ssehub "fair-$c-tool" emits_per_s)/s" ;;
      list*) a="lists $FAIR_SOURCES sources: $(get ssehub "fair-$c-tool" pages_per_s) pages of 1,000/s" ;;
      compact*) a="$FAIR_SOURCES sources, $FAIR_SOURCES live tokens, 256 KiB emits at 50/s" ;;
    esac
    printf '| %s | %s / %s / %s | %s | %s | %s |\n' "$c" "$(ms ssehub "fair-$c" lat_p50_us)" "$(ms ssehub "fair-$c" lat_p99_us)" \
      "$(ms ssehub "fair-$c" lat_max_us)" "$a" "$(get ssehub "fair-$c" compactions)" "$(get ssehub "fair-$c" load)"
  done
  printf '\n| emit, wrk -t2 -c64 -d%ss pinned | no limit (emits/s) | limits set, not reached (emits/s) | ratio |\n|---|---:|---:|---:|\n' "$WRK_SECS"
  for r in 1 2 3; do
    b=$(get ssehub "emit-nolimits-$r" emits_per_s) l=$(get ssehub "emit-limits-$r" emits_per_s)
    printf '| round %s | %s | %s | %s |\n' "$r" "$b" "$l" "$(awk -v a="$l" -v b="$b" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')"
  done
}
