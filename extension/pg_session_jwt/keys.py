"""Parse pg_session_jwt.jwk — one JWK or a JWKS `{"keys": [...]}` — into verifiers.

Only asymmetric public keys are accepted: the setting is readable by every user, so a
symmetric (`oct`) key or a private key there would let anyone mint tokens. Each key is
parsed once per backend into verifiers over C libraries the server can load with ctypes:
Ed25519 through libsodium (libsodium.py), or libcrypto where libsodium is missing; EC and
RSA through the server's own OpenSSL 3 libcrypto (libcrypto.py). Nothing here imports
`cryptography`, whose import alone would cost a new connection more than its whole budget.
A key whose library cannot be loaded is refused with a message saying what to install.

A key's `alg` member, when present, narrows what it verifies to that one algorithm;
`use` must be "sig" and `key_ops` must include "verify" when present.
"""

from . import libsodium
from .encoding import b64url_decode, json_loads
from .errors import CHECK_VIOLATION, DATATYPE_MISMATCH, JwtError

# JWS algorithms this extension verifies, by key type (RFC 7518, RFC 8037).
EC_CURVES = {"P-256": ("ES256", 32, "SHA256"),
             "P-384": ("ES384", 48, "SHA384"),
             "P-521": ("ES512", 66, "SHA512")}
RSA_ALGS = {"RS256": "SHA256", "RS384": "SHA384", "RS512": "SHA512",
            "PS256": "SHA256", "PS384": "SHA384", "PS512": "SHA512"}
OKP_ALGS = ("EdDSA", "Ed25519")
ALGORITHMS = frozenset(OKP_ALGS) | {v[0] for v in EC_CURVES.values()} | set(RSA_ALGS)
MIN_RSA_BITS = 2048
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")

# Ed25519 (RFC 8032): the field prime, and the y coordinates (mod p) of the eight points of
# small order, whose keys verify forged signatures under a cofactorless check like
# OpenSSL's: for the identity, R = [S]B passes for every message. Checked in the unit tests.
ED25519_P = 2**255 - 19
ED25519_SMALL_ORDER_Y = frozenset((
    0, 1, ED25519_P - 1,
    0x05fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826,
    0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7))
NO_LIBCRYPTO = ("OpenSSL 3's libcrypto (libcrypto.so.3) could not be loaded; install the "
                "image's libssl3 package, which PostgreSQL itself needs")


def _libcrypto():
    # Imported on first need: a backend whose issuer signs with Ed25519 (libsodium) then
    # loads neither libcrypto.py nor der.py, two fewer modules on its cold path.
    from . import libcrypto
    return libcrypto


class UnknownKid(JwtError):
    """A token's `kid` names no key of the set: for a JWKS URL, maybe a key the issuer has
    just rotated in (session.Backend then refreshes the set, rate-limited, and retries)."""


def _unusable(reason):
    return JwtError(DATATYPE_MISMATCH, f"pg_session_jwt.jwk is unusable: {reason}")


class Key:
    """One public key: its `kid` and a verify function per JWS algorithm it allows."""

    __slots__ = ("kid", "verifiers")

    def __init__(self, kid, verifiers):
        self.kid = kid
        self.verifiers = verifiers


class KeySet:
    """The keys of pg_session_jwt.jwk, chosen by a token's `kid` header."""

    __slots__ = ("keys", "by_kid")

    def __init__(self, keys):
        self.keys = keys
        self.by_kid = {key.kid: key for key in keys if key.kid is not None}

    def select(self, kid):
        """The key for a token whose header has `kid` (None when absent)."""
        key = self.by_kid.get(kid) if kid is not None else None
        if key is not None:
            return key
        if len(self.keys) == 1 and (kid is None or self.keys[0].kid is None):
            return self.keys[0]
        if kid is None:
            raise JwtError(CHECK_VIOLATION, "JWT header has no 'kid' and pg_session_jwt.jwk "
                           "holds several keys: the issuer must name its key")
        shown = f" {kid!r}" if len(kid) <= 64 else ""
        raise UnknownKid(CHECK_VIOLATION, f"JWT 'kid'{shown} matches no key in pg_session_jwt.jwk "
                       "(unknown key: was the key rotated without updating the setting?)")


