#!/usr/bin/env bash
# Soak: MINUTES (default 10) of churn against a fresh release server on
# loopback. Subscribers connect at a steady rate, each reads a few events and
# leaves, with emits throughout (`cargo bench --bench load -- churn`). The
# server's RSS (VmRSS) and open descriptors are printed every 10 s. The run
# passes (exit 0) only when all three hold:
#   RSS flat: the largest sample of the last third of the churn is at most the
#     largest of the middle third + 10 % + 256 KiB (the first third is
#     warm-up: allocator arenas, the history ring and the slab reach their size);
#   descriptors flat: within 5 s of the churn ending, back to the count before
#     it, +-2;
#   the churn clean: no connect refused or cut short, no event skipped or
#     repeated, none left waiting (the load tool's own exit status).
# Otherwise it exits 1 (2 for bad usage). Every step is bounded in time.
# Environment: PORT (18961), RATE connects/s (500), EMIT_RATE events/s (50),
# READS events per subscriber (3), SSEHUB_BIN (another server build to soak).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-10}
if ! [[ $minutes =~ ^[0-9]+$ ]] || ((minutes < 1)); then
  echo "usage: scripts/soak.sh [MINUTES>=1]" >&2
  exit 2
fi
port=${PORT:-18961} rate=${RATE:-500} emit_rate=${EMIT_RATE:-50} reads=${READS:-3}
secs=$((minutes * 60))

cargo build --release --quiet
load=$(cargo bench --bench load --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[[ -x $load ]] || { echo "soak: cannot find the load tool's executable" >&2; exit 1; }
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "soak: port $port is in use; set PORT" >&2
  exit 2
fi

tmp=$(mktemp -d)
srv='' churn=''
cleanup() {
  [[ -n $churn ]] && kill "$churn" 2>/dev/null
  [[ -n $srv ]] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

ulimit -n "$(ulimit -Hn)"
${SSEHUB_BIN:-target/release/ssehub} serve --listen "127.0.0.1:$port" --api-key soak >"$tmp/server.log" 2>&1 &
srv=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$srv/status"; }
fds() { ls "/proc/$srv/fd" | wc -l; }
alive() { kill -0 "$srv" 2>/dev/null || { echo "soak: the server died; its log:" >&2; tail -20 "$tmp/server.log" >&2; exit 1; }; }

echo "soak: $minutes min, $rate connects/s reading $reads events each, $emit_rate emits/s; server pid $srv on 127.0.0.1:$port"
echo "soak: $(uptime)"
base_fds=$(fds)
printf '%8s %10s %6s\n' 't (s)' 'RSS (KiB)' 'fds'
printf '%8s %10s %6s  before churn\n' 0 "$(rss_kib)" "$base_fds"

timeout $((secs + 120)) "$load" churn --secs "$secs" --rate "$rate" --reads "$reads" --emit-rate "$emit_rate" \
  --url "http://127.0.0.1:$port" --key soak --pid "$srv" --timeout 30s >"$tmp/churn.out" 2>&1 &
churn=$!

rss=() fd=()
t0=$EPOCHREALTIME
for ((k = 1; k <= secs / 10; k++)); do
  sleep "$(awk -v t0="$t0" -v now="$EPOCHREALTIME" -v t=$((10 * k)) 'BEGIN { d = t0 + t - now; print (d > 0 ? d : 0) }')"
  alive
  kill -0 "$churn" 2>/dev/null || break # it failed early: its table says why
  rss+=("$(rss_kib)") fd+=("$(fds)")
  printf '%8s %10s %6s\n' $((10 * k)) "${rss[-1]}" "${fd[-1]}"
done

churn_ok=1
wait "$churn" || churn_ok=0
churn=''
alive
after_fds=$(fds)
for _ in $(seq 10); do
  ((after_fds >= base_fds - 2 && after_fds <= base_fds + 2)) && break
  sleep 0.5
  after_fds=$(fds)
done
printf '%8s %10s %6s  after churn\n' end "$(rss_kib)" "$after_fds"
sed -n '/^$/,$p' "$tmp/churn.out"
echo

n=${#rss[@]} third=$((${#rss[@]} / 3))
max() { printf '%s\n' "$@" | sort -n | tail -1; }
mid_max=$(max "${rss[@]:third:third}")
last_max=$(max "${rss[@]:2*third}")
limit=$((mid_max + mid_max / 10 + 256))
warns=$(grep -c ' WARN ' "$tmp/server.log" || true)
pass=1
if ((last_max <= limit)); then verdict=flat; else verdict='GROWING'; pass=0; fi
echo "RSS: max of the middle third ${mid_max} KiB, of the last third ${last_max} KiB, limit ${limit} KiB: $verdict"
if ((after_fds >= base_fds - 2 && after_fds <= base_fds + 2)); then verdict='back to it'; else verdict='LEAKED'; pass=0; fi
echo "fds: ${base_fds} before churn, at most $(max "${fd[@]}") during, ${after_fds} after: $verdict"
if ((churn_ok)); then verdict=clean; else verdict='FAILED (see the table above)'; pass=0; fi
echo "churn: $verdict; server log: ${warns} warnings over $n samples"
echo "soak: $(uptime)"
if ((pass)); then echo PASS; else echo FAIL; exit 1; fi
