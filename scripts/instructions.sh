#!/usr/bin/env bash
# User-space instructions per emit of an ssehub binary, counted by
# callgrind (exact and repeatable, unlike time on a shared machine): the
# server (--engine memory, no subscribers) takes N1 then N2 pipelined emits
# of a 100-byte body on one connection; the difference of the two totals
# divided by N2 - N1 leaves start-up and shutdown out.
#
#   scripts/instructions.sh [BINARY] [N1] [N2] [keyed]   (default target/release/ssehub 2000 12000)
#
# keyed: every emit has an Idempotency-Key of its own (`k100000` on, 7
# bytes), so each is stored and its key remembered.
#
# Needs valgrind (apt-get install valgrind) and python3.
set -euo pipefail
bin=${1:-target/release/ssehub} n1=${2:-2000} n2=${3:-12000} keyed=${4:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/emit.py" <<'PY'
import socket, sys
port, n, keyed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "keyed"
s = socket.create_connection(("127.0.0.1", port))
body = b'{"bench":"callgrind","pad":"' + b"x" * 70 + b'"}'
head = b"POST /v1/sources/load/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: %d\r\n" % len(body)
def req(i):
    return head + (b"Idempotency-Key: k%d\r\n" % (100000 + i) if keyed else b"") + b"\r\n" + body
seen, sent, tail = 0, 0, b""
while seen < n:
    k = min(200, n - sent)
    if k:
        s.sendall(b"".join(req(sent + i) for i in range(k)))
        sent += k
    while seen < sent:
        chunk = s.recv(1 << 16)
        if not chunk:
            raise SystemExit("the server closed the connection")
        data = tail + chunk
        seen += data.count(b"HTTP/1.1 202 ")
        tail = data[-12:]
PY
total() {
  local n=$1 port=$((20000 + RANDOM % 20000)) pid
  SSEHUB_API_KEY=k valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$n" "$bin" serve \
    --listen 127.0.0.1:$port --engine memory --source load >/dev/null 2>"$tmp/err.$n" &
  pid=$!
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  python3 "$tmp/emit.py" $port "$n" "$keyed"
  kill -TERM $pid
  wait $pid || true
  awk '/^(summary|totals):/ { print $2; exit }' "$tmp/cg.$n"
}
a=$(total "$n1") b=$(total "$n2")
echo "$bin: $(((b - a) / (n2 - n1))) instructions per ${keyed:+keyed }emit (callgrind, $n1 and $n2 emits)"
