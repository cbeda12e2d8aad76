"""The token tool: make signing keys and mint tokens for development and tests.

    python -m devtools.jwt keygen [--alg EdDSA|ES256|RS256] [--out key.json] [--force]
    python -m devtools.jwt mint --key key.json --sub alice [--ttl 15m] [--claim k=v ...]

keygen writes the private JWK (mode 0600; an existing file only with --force) and prints
the public JWK and a PGOPTIONS line ready to paste; mint prints a compact JWS whose `jti`
increases from call to call, also across processes. Bad input is a one-line error and
exit status 2.
"""

import argparse
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

from jwcrypto import jwk, jws
from jwcrypto.common import json_encode

from runtime.errors import UserError, failed

# Key generation parameters per signing algorithm.
ALGORITHMS = {
    "EdDSA": {"kty": "OKP", "crv": "Ed25519"},
    "ES256": {"kty": "EC", "crv": "P-256"},
    "ES384": {"kty": "EC", "crv": "P-384"},
    "ES512": {"kty": "EC", "crv": "P-521"},
    "RS256": {"kty": "RSA", "size": 2048},
    "RS384": {"kty": "RSA", "size": 2048},
    "RS512": {"kty": "RSA", "size": 2048},
    "PS256": {"kty": "RSA", "size": 2048},
    "PS384": {"kty": "RSA", "size": 2048},
    "PS512": {"kty": "RSA", "size": 2048},
}
_last_jti = 0


def generate_key(alg="EdDSA", kid=None):
    """A fresh private JWK for `alg`, with `alg` and `kid` members set."""
    if alg not in ALGORITHMS:
        raise UserError(f"unknown algorithm {alg!r}: choose one of {', '.join(ALGORITHMS)}")
    key = jwk.JWK.generate(**ALGORITHMS[alg])
    key.update({"alg": alg, "kid": kid or key.thumbprint()[:16], "use": "sig"})
    return key


def public_jwk(key):
    """The public half of `key` as compact JSON text (what pg_session_jwt.jwk holds)."""
    return json.dumps(key.export_public(as_dict=True), separators=(",", ":"), sort_keys=True)


def public_jwks(keys):
    """The public halves of `keys` as one compact JWK Set `{"keys": [...]}`."""
    return json.dumps({"keys": [json.loads(public_jwk(key)) for key in keys]},
                      separators=(",", ":"))


def pgoptions_value(jwk_json):
    """`-c pg_session_jwt.jwk=...` escaped for libpq's options (backslash before space and \\)."""
    escaped = re.sub(r"([\\ ])", r"\\\1", jwk_json)
    return f"-c pg_session_jwt.jwk={escaped}"


def next_jti():
    """A jti larger than any this process handed out before: microseconds since the epoch."""
    global _last_jti
    _last_jti = max(_last_jti + 1, time.time_ns() // 1000)
    return _last_jti


def key_algorithm(key):
    """The JWS algorithm for `key`: its `alg` member, else the usual one for its type."""
    if key.get("alg"):
        return key.get("alg")
    kty, crv = key.get("kty"), key.get("crv")
    by_curve = {"Ed25519": "EdDSA", "Ed448": "EdDSA", "P-256": "ES256", "P-384": "ES384",
                "P-521": "ES512"}
    if kty == "RSA":
        return "RS256"
    if crv in by_curve:
        return by_curve[crv]
    raise UserError(f"no algorithm for a {kty} key on curve {crv}: only asymmetric keys "
                    "(OKP Ed25519, EC P-256/384/521, RSA) can sign tokens pg_session_jwt accepts")


def mint(key, claims=None, alg=None, header=None, ttl=900, sub=None):
    """A compact JWS signed by `key`, with iat/exp/jti filled in unless given in `claims`."""
    now = int(time.time())
    payload = {"iat": now, "exp": now + ttl, "jti": next_jti()}
    if sub is not None:
        payload["sub"] = sub
    payload.update(claims or {})
    protected = {"alg": alg or key_algorithm(key), "typ": "JWT"}
    if key.get("kid"):
        protected["kid"] = key.get("kid")
    protected.update(header or {})
    token = jws.JWS(json_encode(payload).encode())
    token.add_signature(key, protected=json_encode(protected))
    return token.serialize(compact=True)


def parse_ttl(text, option="--ttl"):
    """`900`, `90s`, `15m`, `2h`, `1d` → seconds; errors name `option`."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise UserError(f"invalid {option} {text!r}: use seconds or a number with s, m, h or d "
                        "(15m)")
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def parse_claim(text, option="--claim"):
    """`k=v` → (k, v) with v read as JSON when it parses (numbers, true, objects), else text."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UserError(f"invalid {option} {text!r}: write it as name=value")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def load_key(path):
    """Read a private JWK file written by keygen."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read key file {path}: {exc.strerror} "
                        "(make one with: python -m devtools.jwt keygen --out key.json)") from None
    try:
        key = jwk.JWK.from_json(text)
    except Exception:
        raise UserError(f"{path} is not a JWK (make one with: python -m devtools.jwt keygen)") from None
    if not key.has_private:
        raise UserError(f"{path} holds a public key; minting needs the private JWK keygen wrote")
    return key


def write_private_key(key, path, force=False):
    """Write `key` to `path` readable by its owner only; an existing file only when `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{path} already exists: pass --force to replace that key, or choose "
                        "another file with --out")
    try:
        if force:
            path.unlink(missing_ok=True)  # a new file gets mode 0600 whatever the old one had
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.export_private() + "\n")
    except OSError as exc:
        raise UserError(f"cannot write key file {path}: {exc.strerror}") from None


def pgoptions_export(jwk_json):
    """`export PGOPTIONS=...` for a POSIX shell, carrying the libpq-escaped JWK."""
    return f"export PGOPTIONS={shlex.quote(pgoptions_value(jwk_json))}"


class _Parser(argparse.ArgumentParser):
    """argparse with the tool's one-line errors (exit status 2, as argparse's own)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def main(argv=None):
    parser = _Parser(prog="python -m devtools.jwt", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    kg = sub.add_parser("keygen", help="make a signing key")
    kg.add_argument("--alg", default="EdDSA", help=f"one of {', '.join(ALGORITHMS)} (default EdDSA)")
    kg.add_argument("--out", default="key.json", help="private JWK file to write (default key.json)")
    kg.add_argument("--force", action="store_true", help="replace an existing --out file")
    mt = sub.add_parser("mint", help="mint a token")
    mt.add_argument("--key", required=True, help="private JWK file from keygen")
    mt.add_argument("--sub", required=True, help="the subject (user id)")
    mt.add_argument("--ttl", default="15m", help="lifetime: seconds or 15m, 2h, 1d (default 15m)")
    mt.add_argument("--claim", action="append", default=[], metavar="K=V", help="extra claim")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            key = generate_key(args.alg)
            write_private_key(key, args.out, args.force)
            public = public_jwk(key)
            print(f"# private key written to {args.out}; public JWK:")
            print(public)
            print(pgoptions_export(public))
        else:
            key = load_key(args.key)
            claims = dict(parse_claim(c) for c in args.claim)
            print(mint(key, claims, ttl=parse_ttl(args.ttl), sub=args.sub))
    except UserError as exc:
        return failed(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
