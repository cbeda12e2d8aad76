"""A test identity provider's key endpoint, run inside a container by test_jwks_url.py.

Standard library only (it runs on the image's own python3). Serves the folder it is given
(mounted from the test's temporary directory), so the test rotates keys by replacing
files on the host:

    GET /jwks.json       jwks.json, with the Cache-Control header in cache-control (if any)
    GET /NAME/jwks.json  NAME/jwks.json and NAME/cache-control: one server for several issuers
    every request        one line "METHOD PATH" appended to hits.log (the recording)

With cert.pem and key.pem in the folder it speaks https. It writes `ready` once listening.
"""

import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "/srv")
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8443
_hits = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def _record(self):
        with _hits, open(ROOT / "hits.log", "a") as fh:
            fh.write(f"{self.command} {self.path}\n")

    def do_GET(self):  # noqa: N802 (the http.server API)
        self._record()
        parts = self.path.split("/")
        folder = ROOT / parts[1] if len(parts) == 3 and parts[1].isidentifier() else ROOT
        path = folder / "jwks.json"
        if parts[-1] != "jwks.json" or len(parts) > 3 or not path.exists():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/jwk-set+json")
        self.send_header("Content-Length", str(len(body)))
        cache_control = folder / "cache-control"
        if cache_control.exists():
            self.send_header("Cache-Control", cache_control.read_text().strip())
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # noqa: N815 (recorded all the same)

    def log_message(self, fmt, *args):
        print(fmt % args, file=sys.stderr, flush=True)


def main():
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    if (ROOT / "cert.pem").exists():
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(ROOT / "cert.pem", ROOT / "key.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
    (ROOT / "ready").write_text("ok\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
