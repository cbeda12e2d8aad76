"""Property-based fuzzing of the verification core: `session.Backend.verify`, which
is what `auth.jwt_session_init()` runs — size limit, strict decoding, header checks,
signature, then the claim checks — with audience and issuer configured.

Properties, over ~10,000 generated tokens in four families (mutations of genuine tokens;
headers and claims re-signed with a key that is not the configured one; arbitrary claims
signed by the configured key; random structures):

- a token is accepted only if it was signed by the configured key, its header is one the
  issuer would send and its claims pass an independent oracle (`valid_claims`); for tokens
  the configured key signed, the oracle and the extension agree both ways;
- the only exception ever raised is the package's JwtError, with a known SQLSTATE.

Marked `stress`. PG_SESSION_JWT_STRESS_SCALE, the load tests' variable, sets the size:
`full` (the default, `make stress`) runs 10,000 examples, `ci` (what CI sets) 1,000. The
small hypothesis tests in test_extension_token.py stay in the ordinary suite.
"""

import json
import os
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pg_session_jwt import errors, keys
from pg_session_jwt.errors import JwtError
from pg_session_jwt.session import Backend

from devtools.jwt import generate_key, public_jwk
from tests.support import load
from tests.support.jws import b64, unb64

pytestmark = pytest.mark.stress

NOW = int(time.time())
LEEWAY = 60
AUDIENCE, ISSUER = "app", "https://issuer.example"
SQLSTATES = {value for name, value in vars(errors).items() if name.isupper()}
INT64 = range(-2**63, 2**63)


# Examples per PG_SESSION_JWT_STRESS_SCALE name (the variable of tests/support/load.py).
EXAMPLE_FACTOR = {"ci": 0.1, "full": 1.0}


def example_factor():
    """The share of the full example counts to run at this PG_SESSION_JWT_STRESS_SCALE."""
    load.scale(os.environ)   # refuses an unknown name with the message the load tests give
    name = (os.environ.get(load.SCALE_VARIABLE) or load.DEFAULT_SCALE).strip().lower()
    return EXAMPLE_FACTOR[name]


