"""Hostile tokens against a real server, on every major.

One table, `CASES`: each row names an attack from RFC 8725 or a known JWT library bug, the
small function that builds its token, and the exact SQLSTATE the extension must refuse it
with. For every row, in one connection: `auth.jwt_session_init()` fails with that SQLSTATE
and a message without a traceback or the token; the same backend still answers; no
identity appears (not from the refused call, nor from the token written straight into
`pg_session_jwt.jwt`); and a valid token still opens a session afterwards. Tokens travel as
bind parameters, never spliced into SQL.
"""

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field

import psycopg
import pytest

from devtools.jwt import generate_key, mint, next_jti, public_jwk
from tests.support.jws import b64, unb64
from tests.support.jws import sign as sign_raw
from tests.support.sql import attempt, error, identity

pytestmark = pytest.mark.container

# Ed25519's group order (RFC 8032 5.1): S and S + L verify alike in a lax implementation.
ED25519_L = 2**252 + 27742317777372353535851937790883648493
AUDIENCE, ISSUER = "app", "https://issuer.example"
AUD_ISS = f"-c pg_session_jwt.audience={AUDIENCE} -c pg_session_jwt.issuer={ISSUER}"


def compact(header, payload, signature=b""):
    """header.payload.signature from a dict / bytes each (no signing)."""
    def part(value):
        return b64(json.dumps(value).encode() if isinstance(value, dict | list) else value)
    return ".".join(part(p) for p in (header, payload, signature))


def hmac_token(secret, header, payload):
    """A token correctly HMAC-signed (HS256/384/512 per header) under `secret`, as an
    attacker who read the public key would make it."""
    signing_input = f"{b64(json.dumps(header))}.{b64(json.dumps(payload))}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[header["alg"]]
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(mac)}"


def claims(**extra):
    """What a well-behaved issuer signs for "mallory", with a fresh jti."""
    now = int(time.time())
    return {"sub": "mallory", "iat": now, "exp": now + 900, "jti": next_jti(), **extra}


def signed(key, payload=None, **header):
    """`payload` (claims dict or raw bytes) signed by `key` under its own header plus `header`."""
    if payload is None:
        payload = claims()
    if isinstance(payload, dict):
        payload = json.dumps(payload).encode()
    return sign_raw(key, payload, {"alg": key.get("alg"), "kid": key.get("kid"), **header})


def replace_part(token, index, transform):
    """`token` with part `index` decoded, passed through `transform` (bytes -> bytes), re-encoded."""
    parts = token.split(".")
    parts[index] = b64(transform(unb64(parts[index])))
    return ".".join(parts)


def flip_byte(data, where):
    data = bytearray(data)
    data[where] ^= 0x01
    return bytes(data)


def malleate_ed25519(signature):
    """R || S+L: the same signature in the form a lax verifier also accepts (S not reduced)."""
    s = int.from_bytes(signature[32:], "little") + ED25519_L
    return signature[:32] + s.to_bytes(32, "little")


def nested(depth):
    return b'{"sub": "mallory", "jti": %d, "x": ' % next_jti() + b"[" * depth + b"]" * depth + b"}"


@dataclass
class Ctx:
    """What a case may use to build its token: the configured key and some others."""

    key: object                      # the connection's key (EdDSA unless the case says)
    attacker: object                 # same type and kid, someone else's
    accepted: list = field(default_factory=list)   # tokens accepted before the attack


@dataclass
class Case:
    name: str
    build: object                    # Ctx -> token
    sqlstate: str
    alg: str = "EdDSA"               # the configured key's algorithm
    options: str = ""                # extra startup settings
    history: int = 0                 # valid tokens accepted (then the session ended) before


def none_token(alg):
    return lambda c: compact({"alg": alg, "typ": "JWT"}, json.dumps(claims()).encode())


def rsa_pem(c):
    return c.key.export_to_pem(private_key=False, password=None)   # what an attacker can read


