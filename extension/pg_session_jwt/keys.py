"""Parse pg_session_jwt.jwk — one JWK or a JWKS `{"keys": [...]}` — into verifiers.

Only asymmetric public keys are accepted: the setting is readable by every user, so a
symmetric (`oct`) key or a private key there would let anyone mint tokens. Each key
is parsed once per backend and imports only what its type needs: Ed25519 goes through
the server's own libcrypto (libcrypto.py), EC and RSA through the matching `cryptography`
module, so a new connection does not pay for RSA when the issuer signs with Ed25519.

A key's `alg` member, when present, narrows what it verifies to that one algorithm;
`use` must be "sig" and `key_ops` must include "verify" when present.
"""

from . import libcrypto
from .encoding import b64url_decode, json_loads
from .errors import CHECK_VIOLATION, DATATYPE_MISMATCH, JwtError

# JWS algorithms this extension verifies, by key type (RFC 7518, RFC 8037).
EC_CURVES = {"P-256": ("ES256", 32, "SECP256R1", "SHA256"),
             "P-384": ("ES384", 48, "SECP384R1", "SHA384"),
             "P-521": ("ES512", 66, "SECP521R1", "SHA512")}
RSA_ALGS = {"RS256": "SHA256", "RS384": "SHA384", "RS512": "SHA512",
            "PS256": "SHA256", "PS384": "SHA384", "PS512": "SHA512"}
OKP_ALGS = ("EdDSA", "Ed25519")
ALGORITHMS = frozenset(OKP_ALGS) | {v[0] for v in EC_CURVES.values()} | set(RSA_ALGS)
MIN_RSA_BITS = 2048
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")


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
        raise JwtError(CHECK_VIOLATION, f"JWT 'kid'{shown} matches no key in pg_session_jwt.jwk "
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
            verifiers = _rsa(jwk, where)
        else:
            raise _unusable(f"{where} has kty {kty!r}: use an OKP (Ed25519), EC or RSA public key")
    except ValueError:
        # cryptography refuses points off the curve, bad exponents and the like.
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
    verify = libcrypto.verifier(x)
    if verify is None:
        verify = _okp_cryptography(x)
    return dict.fromkeys(OKP_ALGS, verify)


def _okp_cryptography(x):
    """Ed25519 through `cryptography`, where libcrypto.verifier() is not available."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = Ed25519PublicKey.from_public_bytes(x)

    def verify(data, signature):
        try:
            public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    return verify


def _ec(jwk, where):
    crv = jwk.get("crv")
    if crv not in EC_CURVES:
        raise _unusable(f"{where}: EC keys must have crv P-256, P-384 or P-521")
    alg, size, curve, hash_name = EC_CURVES[crv]
    x, y = _member(jwk, "x", where), _member(jwk, "y", where)
    if len(x) != size or len(y) != size:
        raise _unusable(f"{where}: {crv} coordinates are {size} bytes each")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    public = ec.EllipticCurvePublicKey.from_encoded_point(getattr(ec, curve)(), b"\x04" + x + y)
    ecdsa = ec.ECDSA(getattr(hashes, hash_name)())

    def verify(data, signature):
        # JWS carries r || s, fixed width (RFC 7518 3.4); cryptography wants DER.
        if len(signature) != 2 * size:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                   int.from_bytes(signature[size:], "big"))
        try:
            public.verify(der, data, ecdsa)
        except InvalidSignature:
            return False
        return True

    return {alg: verify}


def _rsa(jwk, where):
    n = int.from_bytes(_member(jwk, "n", where), "big")
    e = int.from_bytes(_member(jwk, "e", where), "big")
    if n.bit_length() < MIN_RSA_BITS:
        raise _unusable(f"{where}: RSA keys need at least {MIN_RSA_BITS} bits "
                        f"(this one has {n.bit_length()})")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    public = rsa.RSAPublicNumbers(e, n).public_key()

    def verifier(pad, hash_algorithm):
        def verify(data, signature):
            try:
                public.verify(signature, data, pad, hash_algorithm)
            except InvalidSignature:
                return False
            return True
        return verify

    verifiers = {}
    for alg, hash_name in RSA_ALGS.items():
        hash_algorithm = getattr(hashes, hash_name)()
        if alg.startswith("PS"):
            # RFC 7518 3.5: the salt is as long as the hash output.
            pad = padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size)
        else:
            pad = padding.PKCS1v15()
        verifiers[alg] = verifier(pad, hash_algorithm)
    return verifiers
