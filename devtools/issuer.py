"""DEVELOPMENT-ONLY token issuer for the compose stack. Never deploy it.

Anyone who can reach it gets a validly signed token for any subject they ask for; it
exists so that a developer can try Row Level Security with real tokens.

    GET /token?sub=alice[&ttl=900|15m][&name=value ...]  a compact JWS (text), increasing jti
    GET /jwk                                             the public key as a JWK
    GET /.well-known/jwks.json                           the public key as a JWK Set
    GET /healthz                                         "ok" once the key is in place

On start it loads its private key from $TOKENS_KEY_DIR (making one with $TOKENS_ALG on
first start) and writes the public JWK to $TOKENS_PUBLIC_DIR/jwk.json, which the database
reads as its server-wide key. Tokens are minted by devtools/jwt.py, the token tool's code.
`python3 -m devtools.issuer --check` is the container's healthcheck.
"""

import os
import signal
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from jwcrypto import jwk

from devtools.jwt import generate_key, mint, parse_claim, parse_ttl, public_jwk, public_jwks
from runtime.errors import UserError, failed

PORT = 8080
ISSUER = "pg-session-jwt-dev-tokens"
BANNER = ("pg-session-jwt DEVELOPMENT token issuer: it signs a token for any subject for "
          "anyone who can reach it. Never deploy it; never trust its key in production.")
DEFAULT_TTL = 900
_mint_lock = threading.Lock()


def _write_atomically(path, text, mode):
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_or_create_key(key_dir, alg):
    """The private key kept in `key_dir`, made with `alg` on first start."""
    path = Path(key_dir) / "private.jwk.json"
    if path.exists():
        key = jwk.JWK.from_json(path.read_text())
        if key.get("alg") != alg:
            print(f"note: keeping the existing {key.get('alg')} key; TOKENS_ALG={alg} applies "
                  "to a new key volume (make stop removes it)", file=sys.stderr)
        return key
    key = generate_key(alg)
    _write_atomically(path, key.export_private() + "\n", 0o600)
    print(f"generated a new {alg} signing key (kid {key.get('kid')})", file=sys.stderr)
    return key


def publish(public_dir, key):
    """Write the public JWK (what the database trusts) and the JWK Set into `public_dir`."""
    _write_atomically(Path(public_dir) / "jwk.json", public_jwk(key) + "\n", 0o644)
    _write_atomically(Path(public_dir) / "jwks.json", public_jwks([key]) + "\n", 0o644)


def token_for(key, query):
    """A token for the query string's `sub`, `ttl` and extra claims; UserError when bad."""
    params = parse_qsl(query, keep_blank_values=True)
    claims = {"iss": ISSUER}
    sub = None
    ttl = DEFAULT_TTL
    for name, value in params:
        if name == "sub":
            sub = value
        elif name == "ttl":
            ttl = parse_ttl(value, "ttl")
        else:
            claim, parsed = parse_claim(f"{name}={value}", "claim")
            claims[claim] = parsed
    if not sub:
        raise UserError("missing sub: ask for /token?sub=alice")
    with _mint_lock:
        return mint(key, claims, ttl=ttl, sub=sub)


def index_text():
    return (f"{BANNER}\n\n"
            "GET /token?sub=alice[&ttl=900|15m][&name=value ...]\n"
            "GET /jwk\nGET /.well-known/jwks.json\nGET /healthz\n")


def make_handler(key):
    public, jwks = public_jwk(key), public_jwks([key])

    class Handler(BaseHTTPRequestHandler):
        server_version = "pg-session-jwt-dev-tokens"

        def _send(self, status, body, content_type="text/plain; charset=utf-8"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Development-Only", "this issuer signs tokens for anyone")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (the http.server API)
            url = urlsplit(self.path)
            if url.path == "/token":
                try:
                    self._send(200, token_for(key, url.query) + "\n")
                except UserError as exc:
                    self._send(400, f"error: {exc}\n")
            elif url.path == "/jwk":
                self._send(200, public + "\n", "application/jwk+json")
            elif url.path == "/.well-known/jwks.json":
                self._send(200, jwks + "\n", "application/jwk-set+json")
            elif url.path == "/healthz":
                self._send(200, "ok\n")
            elif url.path == "/":
                self._send(200, index_text())
            else:
                self._send(404, f"not found: {url.path}\n\n{index_text()}")

        def log_message(self, fmt, *args):
            # Request lines only: the tokens themselves are never logged; nor is the
            # healthcheck, every two seconds.
            if self.path == "/healthz":
                return
            print(f"tokens: {self.address_string()} {fmt % args}", file=sys.stderr, flush=True)

    return Handler


def check(port=PORT):
    """Exit status for the healthcheck: 0 when /healthz answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"tokens not ready: {exc}", file=sys.stderr)
        return 1


def main(argv):
    if argv[1:] == ["--check"]:
        return check()
    key_dir = os.environ.get("TOKENS_KEY_DIR", "/var/lib/dev-tokens/key")
    public_dir = os.environ.get("TOKENS_PUBLIC_DIR", "/var/lib/dev-tokens/public")
    try:
        key = load_or_create_key(key_dir, os.environ.get("TOKENS_ALG", "EdDSA"))
    except UserError as exc:
        return failed(exc)
    publish(public_dir, key)
    print(BANNER, file=sys.stderr)
    print(f"serving on :{PORT}; public key in {public_dir}/jwk.json", file=sys.stderr, flush=True)
    # As PID 1 the process gets no default SIGTERM action: without this, `docker stop` waits
    # its whole timeout and then kills.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("0.0.0.0", PORT), make_handler(key)).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