CASES = [
    # alg "none" in any spelling, with and without a signature part (RFC 8725 2.1, 3.1).
    Case("alg none", none_token("none"), "42804"),
    Case("alg NONE", none_token("NONE"), "42804"),
    Case("alg nOnE", none_token("nOnE"), "42804"),
    Case("alg none with the real signature kept",
         lambda c: ".".join([b64(json.dumps({"alg": "none"}))] + signed(c.key).split(".")[1:]),
         "42804"),
    Case("alg missing", lambda c: compact({"typ": "JWT"}, json.dumps(claims()).encode(), b"x"), "42804"),
    # Key confusion: the public key (which every user can read) as an HMAC secret.
    Case("HS256 with the RSA public key PEM as secret",
         lambda c: hmac_token(rsa_pem(c), {"alg": "HS256", "kid": c.key.get("kid")}, claims()),
         "42804", alg="RS256"),
    Case("HS256 with the JWK JSON as secret",
         lambda c: hmac_token(public_jwk(c.key).encode(), {"alg": "HS256", "kid": c.key.get("kid")},
                         claims()), "42804"),
    Case("HS512 with the Ed25519 x bytes as secret",
         lambda c: hmac_token(unb64(c.key.get("x")), {"alg": "HS512", "kid": c.key.get("kid")}, claims()),
         "42804"),
    # alg / key mismatches: a valid signature, by a key of another kind.
    Case("ES256 token for an Ed25519 key",
         lambda c: mint(generate_key("ES256", kid=c.key.get("kid")), sub="mallory"), "23514"),
    Case("EdDSA token for an RSA key",
         lambda c: mint(generate_key("EdDSA", kid=c.key.get("kid")), sub="mallory"), "23514",
         alg="RS256"),
    Case("PS256 by the right key, which is RS256 only",
         lambda c: mint(c.key, sub="mallory", alg="PS256"), "23514", alg="RS256"),
    Case("wrong key, same kid", lambda c: mint(c.attacker, sub="mallory"), "23514"),
    Case("unknown kid", lambda c: mint(generate_key("EdDSA", kid="someone-else"), sub="m"), "23514"),
    # One byte changed in each part; the signature no longer matches.
    Case("header tampered by one byte",
         lambda c: replace_part(signed(c.key, typ="JWT"), 0, lambda b: b.replace(b'"JWT"', b'"JWS"')),
         "23514"),
    Case("payload tampered by one byte",
         lambda c: replace_part(signed(c.key), 1, lambda b: b.replace(b"mallory", b"malloru")), "23514"),
    Case("signature tampered by one byte",
         lambda c: replace_part(signed(c.key), 2, lambda b: flip_byte(b, 10)), "23514"),
    Case("signature truncated", lambda c: replace_part(signed(c.key), 2, lambda b: b[:-1]), "23514"),
    Case("signature empty", lambda c: replace_part(signed(c.key), 2, lambda b: b""), "23514"),
    Case("signature over-long", lambda c: replace_part(signed(c.key), 2, lambda b: b + b"\0"), "23514"),
    Case("Ed25519 signature malleated (S + L)",
         lambda c: replace_part(signed(c.key), 2, malleate_ed25519), "23514"),
    Case("RSA signature over-long",
         lambda c: replace_part(signed(c.key), 2, lambda b: b"\0" + b), "23514", alg="RS256"),
    Case("ES256 signature in DER instead of r||s",
         lambda c: replace_part(signed(c.key), 2, lambda b: b"\x30\x44\x02\x20" + b[:32] + b"\x02\x20"
                                + b[32:]), "23514", alg="ES256"),
    # Headers that extend JWS or bring their own key (RFC 7515 4.1.3-4.1.6, 4.1.11).
    Case("unknown crit", lambda c: signed(c.key, crit=["exp"], exp=1), "42804"),
    Case("embedded jwk",
         lambda c: signed(c.attacker, jwk=json.loads(public_jwk(c.attacker))), "42804"),
    Case("jku", lambda c: signed(c.attacker, jku="https://evil.example/jwks.json"), "42804"),
    Case("x5u", lambda c: signed(c.attacker, x5u="https://evil.example/cert.pem"), "42804"),
    Case("x5c", lambda c: signed(c.attacker, x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
         "42804"),
    Case("kid with SQL", lambda c: signed(c.attacker, kid="x' or '1'='1'; drop table t; --"), "23514"),
    Case("kid with a path", lambda c: signed(c.attacker, kid="../../../../dev/null"), "23514"),
    # \u0000 in any JSON string of the token is refused while parsing (PostgreSQL text
    # cannot hold it), before the kid is looked up.
    Case("kid with a NUL byte", lambda c: signed(c.attacker, kid=c.key.get("kid") + "\0"), "42804"),
    Case("kid not a string", lambda c: signed(c.attacker, kid=["a", "b"]), "42804"),
    # Structure.
    Case("empty string", lambda c: "", "42804"),
    Case("two segments", lambda c: ".".join(signed(c.key).split(".")[:2]), "42804"),
    Case("four segments", lambda c: signed(c.key) + "." + b64(b"extra"), "42804"),
    Case("five segments (JWE)", lambda c: signed(c.key) + ".AAAA.AAAA", "42804"),
    Case("JWS JSON serialization (flattened)",
         lambda c: json.dumps(dict(zip(("protected", "payload", "signature"),
                                       signed(c.key).split("."), strict=True))), "42804"),
    Case("JWS JSON serialization (general)",
         lambda c: json.dumps({"payload": signed(c.key).split(".")[1], "signatures": [
             {"protected": signed(c.key).split(".")[0], "signature": signed(c.key).split(".")[2]}]}),
         "42804"),
    Case("base64 padding", lambda c: signed(c.key).replace(".", "=.", 1), "42804"),
    Case("base64 non-zero trailing bits",
         # 64 signature bytes are 86 characters; the last one carries 4 unused bits.
         lambda c: (lambda t: t[:-1] + ("B" if t[-1] == "A" else chr(ord(t[-1]) ^ 1)))(signed(c.key)),
         "42804"),
    Case("base64 standard alphabet",
         lambda c: (lambda t: t.replace("-", "+").replace("_", "/") if "-" in t or "_" in t
                    else t[:-2] + "+A")(signed(c.key)), "42804"),
    Case("whitespace around the token", lambda c: f" {signed(c.key)}\n", "42804"),
    Case("non-ASCII character", lambda c: signed(c.key) + "\u00e9", "42804"),
    Case("header not an object", lambda c: compact(["EdDSA"], json.dumps(claims()).encode(), b"x"),
         "42804"),
    Case("payload an array", lambda c: signed(c.key, b'["mallory"]'), "42804"),
    Case("payload a string", lambda c: signed(c.key, b'"mallory"'), "42804"),
    Case("payload null", lambda c: signed(c.key, b"null"), "42804"),
    Case("payload invalid UTF-8", lambda c: signed(c.key, b'{"sub": "mall\xffory", "jti": 1}'), "42804"),
    Case("header invalid UTF-8",
         lambda c: compact(b'{"alg": "EdDSA", "x": "\xc3"}', json.dumps(claims()).encode(), b"x"),
         "42804"),
    Case("duplicate claim names",
         lambda c: signed(c.key, b'{"jti": %d, "sub": "alice", "sub": "mallory"}' % next_jti()), "42804"),
    Case("duplicate header names (alg none first)",
         lambda c: compact(b'{"alg": "none", "alg": "EdDSA"}', json.dumps(claims()).encode(), b"x"),
         "42804"),
    Case("deeply nested JSON payload", lambda c: signed(c.key, nested(5000)), "42804"),
    Case("deeply nested JSON header",
         lambda c: compact(b"[" * 6000 + b"]" * 6000, json.dumps(claims()).encode(), b"x"), "42804"),
    # Claims of the wrong type (RFC 7519 4.1.4, 4.1.5: NumericDate).
    Case("exp a string", lambda c: signed(c.key, claims(exp=str(int(time.time()) + 900))), "42804"),
    Case("exp a boolean", lambda c: signed(c.key, claims(exp=True)), "42804"),
    Case("exp null", lambda c: signed(c.key, claims(exp=None)), "42804"),
    Case("exp 1e400",
         lambda c: signed(c.key, b'{"sub": "mallory", "jti": %d, "exp": 1e400}' % next_jti()), "42804"),
    Case("exp NaN", lambda c: signed(c.key, b'{"sub": "mallory", "jti": %d, "exp": NaN}' % next_jti()),
         "42804"),
    Case("exp Infinity",
         lambda c: signed(c.key, b'{"sub": "mallory", "jti": %d, "exp": Infinity}' % next_jti()), "42804"),
    Case("exp beyond int64", lambda c: signed(c.key, claims(exp=2**64)), "42804"),
    Case("nbf a string", lambda c: signed(c.key, claims(nbf=str(int(time.time())))), "42804"),
    Case("nbf a boolean", lambda c: signed(c.key, claims(nbf=False)), "42804"),
    Case("nbf null", lambda c: signed(c.key, claims(nbf=None)), "42804"),
    Case("jti a float", lambda c: signed(c.key, claims(jti=float(next_jti()))), "42804"),
    # jti replay and rollback: accepted before, then the session ended.
    Case("jti replay of an earlier token", lambda c: c.accepted[0], "23514", history=2),
    Case("jti rollback (fresh token, older jti)",
         lambda c: signed(c.key, claims(jti=json.loads(unb64(c.accepted[-1].split(".")[1]))["jti"] - 1)),
         "23514", history=1),
    Case("jti equal to the last one, other claims",
         lambda c: signed(c.key, claims(jti=json.loads(unb64(c.accepted[-1].split(".")[1]))["jti"])),
         "23514", history=1),
    # Audience and issuer from the startup packet.
    Case("aud mismatch", lambda c: signed(c.key, claims(aud="other", iss=ISSUER)), "23514",
         options=AUD_ISS),
    Case("aud missing", lambda c: signed(c.key, claims(iss=ISSUER)), "23514", options=AUD_ISS),
    Case("aud list without ours", lambda c: signed(c.key, claims(aud=["x", "apps"], iss=ISSUER)),
         "23514", options=AUD_ISS),
    Case("iss mismatch", lambda c: signed(c.key, claims(aud=AUDIENCE, iss=ISSUER + ".evil")), "23514",
         options=AUD_ISS),
    Case("iss missing", lambda c: signed(c.key, claims(aud=AUDIENCE)), "23514", options=AUD_ISS),
    # Size, checked before anything is parsed.
    Case("over-size signed token", lambda c: signed(c.key, claims(pad="x" * 17000)), "54000"),
    Case("over-size garbage (1 MiB)", lambda c: "A" * (1 << 20), "54000"),
]

assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def rsa_attacker(keys):
    return generate_key("RS256", kid=keys["RS256"].get("kid"))


def valid_claims(case):
    return {"aud": AUDIENCE, "iss": ISSUER} if case.options else {}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_token_is_refused_and_the_backend_serves_on(pg, keys, rsa_attacker, case):
    key = keys[case.alg]
    attacker = rsa_attacker if case.alg == "RS256" else generate_key(case.alg, kid=key.get("kid"))
    ctx = Ctx(key, attacker)
    with pg.connect(jwk=public_jwk(key), options=case.options or None) as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        for _ in range(case.history):
            ctx.accepted.append(mint(key, sub="alice", claims=valid_claims(case)))
            conn.execute("select auth.jwt_session_init(%s)", [ctx.accepted[-1]])
        conn.execute("reset pg_session_jwt.jwt")
        token = case.build(ctx)

        state, message = error(conn, "select auth.jwt_session_init(%s)", [token])
        assert state == case.sqlstate, message
        assert "Traceback" not in message and (len(token) < 8 or token not in message)

        # Same backend, still serving, and no identity: neither from the refused call nor
        # from the token put straight into the setting the getters read.
        assert conn.execute("select 1, pg_backend_pid()").fetchone() == (1, pid)
        assert conn.execute("select auth.user_id(), auth.session() = 'null'::jsonb").fetchone() == (
            None, True)
        conn.execute("select set_config('pg_session_jwt.jwt', %s, false)", [token])
        assert identity(conn) is None and identity(conn, "auth.session()->>'sub'") is None
        conn.execute("reset pg_session_jwt.jwt")

        # A valid token (newer jti) still opens a session in the same backend.
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice", claims=valid_claims(case))])
        assert conn.execute("select auth.user_id(), pg_backend_pid()").fetchone() == ("alice", pid)


def test_hostile_tokens_in_a_transaction_leave_it_usable(pg, keys, rsa_attacker):
    """Inside one transaction block, each refusal rolls back to a savepoint only: the
    block goes on, and nothing it saw ever carried an identity."""
    key = keys["EdDSA"]
    ctx = Ctx(key, generate_key("EdDSA", kid=key.get("kid")))
    plain = [c for c in CASES if not c.options and not c.history and c.alg == "EdDSA"]
    with pg.connect(jwk=public_jwk(key), autocommit=False) as conn:
        conn.execute("select 1")   # open the block, so attempt() uses savepoints
        for case in plain:
            result = attempt(conn, "select auth.jwt_session_init(%s)", [case.build(ctx)])
            assert isinstance(result, psycopg.Error) and result.sqlstate == case.sqlstate, case.name
        assert conn.execute("select auth.user_id()").fetchone() == (None,)
        conn.rollback()