def examples(full):
    return settings(max_examples=max(20, int(full * example_factor())), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class Signer:
    """Raw signing with `cryptography` (fast enough for thousands of examples)."""

    def __init__(self, key):
        from cryptography.hazmat.primitives import serialization

        self.jwk = key
        self.alg = key.get("alg")
        self.kid = key.get("kid")
        self.private = serialization.load_pem_private_key(
            key.export_to_pem(private_key=True, password=None), password=None)

    def sign(self, data):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        if self.alg == "EdDSA":
            return self.private.sign(data)
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def token(self, payload, header=None):
        """A compact JWS over raw `payload` bytes (or a dict) under `header` (dict or bytes)."""
        if header is None:
            header = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        header = json.dumps(header).encode() if isinstance(header, dict) else header
        payload = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        signing_input = f"{b64(header)}.{b64(payload)}"
        return f"{signing_input}.{b64(self.sign(signing_input.encode()))}"


# The configured key, one of another type, and an attacker's key with the same kid.
REAL = Signer(generate_key("EdDSA", kid="issuer-2026"))
ATTACKERS = [Signer(generate_key("EdDSA", kid="issuer-2026")),
             Signer(generate_key("ES256", kid="issuer-2026")), Signer(generate_key("EdDSA"))]
KEYSET = keys.parse(public_jwk(REAL.jwk))


def good_claims(jti=1, **extra):
    return {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": NOW, "exp": NOW + 900, "jti": jti,
            **extra}


GENUINE = [REAL.token(good_claims(jti=n, o={"id": n})) for n in range(1, 5)]


def verify(token):
    """The claims if the core accepts `token` in a fresh backend, else None (JwtError)."""
    backend = Backend()
    backend.configure({"jwk": public_jwk(REAL.jwk), "audience": AUDIENCE, "issuer": ISSUER,
                       "leeway": str(LEEWAY)})
    backend._keys = KEYSET  # parsed once: the key is not what is being fuzzed
    try:
        session = backend.verify(token, NOW)
    except JwtError as exc:
        assert exc.sqlstate in SQLSTATES and exc.message, exc
        return None
    return json.loads(session.claims_json)


def _int64(value):
    return type(value) is int and value in INT64


def valid_claims(claims):
    """An independent statement of what the extension must accept (RFC 7519 + its rules)."""
    if not isinstance(claims, dict) or not _int64(claims.get("jti")) or claims["jti"] <= 0:
        return False
    for name in ("nbf", "exp"):
        if name in claims and not _int64(claims[name]):
            return False
    if "nbf" in claims and claims["nbf"] > NOW + LEEWAY:
        return False
    if "exp" in claims and claims["exp"] + LEEWAY < NOW:
        return False
    aud = claims.get("aud")
    return claims.get("iss") == ISSUER and (aud == AUDIENCE or isinstance(aud, list) and AUDIENCE in aud)


# --- 1. mutations of genuine tokens ------------------------------------------------------

def _reencode(part):
    """The same JSON value with other whitespace and key order: same meaning, other bytes."""
    try:
        value = json.loads(unb64(part))
    except ValueError:
        return part
    if isinstance(value, dict):
        value = dict(reversed(list(value.items())))
    return b64(json.dumps(value, indent=1).encode())


@st.composite
def mutation(draw, token):
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "swap", "mix", "reencode",
                                 "pad", "dup", "bitflip-decoded", "alphabet"]))
    parts = token.split(".")
    if kind == "flip" and token:
        i = draw(st.integers(0, len(token) - 1))
        return token[:i] + draw(st.characters(codec="utf-8")) + token[i + 1:]
    if kind == "insert":
        i = draw(st.integers(0, len(token)))
        return token[:i] + draw(st.text(min_size=1, max_size=4)) + token[i:]
    if kind == "delete" and token:
        i = draw(st.integers(0, len(token) - 1))
        return token[:i] + token[i + draw(st.integers(1, 8)):]
    if kind == "truncate":
        return token[:draw(st.integers(0, max(0, len(token) - 1)))]
    if kind == "swap" and len(parts) == 3:
        i, j = draw(st.permutations(range(3)))[:2]
        parts[i], parts[j] = parts[j], parts[i]
        return ".".join(parts)
    if kind == "mix" and len(parts) == 3:
        others = [draw(st.sampled_from(GENUINE)).split(".") for _ in range(3)]
        return ".".join(others[i][i] if draw(st.booleans()) else parts[i] for i in range(3))
    if kind == "reencode" and len(parts) == 3:
        i = draw(st.integers(0, 1))
        parts[i] = _reencode(parts[i])
        return ".".join(parts)
    if kind == "pad" and len(parts) == 3:
        i = draw(st.integers(0, 2))
        parts[i] += draw(st.sampled_from(["=", "==", " ", "\n", "\t", "\x00"]))
        return ".".join(parts)
    if kind == "dup":
        return ".".join(parts + draw(st.lists(st.sampled_from(parts), min_size=1, max_size=3)))
    if kind == "bitflip-decoded" and len(parts) == 3:
        i = draw(st.integers(0, 2))
        try:
            raw = bytearray(unb64(parts[i]))
        except ValueError:   # an earlier mutation broke this part already
            return token
        if raw:
            j = draw(st.integers(0, len(raw) - 1))
            raw[j] ^= 1 << draw(st.integers(0, 7))
        parts[i] = b64(bytes(raw))
        return ".".join(parts)
    if kind == "alphabet":
        return token.replace("-", "+").replace("_", "/")
    return token + "."


@st.composite
def mutated_tokens(draw):
    token = draw(st.sampled_from(GENUINE))
    for _ in range(draw(st.integers(1, 3))):
        token = draw(mutation(token))
    return token


def test_genuine_tokens_are_accepted():
    """The properties below only look at refusals; this one shows acceptance still works."""
    assert [verify(token)["jti"] for token in GENUINE] == [1, 2, 3, 4]


@examples(4000)
@given(mutated_tokens())
def test_mutated_genuine_tokens_are_accepted_only_when_unchanged(token):
    claims = verify(token)
    if claims is not None:
        assert token in GENUINE, token


