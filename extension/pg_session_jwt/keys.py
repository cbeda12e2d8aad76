"""Parse pg_session_jwt.jwk — one JWK or a JWKS `{"keys": [...]}` — into verifiers.

Only asymmetric public keys are accepted: the setting is readable by every user, so a
symmetric (`oct`) key or a private key there would let anyone mint tokens. Each key is
parsed once per backend into verifiers over C libraries the server can load (ffi.py):
Ed25519 through libsodium (libsodium.py), or libcrypto where libsodium is missing; EC and
RSA through the server's own OpenSSL 3 libcrypto (libcrypto.py). Nothing here imports
`cryptography`, whose import alone would cost a new connection more than its whole budget.
A key whose library cannot be loaded is refused with a message saying what to install.

A key's `alg` member, when present, narrows what it verifies to that one algorithm. Of a
set, a key that cannot verify (`use` other than "sig", `key_ops` without "verify", an
encryption or unknown `alg`, another key type or curve, RSA under 2048 bits) is skipped
with its reason, as PyJWT and jose do: identity providers publish such keys beside their
signing keys (Keycloak's RSA-OAEP key). Members this extension does not use (`x5c`,
`x5t`, `issuer`, ...) are ignored.
"""

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
LABEL = "pg_session_jwt.jwk"
NO_LIBCRYPTO = ("OpenSSL 3's libcrypto (libcrypto.so.3) could not be loaded; install the "
                "image's libssl3 package, which PostgreSQL itself needs")


# The verification libraries are imported on first need, so that a backend loads only what
# its keys use: each module is a file that a new backend opens and reads (on a container's
# FUSE-backed root file system, 0.15-0.65 ms each). An Ed25519 issuer's backends
# load neither libcrypto.py nor der.py, an EC or RSA issuer's not libsodium.py.
def _libcrypto():
    from . import libcrypto
    return libcrypto


def _libsodium():
    from . import libsodium
    return libsodium


class UnknownKid(JwtError):
    """A token's `kid` names no key of the set: for a JWKS URL, maybe a key the issuer has
    just rotated in (session.Backend then refreshes the set, rate-limited, and retries)."""


