"""Helpers for the extension's unit tests: raw JWS signing and a stand-in for plpy.

Tokens are signed with jwcrypto (the independent implementation), including tokens
whose header or payload no well-behaved issuer would produce.
"""

import base64
import json

from jwcrypto import jws

from devtools.jwt import next_jti, public_jwk


def b64(data):
    """Unpadded base64url of `data` (bytes or str)."""
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    """The bytes of (possibly unpadded) base64url `text`, leniently: for taking tokens apart."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key, payload, header=None, alg=None):
    """A compact JWS of `payload` (bytes, str or dict) under `header` (str or dict; default:
    the key's alg and kid), signed with `key` using `alg` (default: the header's, else the key's)."""
    if header is None:
        header = {"alg": alg or key.get("alg"), "typ": "JWT"}
        if key.get("kid"):
            header["kid"] = key.get("kid")
    if alg is None:
        alg = (json.loads(header) if isinstance(header, str) else header).get("alg") or key.get("alg")
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    signed = jws.JWSCore(alg, key, header, payload).sign()
    return f"{signed['protected']}.{b64(payload)}.{signed['signature']}"


def unsigned(header, payload, signature=b""):
    """header.payload.signature from raw parts (for tokens refused before verification)."""
    return ".".join(b64(part if not isinstance(part, dict) else json.dumps(part))
                    for part in (header, payload, signature))


def claims(**extra):
    """Claims a well-behaved issuer would send, with a fresh jti."""
    import time

    now = int(time.time())
    out = {"sub": "alice", "iat": now, "exp": now + 900, "jti": next_jti()}
    out.update(extra)
    return out


class PlpyError(Exception):
    """What plpy.error raises in the fake: the message and SQLSTATE of the ERROR."""

    def __init__(self, message, sqlstate=None):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


class FakePlpy:
    """The part of plpy that pg_session_jwt.pl uses, and the server behind it: `settings`
    are the connection-start values that pl.connection_start_values() reads there (the
    `backend` fixture points it at the latest FakePlpy), `captures` counts those reads."""

    latest = None

    def __init__(self, jwk=None, **settings):
        self.settings = {"jwk": jwk, "audience": None, "issuer": None, "leeway": "60",
                         "require_jti": "on", "audit_log": "off", "max_token_bytes": "16384"}
        self.settings.update(settings)
        self.captures = 0
        self.logs = []
        FakePlpy.latest = self

    @classmethod
    def for_key(cls, key, **settings):
        return cls(public_jwk(key), **settings)

    def connection_start_values(self):
        self.captures += 1
        return dict(self.settings)

    def error(self, message, sqlstate=None):
        raise PlpyError(message, sqlstate)

    def log(self, message):
        self.logs.append(message)