# --- 2. headers and claims substituted, re-signed with a key that is not the configured one

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
ALGS = st.sampled_from(["EdDSA", "Ed25519", "ES256", "RS256", "PS256", "HS256", "none", "NONE", "None",
                        "", "eddsa", "ES256K", "EdDSA ", None])


@st.composite
def headers(draw):
    header = {"alg": draw(ALGS), "kid": draw(st.sampled_from(["issuer-2026", "other", "", None, 7])),
              "typ": "JWT"}
    for name in draw(st.lists(st.sampled_from(["crit", "jwk", "jku", "x5u", "x5c", "b64", "cty", "zip",
                                               "x"]), max_size=2)):
        header[name] = draw(JSON_VALUES)
    if draw(st.booleans()):
        header = {k: v for k, v in header.items() if v is not None}
    return header


@st.composite
def claim_sets(draw):
    times = st.one_of(st.integers(NOW - 10_000, NOW + 10_000), st.integers(), JSON_SCALARS,
                      st.just(2**63), st.just(-2**63 - 1), st.just(NOW + 0.5))
    claims = {}
    fields = {"sub": JSON_VALUES, "jti": st.one_of(st.integers(-5, 2**64), JSON_SCALARS),
              "exp": times, "nbf": times, "iat": times,
              "aud": st.one_of(st.sampled_from([AUDIENCE, "other", [AUDIENCE], ["x", AUDIENCE], [], ""]),
                               JSON_VALUES),
              "iss": st.one_of(st.sampled_from([ISSUER, ISSUER + "/", "", ISSUER.upper()]), JSON_VALUES)}
    for name, strategy in fields.items():
        if draw(st.integers(0, 9)) > 0:     # each claim present 90% of the time
            claims[name] = draw(strategy)
    return claims


@examples(2000)
@given(st.sampled_from(ATTACKERS), headers(), claim_sets())
def test_tokens_signed_by_another_key_are_never_accepted(attacker, header, claims):
    assert verify(attacker.token(claims, header)) is None


# --- 3. anything the configured key signs: accepted exactly when the claims are valid ----

@examples(2500)
@given(claim_sets(), st.sampled_from(["plain", "extra-header", "hostile-header", "raw"]), st.data())
def test_signed_by_the_configured_key_accepted_exactly_when_valid(claims, shape, data):
    header = {"alg": REAL.alg, "kid": REAL.kid, "typ": "JWT"}
    payload = claims
    expect = valid_claims(claims)
    if shape == "extra-header":
        header["cty"] = "JWT"
    elif shape == "hostile-header":
        header.update(data.draw(headers()))
        # The key's JWK names its alg ("EdDSA"), which narrows it to that one: a header naming
        # the fully-specified "Ed25519" (RFC 9864) instead is refused for this key.
        expect = expect and header.get("alg") == REAL.alg and header.get("kid") in (
            REAL.kid, None) and not {"crit", "jwk", "jku", "x5u", "x5c"} & set(header)
    elif shape == "raw":
        payload = data.draw(st.one_of(st.binary(max_size=60),
                                      JSON_VALUES.map(lambda v: json.dumps(v).encode())))
        try:
            expect = valid_claims(json.loads(payload))
        except ValueError:
            expect = False
    accepted = verify(REAL.token(payload, header))
    assert (accepted is not None) == expect, (header, payload)


# --- 4. random structures ------------------------------------------------------------------

PART = st.one_of(st.binary(max_size=40).map(b64), st.text(max_size=20), JSON_VALUES.map(
    lambda v: b64(json.dumps(v).encode())), st.sampled_from(GENUINE[0].split(".")))


@examples(1500)
@given(st.one_of(st.text(max_size=200),
                 st.lists(PART, min_size=1, max_size=6).map(".".join),
                 st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_random_structures_are_refused_with_a_jwt_error(token):
    # Three parts of GENUINE[0] drawn in their order are that genuine token again.
    assume(token not in GENUINE)
    assert verify(token) is None
