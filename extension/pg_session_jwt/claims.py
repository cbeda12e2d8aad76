"""Checks on verified claims: jti, nbf, exp (with leeway), iss and aud.

Numeric claims must be JSON integers in the signed 64-bit range, as in the original
extension: a float, a string or a boolean (Python's bool is an int) is refused, not
coerced.
"""

from .errors import CHECK_VIOLATION, DATATYPE_MISMATCH, JwtError

_INT64 = range(-2**63, 2**63)


def _is_int64(value):
    return type(value) is int and value in _INT64


def check(claims, settings, now, last_jti):
    """The `jti` to remember (None when not required) if `claims` pass at time `now`."""
    jti = None
    if settings.require_jti:
        jti = claims.get("jti")
        if not _is_int64(jti):
            raise JwtError(DATATYPE_MISMATCH, "JWT payload must contain a valid 'jti' (JWT ID)")
        if jti <= last_jti:
            raise JwtError(CHECK_VIOLATION, "Token ID must be strictly monotonically increasing.")
    leeway = settings.leeway
    if "nbf" in claims:
        nbf = claims["nbf"]
        if not _is_int64(nbf):
            raise JwtError(DATATYPE_MISMATCH, "'nbf' (Not Before) must be an integer "
                           "representing seconds since unix epoch")
        if now + leeway < nbf:
            raise JwtError(CHECK_VIOLATION, f"Token used before it is ready (nbf={nbf})")
    exp = expires(claims, leeway)
    if exp is not None and exp < now:
        raise JwtError(CHECK_VIOLATION, f"Token used after it has expired (exp={claims['exp']})")
    if settings.issuer and claims.get("iss") != settings.issuer:
        raise JwtError(CHECK_VIOLATION, "JWT issuer ('iss') does not match pg_session_jwt.issuer")
    if settings.audience and not _has_audience(claims.get("aud"), settings.audience):
        raise JwtError(CHECK_VIOLATION, "JWT audience ('aud') does not match pg_session_jwt.audience")
    return jti


def expires(claims, leeway):
    """`exp` plus `leeway`: the last moment the claims are good for (None without `exp`)."""
    if "exp" not in claims:
        return None
    exp = claims["exp"]
    if not _is_int64(exp):
        raise JwtError(DATATYPE_MISMATCH, "'exp' (Expiration) must be an integer representing "
                       "seconds since unix epoch")
    return exp + leeway


def _has_audience(aud, audience):
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and audience in aud
