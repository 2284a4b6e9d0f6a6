#!/usr/bin/env python3
"""Fills a running ssehub for the recovery benchmark (scripts/bench.sh
--storage): SOURCES sources, then EVENTS events of BYTES bytes on each,
round-robin, then TOKENS subscribe tokens on each (default 0; for
--fairness), pipelined on one keep-alive connection; every answer is read
and must be 201/202.

    SSEHUB_API_KEY=KEY scripts/populate.py URL SOURCES EVENTS BYTES [TOKENS]
"""
import os
import socket
import sys
from urllib.parse import urlparse

BATCH = 2000


def responses(sock, buf, n):
    """Reads n responses (all with Content-Length); returns their statuses and the rest."""
    statuses = []
    while len(statuses) < n:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("populate: the server closed the connection")
            buf += chunk
            continue
        head = buf[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        while len(buf) < end + 4 + length:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("populate: the server closed the connection")
            buf += chunk
        statuses.append(int(head.split(" ", 2)[1]))
        buf = buf[end + 4 + length:]
    return statuses, buf


def run(sock, requests, want):
    buf = b""
    for i in range(0, len(requests), BATCH):
        batch = requests[i:i + BATCH]
        sock.sendall(b"".join(batch))
        statuses, buf = responses(sock, buf, len(batch))
        bad = [s for s in statuses if s != want]
        if bad:
            raise SystemExit(f"populate: got {bad[0]}, wanted {want}")


def main():
    url, sources, events, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    key = os.environ["SSEHUB_API_KEY"]
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port))
    auth = f"Authorization: Bearer {key}\r\n"
    creates = []
    for s in range(sources):
        body = f'{{"name":"r{s}"}}'
        creates.append(f"POST /v1/sources HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {len(body)}\r\n\r\n{body}".encode())
    run(sock, creates, 201)
    pad = "x" * max(0, size - len('{"pad":""}'))
    body = f'{{"pad":"{pad}"}}'
    emits = [
        f"POST /v1/sources/r{s}/events HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {len(body)}\r\n\r\n{body}".encode()
        for s in range(sources)
    ]
    for _ in range(events):
        run(sock, emits, 202)
    grant = '{"expires_in_s":86400}'
    grants = [
        f"POST /v1/sources/r{s}/tokens HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {len(grant)}\r\n\r\n{grant}".encode()
        for s in range(sources)
    ]
    for _ in range(tokens):
        run(sock, grants, 201)
    print(f"populate: {sources} sources, {sources * events} events of {len(body)} B, {sources * tokens} tokens")


if __name__ == "__main__":
    main()
