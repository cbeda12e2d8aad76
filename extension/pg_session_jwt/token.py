"""Compact JWS tokens: size limit, strict split and decoding, header checks, signature.

Everything a token says about how to verify it is distrusted: `alg` must be one of the
asymmetric algorithms the chosen key allows, and headers that would make a verifier fetch
or trust key material from the token itself (`jwk`, `jku`, `x5u`, `x5c`) or understand an
extension (`crit`) are refused. JWE (five parts) is refused before anything is decoded.
The payload is parsed only after its signature has verified, except with several issuers
(PG_SESSION_JWT_ISSUERS), where its `iss` picks the keys: it is then parsed first, by the
same strict parser, and nothing in it is used before the signature has verified.
"""

from .encoding import b64url_decode, json_loads
from .errors import CHECK_VIOLATION, DATATYPE_MISMATCH, PROGRAM_LIMIT_EXCEEDED, JwtError
from .keys import ALGORITHMS

_EMBEDDED_KEY_HEADERS = ("jwk", "jku", "x5u", "x5c")

# An issuer sends the same protected header with every token, so the last header that
# passed check_header is remembered by its exact base64url text: a token repeating it
# skips decoding, parsing and checking it again (about 1.5 us of a warm call). Any other
# text, even one decoding to the same JSON, is checked in full; refusals are not kept.
_last_header = (None, None, None)   # (base64url text, alg, kid)


def _invalid(reason):
    return JwtError(DATATYPE_MISMATCH, f"invalid JWT encoding: {reason}")


def _unparsable(component, reason):
    return JwtError(DATATYPE_MISMATCH, f"could not parse JWT component ({component}): {reason}")


def _shown(value):
    """`value` quoted for a message when it is a short string, else nothing."""
    return f" {value!r}" if isinstance(value, str) and len(value) <= 32 else ""


def verify(token, keyset, max_bytes):
    """The claims (dict) and payload JSON text of `token`, signed by a key of `keyset`."""
    parsed = split(token, max_bytes)
    check_signature(parsed, keyset)
    return payload(parsed)


def split(token, max_bytes):
    """(signing input, alg, kid, payload bytes, signature) of `token`, its header checked."""
    if len(token) > max_bytes:
        # len() counts characters; a token is ASCII (checked next), so that is its size.
        raise JwtError(PROGRAM_LIMIT_EXCEEDED, f"JWT is longer than pg_session_jwt.max_token_bytes "
                       f"({max_bytes} bytes)")
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        raise _invalid("a compact JWS is ASCII") from None
    parts = raw.split(b".")
    if len(parts) == 5:
        raise JwtError(DATATYPE_MISMATCH, "invalid JWT encoding: encrypted tokens (JWE) are not "
                       "supported; send a signed token (JWS)")
    if len(parts) != 3:
        raise _invalid(f"expected 3 base64url parts separated by '.', found {len(parts)}")
    head, alg, kid = _last_header
    try:
        header_bytes = None if parts[0] == head else b64url_decode(parts[0])
        payload_bytes, signature = b64url_decode(parts[1]), b64url_decode(parts[2])
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    if header_bytes is not None:
        alg, kid = _header(parts[0], header_bytes)
    return raw[:len(parts[0]) + 1 + len(parts[1])], alg, kid, payload_bytes, signature


def check_signature(parsed, keyset):
    """Refuse the split token `parsed` unless a key of `keyset` verifies its signature."""
    signed, alg, kid, _, signature = parsed
    key = keyset.select(kid)
    verify_signature = key.verifiers.get(alg)
    if verify_signature is None:
        raise JwtError(CHECK_VIOLATION, f"JWT alg {alg!r} does not match the key in "
                       f"{keyset.label} (it verifies {', '.join(key.verifiers)})")
    if not verify_signature(signed, signature):
        raise JwtError(CHECK_VIOLATION, "invalid JWT signature")


def payload(parsed):
    """The claims (dict) and payload JSON text of the split token `parsed`."""
    try:
        text = parsed[3].decode("utf-8")
        claims = json_loads(text)
    except ValueError as exc:
        raise _unparsable("payload", exc) from None
    if not isinstance(claims, dict):
        raise _unparsable("payload", "not a JSON object")
    return claims, text


def _header(part, header_bytes):
    """(alg, kid) of the protected header `part` (base64url) decoded to `header_bytes`,
    checked in full and remembered."""
    global _last_header
    try:
        header = json_loads(header_bytes)
    except ValueError as exc:
        raise _unparsable("header", exc) from None
    if not isinstance(header, dict):
        raise _unparsable("header", "not a JSON object")
    alg = check_header(header)
    kid = header.get("kid")
    _last_header = (part, alg, kid)
    return alg, kid


def check_header(header):
    """The `alg` of a JWS protected header that passes every check."""
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise JwtError(DATATYPE_MISMATCH, "invalid JWT header: 'alg' is missing or not a string")
    if alg.lower() == "none":
        raise JwtError(DATATYPE_MISMATCH, "invalid JWT header: alg 'none' is refused; tokens "
                       "must be signed")
    if alg not in ALGORITHMS:
        raise JwtError(DATATYPE_MISMATCH, f"invalid JWT header: alg{_shown(alg)} is not supported "
                       f"(supported: {', '.join(sorted(ALGORITHMS))})")
    if "crit" in header:
        raise JwtError(DATATYPE_MISMATCH, "invalid JWT header: 'crit' is refused (no JWS "
                       "extensions are supported)")
    embedded = [name for name in _EMBEDDED_KEY_HEADERS if name in header]
    if embedded:
        raise JwtError(DATATYPE_MISMATCH, f"invalid JWT header: {', '.join(embedded)} refused; "
                       "keys come only from pg_session_jwt.jwk, never from the token")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JwtError(DATATYPE_MISMATCH, "invalid JWT header: 'kid' is not a string")
    return alg
