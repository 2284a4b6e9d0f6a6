#!/bin/sh
# Emits/s with --redis-replicas 1 against 0, in one run (docs/benchmarks.md,
# "What --redis-replicas costs"): a Redis master and one replica on loopback
# (appendonly yes, appendfsync always, as docs/redis.md asks), two ssehub
# nodes on them, one with each setting, and wrk (-t2 -c64 -d10s, 100-byte
# emits as in scripts/wrk/emit.lua) against each in turn, twice. Stops by
# itself; everything it starts is stopped on exit.
#
#   cargo build --release && scripts/bench-redis-replicas.sh
set -eu
BIN=${BIN:-target/release/ssehub}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
M=$(free_port) R=$(free_port) P0=$(free_port) P1=$(free_port)
common="--bind 127.0.0.1 --save '' --appendonly yes --appendfsync always --maxmemory-policy noeviction --daemonize no"
mkdir "$dir/m" "$dir/r"
eval redis-server --port "$M" --dir "$dir/m" $common --repl-diskless-sync-delay 0 --logfile "$dir/m.log" &
eval redis-server --port "$R" --dir "$dir/r" $common --replicaof 127.0.0.1 "$M" --logfile "$dir/r.log" &
until redis-cli -p "$R" info replication 2>/dev/null | grep -q master_link_status:up; do sleep 0.1; done
export SSEHUB_API_KEY=bench-key
"$BIN" serve --listen "127.0.0.1:$P0" --redis "redis://127.0.0.1:$M" --node-name replicas0 2>"$dir/n0.log" &
"$BIN" serve --listen "127.0.0.1:$P1" --redis "redis://127.0.0.1:$M" --redis-replicas 1 --node-name replicas1 2>"$dir/n1.log" &
for p in "$P0" "$P1"; do
  until curl -sf "http://127.0.0.1:$p/healthz" >/dev/null; do sleep 0.1; done
done
curl -sf -X POST -H "Authorization: Bearer $SSEHUB_API_KEY" -d '{"name":"load"}' "http://127.0.0.1:$P0/v1/sources" >/dev/null
until curl -sf -H "Authorization: Bearer $SSEHUB_API_KEY" "http://127.0.0.1:$P1/v1/sources/load" >/dev/null; do sleep 0.1; done
for round in 1 2; do
  for p in "$P0" "$P1"; do
    replicas=$([ "$p" = "$P0" ] && echo 0 || echo 1)
    printf 'round %s, --redis-replicas %s: ' "$round" "$replicas"
    wrk -t2 -c64 -d10s -s scripts/wrk/emit.lua "http://127.0.0.1:$p" | grep RESULT
  done
done
