"""DEVELOPMENT-ONLY token issuer for the compose stack. Never deploy it.

Anyone who can reach it gets a validly signed token for any subject they ask for; it
exists so that a developer can try Row Level Security with real tokens.

    GET /token?sub=alice[&ttl=900|15m][&name=value ...]  a compact JWS (text), increasing jti
    GET /jwk                                             the current public key as a JWK
    GET /.well-known/jwks.json                           the published keys as a JWK Set
                                                         (Cache-Control: max-age=JWKS_MAX_AGE)
    POST /rotate[?grace=SECONDS]                         a new signing key; the old one stays
                                                         published for `grace` seconds (0:
                                                         retired at once), then disappears
    GET /healthz                                         "ok" once the key is in place

On start it loads its private key from $TOKENS_KEY_DIR (making one with $TOKENS_ALG on
first start) and writes the public JWK and JWK Set to $TOKENS_PUBLIC_DIR; the database
fetches the JWK Set from /.well-known/jwks.json (its PG_SESSION_JWT_JWKS_URL) and picks up
a rotation on its own. Tokens are minted by devtools/jwt.py, the token tool's code.
`python3 -m devtools.issuer --check` is the container's healthcheck.
"""

import json
import os
import signal
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from jwcrypto import jwk

from devtools.jwt import generate_key, key_algorithm, mint, parse_claim, parse_ttl, public_jwk, public_jwks
from runtime.errors import UserError, failed

PORT = 8080
ISSUER = "pg-session-jwt-dev-tokens"
BANNER = ("pg-session-jwt DEVELOPMENT token issuer: it signs a token for any subject for "
          "anyone who can reach it. Never deploy it; never trust its key in production.")
DEFAULT_TTL = 900
JWKS_MAX_AGE = 60
MAX_GRACE = 86400
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


def publish(public_dir, key, published=None):
    """Write the public JWK (the signing key) and the JWK Set (every published key) into
    `public_dir`."""
    _write_atomically(Path(public_dir) / "jwk.json", public_jwk(key) + "\n", 0o644)
    _write_atomically(Path(public_dir) / "jwks.json", public_jwks(published or [key]) + "\n",
                      0o644)


class KeyRing:
    """The signing key and the retired keys still published, each until a moment."""

    def __init__(self, key, key_dir=None, public_dir=None, clock=time.time):
        self.key = key
        self.retired = []  # (key, published until)
        self.key_dir, self.public_dir, self.clock = key_dir, public_dir, clock
        self.lock = threading.Lock()

    def published(self):
        now = self.clock()
        with self.lock:
            self.retired = [(key, until) for key, until in self.retired if until > now]
            return [self.key] + [key for key, _ in self.retired]

    def rotate(self, grace=0):
        """A new key of the same algorithm; the old one published `grace` seconds more."""
        new = generate_key(key_algorithm(self.key))
        with self.lock:
            old, self.key = self.key, new
            if grace > 0:
                self.retired.append((old, self.clock() + grace))
        if self.key_dir is not None:
            _write_atomically(Path(self.key_dir) / "private.jwk.json", new.export_private() + "\n",
                              0o600)
        if self.public_dir is not None:
            publish(self.public_dir, new, self.published())
        print(f"rotated: signing with kid {new.get('kid')}; kid {old.get('kid')} "
              f"{'published ' + str(grace) + ' s more' if grace > 0 else 'retired at once'}",
              file=sys.stderr, flush=True)
        return {"kid": new.get("kid"), "retired": old.get("kid"),
                "published": [key.get("kid") for key in self.published()]}


def parse_grace(query):
    """The `grace` seconds of a /rotate query string; UserError when bad."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    text = params.get("grace", "0")
    grace = parse_ttl(text, "grace")
    if grace > MAX_GRACE:
        raise UserError(f"grace {text!r} is over a day: give at most {MAX_GRACE} seconds")
    return grace


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
            "GET /jwk\nGET /.well-known/jwks.json\nPOST /rotate[?grace=SECONDS]\nGET /healthz\n")


def make_handler(ring):
    """The HTTP handler class serving the keys and tokens of `ring` (a KeyRing)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "pg-session-jwt-dev-tokens"

        def _send(self, status, body, content_type="text/plain; charset=utf-8",
                  cache_control="no-store"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", cache_control)
            self.send_header("X-Development-Only", "this issuer signs tokens for anyone")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (the http.server API)
            url = urlsplit(self.path)
            if url.path == "/token":
                try:
                    self._send(200, token_for(ring.key, url.query) + "\n")
                except UserError as exc:
                    self._send(400, f"error: {exc}\n")
            elif url.path == "/jwk":
                self._send(200, public_jwk(ring.key) + "\n", "application/jwk+json")
            elif url.path == "/.well-known/jwks.json":
                self._send(200, public_jwks(ring.published()) + "\n", "application/jwk-set+json",
                           cache_control=f"public, max-age={JWKS_MAX_AGE}")
            elif url.path == "/healthz":
                self._send(200, "ok\n")
            elif url.path == "/":
                self._send(200, index_text())
            else:
                self._send(404, f"not found: {url.path}\n\n{index_text()}")

        def do_POST(self):  # noqa: N802 (the http.server API)
            url = urlsplit(self.path)
            if url.path != "/rotate":
                self._send(404, f"not found: POST {url.path}\n\n{index_text()}")
                return
            try:
                grace = parse_grace(url.query)
            except UserError as exc:
                self._send(400, f"error: {exc}\n")
                return
            self._send(200, json.dumps(ring.rotate(grace)) + "\n", "application/json")

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
    ring = KeyRing(key, key_dir, public_dir)
    # As PID 1 the process gets no default SIGTERM action: without this, `docker stop` waits
    # its whole timeout and then kills.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("0.0.0.0", PORT), make_handler(ring)).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
