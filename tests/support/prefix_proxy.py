#!/usr/bin/env python3
"""A reverse proxy that serves a server under a path prefix, as nginx's
`location /ssehub/ { proxy_pass http://127.0.0.1:8080/; }` does: a request
for PREFIX/x is sent to the upstream as /x (with X-Forwarded-For), and its
answer comes back as it goes (text/event-stream streamed line by line). A
request outside the prefix gets 404 and a line `outside PATH` on stderr, and
each request a line `proxied PATH` there. The port it listens on is printed on
stdout first.

usage: prefix_proxy.py --upstream HOST:PORT --prefix /ssehub
"""

import argparse
import http.client
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--prefix", required=True)
    opts = parser.parse_args()
    host, port = opts.upstream.rsplit(":", 1)
    prefix = opts.prefix.rstrip("/")

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0 answers: each ends with the connection, so a stream needs no framing.
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def proxy(self):
            if not self.path.startswith(prefix + "/"):
                print(f"outside {self.path}", file=sys.stderr, flush=True)
                self.send_error(404)
                return
            print(f"proxied {self.path}", file=sys.stderr, flush=True)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            headers["X-Forwarded-For"] = self.client_address[0]
            upstream = http.client.HTTPConnection(host, int(port), timeout=60)
            upstream.request(self.command, self.path[len(prefix):], body=body, headers=headers)
            resp = upstream.getresponse()
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            streaming = resp.getheader("Content-Type", "").startswith("text/event-stream")
            if not streaming:
                data = resp.read()
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                if streaming:
                    while line := resp.readline():
                        self.wfile.write(line)
                        self.wfile.flush()
                elif self.command != "HEAD":
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                upstream.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = proxy

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