class Skipped(Exception):
    """One key of a set that cannot verify a signature this extension supports; `reason`
    reads after the key's name ("key 1 (kid 'x') is an encryption key ...")."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _unusable(reason, label=LABEL):
    return JwtError(DATATYPE_MISMATCH, f"{label} is unusable: {reason}")


class Key:
    """One public key: its `kid` and a verify function per JWS algorithm it allows."""

    __slots__ = ("kid", "verifiers")

    def __init__(self, kid, verifiers):
        self.kid = kid
        self.verifiers = verifiers


class KeySet:
    """The usable keys of a JWK or JWKS, chosen by a token's `kid` header, and the keys of
    the set that were skipped, with the reason (so a token naming one is told why)."""

    __slots__ = ("keys", "by_kid", "skipped", "label")

    def __init__(self, keys, skipped=(), label=LABEL):
        self.keys = keys
        self.by_kid = {key.kid: key for key in keys if key.kid is not None}
        self.skipped = tuple(skipped)     # (kid or None, reason), in document order
        self.label = label                # what the messages call the set

    def skipped_text(self):
        """The skipped keys for one LOG line: "kid 'a' (reason); kid 'b' (reason)"."""
        return "; ".join(f"{_name(kid)} {reason}" for kid, reason in self.skipped)

    def select(self, kid):
        """The key for a token whose header has `kid` (None when absent)."""
        key = self.by_kid.get(kid) if kid is not None else None
        if key is not None:
            return key
        if len(self.keys) == 1 and (kid is None or self.keys[0].kid is None):
            return self.keys[0]
        if kid is None:
            raise JwtError(CHECK_VIOLATION, f"JWT header has no 'kid' and {self.label} "
                           "holds several keys: the issuer must name its key")
        shown = f" {kid!r}" if len(kid) <= 64 else ""
        for skipped_kid, reason in self.skipped:
            if skipped_kid == kid:
                raise JwtError(CHECK_VIOLATION, f"JWT 'kid'{shown} {reason}: {self.label} "
                               "holds it but skips it, as it cannot verify a token")
        hint = ("was the key rotated without updating the setting?" if self.label == LABEL
                else "the issuer does not publish it; its set is fetched again at most once "
                "per refresh interval")
        raise UnknownKid(CHECK_VIOLATION, f"JWT 'kid'{shown} matches no key in {self.label} "
                         f"(unknown key: {hint})")


def _name(kid):
    return "key without kid" if kid is None else f"kid {kid!r}" if len(kid) <= 64 else "a key"


def parse(text, label=LABEL):
    """The KeySet of the JSON text `text` (a JWK or a JWKS); JwtError 42804 when unusable.

    Of a JWKS, the keys that cannot verify a supported signature are skipped (an encryption
    key, another algorithm, curve or key type, a short RSA key, a malformed key): identity
    providers publish such keys beside their signing keys. The whole document is refused
    when no usable key is left, and when any key is symmetric or private: a provider that
    publishes one is misconfigured or compromised, and this setting is readable by all."""
    try:
        value = json_loads(text)
    except ValueError as exc:
        raise _unusable(f"not valid JSON ({exc})", label) from None
    if not isinstance(value, dict):
        raise _unusable("expected a JSON object (a JWK, or a JWKS with \"keys\")", label)
    if "keys" in value and "kty" not in value:
        members = value["keys"]
        if not isinstance(members, list) or not members:
            raise _unusable("\"keys\" must be a non-empty array of JWKs", label)
        for i, member in enumerate(members):
            _refuse_secrets(member, f"key {i}", label)
        keys, skipped, why = [], [], []
        for i, member in enumerate(members):
            kid = member.get("kid") if isinstance(member, dict) else None
            kid = kid if isinstance(kid, str) else None
            try:
                keys.append(_key(member, label))
            except Skipped as exc:
                skipped.append((kid, exc.reason))
                why.append(f"key {i}{'' if kid is None else f' ({_name(kid)})'} {exc.reason}")
        if not keys:
            raise _unusable("no key of the JWKS can verify a supported signature: "
                            + "; ".join(why), label)
        kids = [key.kid for key in keys]
        if len(keys) > 1 and None in kids:
            raise _unusable("every key of a JWKS with several keys needs a \"kid\"", label)
        if len(set(kids)) != len(kids):
            raise _unusable("two keys of the JWKS have the same \"kid\"", label)
        usable = set(kids)
        return KeySet(keys, [(kid, reason) for kid, reason in skipped if kid not in usable],
                      label)
    _refuse_secrets(value, "the key", label)
    try:
        return KeySet([_key(value, label)], (), label)
    except Skipped as exc:
        raise _unusable(f"the key {exc.reason}", label) from None


def _refuse_secrets(jwk, where, label):
    if not isinstance(jwk, dict):
        return
    if jwk.get("kty") == "oct":
        raise _unusable("symmetric keys (kty \"oct\") are refused: every user can read this "
                        "setting and could sign tokens with it; configure the issuer's public "
                        "key", label)
    private = [name for name in _PRIVATE_MEMBERS if name in jwk]
    if private:
        raise _unusable(f"{where} has private key members ({', '.join(private)}): "
                        "configure only the public key", label)


def _is_encryption_alg(alg):
    # JWE key management algorithms (RFC 7518 section 4).
    return (alg in ("RSA1_5", "dir") or alg.startswith(("RSA-OAEP", "ECDH-ES", "PBES2"))
            or alg.endswith("KW"))


def _key(jwk, label):
    if not isinstance(jwk, dict):
        raise Skipped("is not a JSON object")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Skipped("has a \"kid\" that is not a string")
    use = jwk.get("use")
    if use == "enc":
        raise Skipped("is an encryption key (\"use\": \"enc\")")
    if "use" in jwk and use != "sig":
        raise Skipped("has \"use\" other than \"sig\"")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise Skipped("has \"key_ops\" without \"verify\"")
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise Skipped("has an \"alg\" that is not a string")
    if alg is not None and _is_encryption_alg(alg):
        raise Skipped(f"is an encryption key (\"alg\": {alg!r})")
    kty = jwk.get("kty")
    try:
        if kty == "OKP":
            verifiers = _okp(jwk)
        elif kty == "EC":
            verifiers = _ec(jwk)
        elif kty == "RSA":
            verifiers = _rsa(jwk, alg)
        else:
            shown = repr(kty) if kty is None or isinstance(kty, str) and len(kty) <= 16 else "(no key type)"
            raise Skipped(f"has kty {shown}: use an OKP (Ed25519), EC or RSA public key")
    except ValueError:
        # libcrypto refuses points off the curve and keys it cannot use.
        raise Skipped(f"is not a valid {kty} public key") from None
    if alg is not None:
        if alg not in verifiers:
            shown = repr(alg) if len(alg) <= 16 else "(too long)"
            raise Skipped(f"has \"alg\" {shown}, which a {kty} key of this kind cannot verify "
                          f"(allowed: {', '.join(verifiers)})")
        verifiers = {alg: verifiers[alg]}
    return Key(kid, verifiers)


def _member(jwk, name):
    value = jwk.get(name)
    if not isinstance(value, str):
        raise Skipped(f"lacks the \"{name}\" member")
    try:
        return b64url_decode(value)
    except ValueError as exc:
        raise Skipped(f"has a member \"{name}\" that is {exc}") from None


def _okp(jwk):
    if jwk.get("crv") != "Ed25519":
        crv = jwk.get("crv")
        shown = repr(crv) if isinstance(crv, str) and len(crv) <= 16 else "(none)"
        raise Skipped(f"has crv {shown}: OKP keys must have crv \"Ed25519\"")
    x = _member(jwk, "x")
    if len(x) != 32:
        raise Skipped("is unusable: an Ed25519 \"x\" is 32 bytes")
    y = int.from_bytes(x, "little") & ((1 << 255) - 1)
    if y >= ED25519_P:
        raise Skipped("is unusable: its Ed25519 \"x\" is not canonically encoded (y >= 2^255-19)")
    if y in ED25519_SMALL_ORDER_Y:
        raise Skipped("is unusable: its Ed25519 \"x\" is a point of small order, which "
                          "would accept forged signatures; configure the issuer's real public key")
    verify = _libsodium().verifier(x)
    if verify is not None:
        return dict.fromkeys(OKP_ALGS, verify)
    libcrypto = _libcrypto()
    verify = libcrypto.ed25519_verifier(x)
    if verify is None:
        if libcrypto.library() is None:
            raise Skipped("needs libsodium (Debian's libsodium23 or libsodium26) "
                          f"or {NO_LIBCRYPTO}")
        raise ValueError("libcrypto refused the key")
    return dict.fromkeys(OKP_ALGS, verify)


def _ec(jwk):
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in EC_CURVES:
        shown = repr(crv) if isinstance(crv, str) and len(crv) <= 16 else "(none)"
        raise Skipped(f"has crv {shown}: EC keys must have crv P-256, P-384 or P-521")
    alg, size, hash_name = EC_CURVES[crv]
    x, y = _member(jwk, "x"), _member(jwk, "y")
    if len(x) != size or len(y) != size:
        raise Skipped(f"is unusable: {crv} coordinates are {size} bytes each")
    verify = _libcrypto().ec_verifier(crv, x, y, hash_name, size)
    if verify is None:
        raise Skipped(f"needs {NO_LIBCRYPTO}")
    return {alg: verify}


def _rsa(jwk, alg):
    n_bytes, e_bytes = _member(jwk, "n"), _member(jwk, "e")
    n, e = int.from_bytes(n_bytes, "big"), int.from_bytes(e_bytes, "big")
    if n.bit_length() < MIN_RSA_BITS:
        raise Skipped(f"is too short: RSA keys need at least {MIN_RSA_BITS} bits "
                      f"(this one has {n.bit_length()})")
    if e < 3 or e >= n or not e & 1:
        # The bounds `cryptography` enforces; OpenSSL would take some of these (e = 1 makes
        # every signature computable by anyone) and no real key has them.
        raise Skipped("is not a valid RSA public key: its exponent \"e\" must be "
                        "odd, at least 3 and below n (issuers publish e = 65537, \"AQAB\"); "
                        "check that the key was copied whole")
    # A key naming its algorithm gets only that verifier: five fewer OpenSSL contexts to
    # prepare on a new connection.
    wanted = {alg: RSA_ALGS[alg]} if alg in RSA_ALGS else RSA_ALGS
    verifiers = _libcrypto().rsa_verifiers(n_bytes, e_bytes, wanted)
    if verifiers is None:
        raise Skipped(f"needs {NO_LIBCRYPTO}")
    return verifiers
