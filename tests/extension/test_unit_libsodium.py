"""Ed25519 through libsodium (libsodium.py): every signature OpenSSL refuses is refused too,
and where libsodium is stricter than OpenSSL (small-order points, non-canonical encodings)
the tests below say so — and keys.py refuses such keys whichever library verifies.

The library is the one PyNaCl bundles (tests/support/sodium.py), loaded through the
extension's own libsodium.py: the host needs no libsodium package.
"""

import hashlib
import json
import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from pg_session_jwt import keys, libcrypto, libsodium
from pg_session_jwt.errors import JwtError

from tests.support import sodium as bundled_sodium
from tests.support.jws import b64

L = 2**252 + 27742317777372353535851937790883648493   # RFC 8032's group order
P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
IDENTITY = (1).to_bytes(32, "little")
IDENTITY_NON_CANONICAL = (P + 1).to_bytes(32, "little")


@pytest.fixture(scope="module")
def sodium():
    """libsodium.py (and so keys.py) bound to the bundled libsodium for this module."""
    with bundled_sodium.bound(libsodium):
        if libsodium.library() is None:
            pytest.fail(f"{bundled_sodium.library_path()} does not export libsodium's "
                        "crypto_sign_verify_detached")
        yield


@pytest.fixture(scope="module")
def signer(sodium):
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, raw


def okp(raw):
    """The JWK text of the Ed25519 public key `raw`."""
    return json.dumps({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)})


def openssl(raw):
    """OpenSSL's answer through `cryptography` (the independent judge)."""
    public = Ed25519PublicKey.from_public_bytes(raw)

    def verify(data, signature):
        try:
            public.verify(signature, data)
        except InvalidSignature:
            return False
        return True
    return verify


def scalar_signature(private, raw, r_encoding, data):
    """A signature (R, S) with a chosen R encoding whose point is the identity, made with
    the private scalar: [S]B = [k]A = R + [k]A. Only the key holder can make one."""
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a = (a & ~7 & ((1 << 254) - 1)) | (1 << 254)
    k = int.from_bytes(hashlib.sha512(r_encoding + raw + data).digest(), "little") % L
    return r_encoding + (k * a % L).to_bytes(32, "little")


def test_keys_verify_ed25519_through_libsodium(signer):
    keyset = keys.parse(okp(signer[1]))
    assert isinstance(keyset.keys[0].verifiers["EdDSA"], libsodium.Ed25519Verifier)


def test_every_signature_openssl_refuses_is_refused(signer):
    private, raw = signer
    mine, judge, via_libcrypto = libsodium.verifier(raw), openssl(raw), libcrypto.ed25519_verifier(raw)
    for size in (0, 1, 63, 64, 1000, 20000):
        data = os.urandom(size)
        signature = private.sign(data)
        assert mine(data, signature) is judge(data, signature) is via_libcrypto(data, signature) \
            is True
        candidates = [signature[:-1], signature + b"\0", b"", b"\0" * 64, b"\xff" * 64,
                      signature[32:] + signature[:32]]
        for position in range(0, 64, 7):
            for bit in (0x01, 0x80):
                flipped = bytearray(signature)
                flipped[position] ^= bit
                candidates.append(bytes(flipped))
        for bad in candidates:
            assert judge(data, bad) is False
            assert mine(data, bad) is False
        assert mine(data + b"x", signature) is False


def test_both_refuse_s_at_or_above_the_group_order(signer):
    """RFC 8032 5.1.7: S >= L is refused (a malleated twin of a genuine signature)."""
    private, raw = signer
    signature = private.sign(b"data")
    s = int.from_bytes(signature[32:], "little")
    for twin in (s + L, s + 2 * L):
        if twin < 2**256:
            malleated = signature[:32] + twin.to_bytes(32, "little")
            assert openssl(raw)(b"data", malleated) is False
            assert libsodium.verifier(raw)(b"data", malleated) is False


