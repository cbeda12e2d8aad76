"""Ed25519 through libcrypto (libcrypto.py) agrees with `cryptography` on every input,
and keys.py falls back to `cryptography` where libcrypto cannot be found."""

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pg_session_jwt import keys, libcrypto, token
from pg_session_jwt.errors import JwtError

from devtools.jwt import generate_key, mint, public_jwk

# RFC 8032's group order L; adding it to S gives the same point, a malleated signature.
ED25519_L = 2**252 + 27742317777372353535851937790883648493


@pytest.fixture(scope="module")
def signer():
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, raw


def both_verifiers(raw):
    fast = libcrypto.verifier(raw)
    if fast is None:
        pytest.skip("no libcrypto.so.3 on this host; the fallback is tested below")
    return fast, keys._okp_cryptography(raw)


def test_libcrypto_is_found_on_this_host():
    # The images' PostgreSQL links libcrypto, and so does every supported host Python.
    assert libcrypto.library() is not None


def test_agrees_with_cryptography(signer):
    private, raw = signer
    fast, reference = both_verifiers(raw)
    for size in (0, 1, 63, 64, 1000, 20000):
        message = os.urandom(size)
        signature = private.sign(message)
        assert fast(message, signature) is reference(message, signature) is True
        tampered = bytearray(signature)
        tampered[size % 64] ^= 1
        assert fast(message, bytes(tampered)) is reference(message, bytes(tampered)) is False
        assert fast(message + b"x", signature) is reference(message + b"x", signature) is False


@pytest.mark.parametrize("signature", [b"", b"\0" * 63, b"\0" * 64, b"\0" * 65, b"\xff" * 64])
def test_refuses_malformed_signatures(signer, signature):
    fast, reference = both_verifiers(signer[1])
    assert fast(b"data", signature) is reference(b"data", signature) is False


def test_refuses_malleated_signature(signer):
    private, raw = signer
    fast, reference = both_verifiers(raw)
    signature = private.sign(b"data")
    s = int.from_bytes(signature[32:], "little") + ED25519_L
    malleated = signature[:32] + s.to_bytes(32, "little")
    assert fast(b"data", malleated) is reference(b"data", malleated) is False


def test_a_refused_key_gives_no_verifier():
    # A 31-byte key is refused by OpenSSL (keys.py checks the length before ever calling).
    if libcrypto.library() is None:
        pytest.skip("no libcrypto.so.3 on this host")
    assert libcrypto.verifier(b"\0" * 31) is None


def test_fallback_to_cryptography_when_libcrypto_is_missing(monkeypatch):
    monkeypatch.setattr(libcrypto, "_lib", None)
    key = generate_key("EdDSA")
    keyset = keys.parse(public_jwk(key))
    claims, _ = token.verify(mint(key, sub="alice"), keyset, 16384)
    assert claims["sub"] == "alice"
    with pytest.raises(JwtError, match="invalid JWT signature"):
        token.verify(mint(generate_key("EdDSA"), sub="mallory", header={"kid": key.get("kid")}),
                     keyset, 16384)