def parse(text):
    """The KeySet of the JSON text `text` (a JWK or a JWKS); JwtError 42804 when unusable."""
    try:
        value = json_loads(text)
    except ValueError as exc:
        raise _unusable(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _unusable("expected a JSON object (a JWK, or a JWKS with \"keys\")")
    if "keys" in value and "kty" not in value:
        members = value["keys"]
        if not isinstance(members, list) or not members:
            raise _unusable("\"keys\" must be a non-empty array of JWKs")
        keys = [_key(member, f"key {i}") for i, member in enumerate(members)]
        kids = [key.kid for key in keys]
        if len(keys) > 1 and None in kids:
            raise _unusable("every key of a JWKS with several keys needs a \"kid\"")
        if len(set(kids)) != len(kids):
            raise _unusable("two keys of the JWKS have the same \"kid\"")
        return KeySet(keys)
    return KeySet([_key(value, "the key")])


def _key(jwk, where):
    if not isinstance(jwk, dict):
        raise _unusable(f"{where} is not a JSON object")
    kty = jwk.get("kty")
    if kty == "oct":
        raise _unusable("symmetric keys (kty \"oct\") are refused: every user can read this "
                        "setting and could sign tokens with it; configure the issuer's public key")
    private = [name for name in _PRIVATE_MEMBERS if name in jwk]
    if private:
        raise _unusable(f"{where} has private key members ({', '.join(private)}): "
                        "configure only the public key")
    if "use" in jwk and jwk["use"] != "sig":
        raise _unusable(f"{where} has \"use\" other than \"sig\"")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise _unusable(f"{where} has \"key_ops\" without \"verify\"")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _unusable(f"{where} has a \"kid\" that is not a string")
    try:
        if kty == "OKP":
            verifiers = _okp(jwk, where)
        elif kty == "EC":
            verifiers = _ec(jwk, where)
        elif kty == "RSA":
            verifiers = _rsa(jwk, where, jwk.get("alg"))
        else:
            raise _unusable(f"{where} has kty {kty!r}: use an OKP (Ed25519), EC or RSA public key")
    except ValueError:
        # libcrypto refuses points off the curve and keys it cannot use.
        raise _unusable(f"{where} is not a valid {kty} public key") from None
    alg = jwk.get("alg")
    if alg is not None:
        if alg not in verifiers:
            raise _unusable(f"{where} has \"alg\" {alg!r}, which a {kty} key of this kind "
                            f"cannot verify (allowed: {', '.join(verifiers)})")
        verifiers = {alg: verifiers[alg]}
    return Key(kid, verifiers)


def _member(jwk, name, where):
    value = jwk.get(name)
    if not isinstance(value, str):
        raise _unusable(f"{where} lacks the \"{name}\" member")
    try:
        return b64url_decode(value)
    except ValueError as exc:
        raise _unusable(f"{where} member \"{name}\" is {exc}") from None


def _okp(jwk, where):
    if jwk.get("crv") != "Ed25519":
        raise _unusable(f"{where}: OKP keys must have crv \"Ed25519\"")
    x = _member(jwk, "x", where)
    if len(x) != 32:
        raise _unusable(f"{where}: an Ed25519 \"x\" is 32 bytes")
    y = int.from_bytes(x, "little") & ((1 << 255) - 1)
    if y >= ED25519_P:
        raise _unusable(f"{where}: its Ed25519 \"x\" is not canonically encoded (y >= 2^255-19)")
    if y in ED25519_SMALL_ORDER_Y:
        raise _unusable(f"{where}: its Ed25519 \"x\" is a point of small order, which would "
                        "accept forged signatures; configure the issuer's real public key")
    verify = libsodium.verifier(x)
    if verify is not None:
        return dict.fromkeys(OKP_ALGS, verify)
    libcrypto = _libcrypto()
    verify = libcrypto.ed25519_verifier(x)
    if verify is None:
        if libcrypto.library() is None:
            raise _unusable(f"{where} needs libsodium (Debian's libsodium23 or libsodium26) "
                           f"or {NO_LIBCRYPTO}")
        raise ValueError("libcrypto refused the key")
    return dict.fromkeys(OKP_ALGS, verify)


def _ec(jwk, where):
    crv = jwk.get("crv")
    if crv not in EC_CURVES:
        raise _unusable(f"{where}: EC keys must have crv P-256, P-384 or P-521")
    alg, size, hash_name = EC_CURVES[crv]
    x, y = _member(jwk, "x", where), _member(jwk, "y", where)
    if len(x) != size or len(y) != size:
        raise _unusable(f"{where}: {crv} coordinates are {size} bytes each")
    verify = _libcrypto().ec_verifier(crv, x, y, hash_name, size)
    if verify is None:
        raise _unusable(f"{where} needs {NO_LIBCRYPTO}")
    return {alg: verify}


def _rsa(jwk, where, alg):
    n_bytes, e_bytes = _member(jwk, "n", where), _member(jwk, "e", where)
    n, e = int.from_bytes(n_bytes, "big"), int.from_bytes(e_bytes, "big")
    if n.bit_length() < MIN_RSA_BITS:
        raise _unusable(f"{where}: RSA keys need at least {MIN_RSA_BITS} bits "
                        f"(this one has {n.bit_length()})")
    if e < 3 or e >= n or not e & 1:
        # The bounds `cryptography` enforces; OpenSSL would take some of these (e = 1 makes
        # every signature computable by anyone) and no real key has them.
        raise _unusable(f"{where} is not a valid RSA public key: its exponent \"e\" must be "
                        "odd, at least 3 and below n (issuers publish e = 65537, \"AQAB\"); "
                        "check that the key was copied whole")
    # A key naming its algorithm gets only that verifier: five fewer OpenSSL contexts to
    # prepare on a new connection.
    wanted = {alg: RSA_ALGS[alg]} if alg in RSA_ALGS else RSA_ALGS
    verifiers = _libcrypto().rsa_verifiers(n_bytes, e_bytes, wanted)
    if verifiers is None:
        raise _unusable(f"{where} needs {NO_LIBCRYPTO}")
    return verifiers