def test_stricter_libsodium_refuses_a_small_order_r_that_openssl_accepts(signer):
    """Where libsodium is stricter: R of small order (here the identity) made by the key
    holder verifies under OpenSSL's cofactorless check and is refused by libsodium. Not a
    forgery — only the private key can make it — but a second signature for one message."""
    private, raw = signer
    odd = scalar_signature(private, raw, IDENTITY, b"data")
    assert openssl(raw)(b"data", odd) is True
    assert libcrypto.ed25519_verifier(raw)(b"data", odd) is True
    assert libsodium.verifier(raw)(b"data", odd) is False


def test_both_refuse_a_non_canonical_r(signer):
    """The identity spelt y = p + 1: OpenSSL compares R's bytes with the canonical
    encoding it computes, libsodium refuses the encoding itself."""
    private, raw = signer
    odd = scalar_signature(private, raw, IDENTITY_NON_CANONICAL, b"data")
    assert openssl(raw)(b"data", odd) is False
    assert libsodium.verifier(raw)(b"data", odd) is False


def test_identity_key_lets_anyone_forge_under_openssl_and_is_refused_by_keys(sodium):
    """The reason keys.py refuses small-order keys: under the identity public key,
    R = identity and S = 0 verify for every message with OpenSSL; libsodium refuses."""
    forged = IDENTITY + bytes(32)
    assert openssl(IDENTITY)(b"any message at all", forged) is True
    assert libsodium.verifier(IDENTITY)(b"any message at all", forged) is False
    with pytest.raises(JwtError, match="small order") as info:
        keys.parse(okp(IDENTITY))
    assert info.value.sqlstate == "42804"


def _point(y, sign):
    """The Edwards point with coordinate y and x of parity `sign`, or None (RFC 8032 5.1.3)."""
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x2 = u * pow(v, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    if (x * x - x2) % P:
        return None
    return (P - x) % P if x & 1 != sign else x, y


def _add(a, b):
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2
    return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P)


def _order_at_most_8(point):
    current = point
    for _ in range(8):
        if current == (0, 1):
            return True
        current = _add(current, point)
    return False


def test_the_small_order_table_is_exactly_the_eight_torsion_points():
    """keys.ED25519_SMALL_ORDER_Y, checked with independent arithmetic: every y there gives
    points of order dividing 8, and together they are all eight."""
    points = set()
    for y in keys.ED25519_SMALL_ORDER_Y:
        for sign in (0, 1):
            point = _point(y, sign)
            if point is not None:
                assert _order_at_most_8(point), hex(y)
                points.add(point)
    assert len(points) == 8


@pytest.mark.parametrize("y", sorted(keys.ED25519_SMALL_ORDER_Y))
def test_every_small_order_key_is_refused_in_every_spelling(sodium, y):
    spellings = {y, y | 1 << 255}
    if y + P < 2**255:
        spellings |= {y + P, (y + P) | 1 << 255}
    for value in spellings:
        x = value.to_bytes(32, "little")
        with pytest.raises(JwtError) as info:
            keys.parse(okp(x))
        assert "small order" in info.value.message or "canonically" in info.value.message
        assert libsodium.verifier(x)(b"m", IDENTITY + bytes(32)) is False


def test_non_canonical_key_encoding_is_refused(sodium):
    """y >= p spells a point that also has a canonical spelling; libsodium refuses the key
    outright, OpenSSL would not: keys.py refuses it for both."""
    for y in range(2, 19):
        if _point(y, 0) is not None:
            break
    x = (y + P).to_bytes(32, "little")
    with pytest.raises(JwtError, match="not canonically encoded"):
        keys.parse(okp(x))
    assert libsodium.verifier(x)(b"m", bytes(64)) is False


def test_short_signatures_never_reach_the_c_function(signer):
    """crypto_sign_verify_detached reads 64 bytes whatever it is given."""
    _, raw = signer
    verify = libsodium.verifier(raw)
    assert verify(b"m", b"") is False and verify(b"m", b"\0" * 63) is False
