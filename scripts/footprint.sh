#!/usr/bin/env bash
# The binary's numbers in docs/benchmarks.md: stripped size of the release
# binary, idle RSS with no connections, and start-up time to accepting
# connections (median of 20 starts, measured by connecting in a loop).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/ssehub
port=${PORT:-18931}

size=$(stat -c %s "$bin")
echo "binary: $bin  $size bytes ($((size / 1024)) KiB), stripped: $(file -b "$bin" | grep -o 'stripped' || echo no)"

"$bin" serve --listen "127.0.0.1:$port" --api-key footprint 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 1
grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/$pid/status" | tr -s ' \t' ' ' | sed 's/^/idle: /'
kill -TERM $pid; wait $pid || true
trap - EXIT

python3 - "$bin" "$port" <<'PY'
import socket, statistics, subprocess, sys, time
bin, port = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(20):
    start = time.perf_counter()
    p = subprocess.Popen([bin, "serve", "--listen", f"127.0.0.1:{port}", "--api-key", "footprint"],
                         stderr=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.perf_counter() - start > 5:
                sys.exit("server did not start within 5 s")
            time.sleep(0.0002)
    times.append((time.perf_counter() - start) * 1000)
    p.terminate()
    p.wait()
print(f"start-up to accepting: median {statistics.median(times):.2f} ms, max {max(times):.2f} ms over {len(times)} starts "
      "(spawn included)")
PY
