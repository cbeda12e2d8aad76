"""ECDSA, RSA and Ed25519 through the server's libcrypto (libcrypto.py) decide exactly as
`cryptography` does, for genuine signatures and for every malformed one we can think of,
and a failed check leaves nothing on OpenSSL's error queue."""

import json
import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pg_session_jwt import ffi, keys, libcrypto, libsodium, token
from pg_session_jwt.errors import JwtError

from devtools.jwt import generate_key, mint, public_jwk
from tests.support.jws import b64

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
CURVES = {"ES256": (ec.SECP256R1, "P-256", 32), "ES384": (ec.SECP384R1, "P-384", 48),
          "ES512": (ec.SECP521R1, "P-521", 66)}
ORDERS = {"ES256": 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551,
          "ES384": int("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
                       "581a0db248b0a77aecec196accc52973", 16),
          "ES512": int("01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                       "fa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
                       16)}
RSA_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
MESSAGES = [b"", b"a", os.urandom(63), os.urandom(1000), os.urandom(20000)]


@pytest.fixture(scope="module")
def lib():
    found = libcrypto.library()
    # The images' PostgreSQL links libcrypto 3, and so does every supported host Python.
    assert found is not None, "libcrypto.so.3 not found: install libssl3 (OpenSSL 3)"
    return found


@pytest.fixture(scope="module")
def rsa_private():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(public, **extra):
    """The public JWK of a `cryptography` EC or RSA public key."""
    numbers = public.public_numbers()
    if isinstance(public, rsa.RSAPublicKey):
        size = (numbers.n.bit_length() + 7) // 8
        return json.dumps({"kty": "RSA", "n": b64(numbers.n.to_bytes(size, "big")),
                           "e": b64(numbers.e.to_bytes(3, "big")), **extra})
    size = (public.curve.key_size + 7) // 8
    crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[public.curve.name]
    return json.dumps({"kty": "EC", "crv": crv, "x": b64(numbers.x.to_bytes(size, "big")),
                       "y": b64(numbers.y.to_bytes(size, "big")), **extra})


def rsa_padding(alg, salt=None, mgf_hash=None):
    hash_algorithm = HASHES[alg[2:]]()
    if alg.startswith("RS"):
        return padding.PKCS1v15()
    return padding.PSS(mgf=padding.MGF1(mgf_hash or hash_algorithm),
                       salt_length=hash_algorithm.digest_size if salt is None else salt)


def reference(public, alg):
    """What `cryptography` says of (data, JWS signature) under `alg`: the verifier that 0.2.0
    used, written once more here as the independent judge."""
    def verify(data, signature):
        try:
            if alg.startswith("ES"):
                size = CURVES[alg][2]
                if len(signature) != 2 * size:
                    return False
                der = encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                           int.from_bytes(signature[size:], "big"))
                public.verify(der, data, ec.ECDSA(HASHES[alg[2:]]()))
            else:
                public.verify(signature, data, rsa_padding(alg), HASHES[alg[2:]]())
        except InvalidSignature:
            return False
        return True
    return verify


def ours(public, alg):
    return keys.parse(jwk_of(public)).keys[0].verifiers[alg]


def jws_sign(private, alg, data):
    if alg.startswith("ES"):
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(HASHES[alg[2:]]())))
        size = CURVES[alg][2]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return private.sign(data, rsa_padding(alg), HASHES[alg[2:]]())


def mutations(signature):
    """Malformed variants of a genuine signature: flipped bits, wrong lengths, constants."""
    size = len(signature)
    for position in (0, 1, size // 2 - 1, size // 2, size - 1):
        for bit in (0x01, 0x80):
            flipped = bytearray(signature)
            flipped[position] ^= bit
            yield bytes(flipped)
    yield from (signature[:-1], signature[1:], signature + b"\0", b"\0" + signature,
                signature * 2, b"", b"\0" * size, b"\xff" * size, b"\0" * (size - 1) + b"\1")


def agree(mine, judge, data, signature):
    got, expected = mine(data, signature), judge(data, signature)
    assert got is expected, (data[:16], signature.hex())
    return got


def assert_queue_empty(lib):
    peek = lib.function("ERR_peek_error", ffi.c_ulong)
    assert peek() == 0, "a failed check left errors on OpenSSL's queue"


@pytest.mark.parametrize("alg", sorted(CURVES))
def test_ecdsa_agrees_with_cryptography(lib, alg):
    private = ec.generate_private_key(CURVES[alg][0]())
    mine, judge = ours(private.public_key(), alg), reference(private.public_key(), alg)
    for data in MESSAGES:
        signature = jws_sign(private, alg, data)
        assert agree(mine, judge, data, signature) is True
        assert agree(mine, judge, data + b"x", signature) is False
        for bad in mutations(signature):
            assert agree(mine, judge, data, bad) is False
        assert_queue_empty(lib)


@pytest.mark.parametrize("alg", sorted(CURVES))
def test_ecdsa_scalars_out_of_range_and_high_s(lib, alg):
    """r, s must lie in [1, n-1]; ECDSA's (r, n-s) twin (high S) verifies in both, as JWS
    does not ask for low S — the token's other parts cannot change with it."""
    private = ec.generate_private_key(CURVES[alg][0]())
    mine, judge = ours(private.public_key(), alg), reference(private.public_key(), alg)
    size, n = CURVES[alg][2], ORDERS[alg]
    data = b"header.payload"
    signature = jws_sign(private, alg, data)
    r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")

    def raw(r_, s_):
        return r_.to_bytes(size, "big") + s_.to_bytes(size, "big")

    assert agree(mine, judge, data, raw(r, n - s)) is True
    for bad_r, bad_s in ((0, s), (r, 0), (0, 0), (r + n, s), (r, s + n), (n, s), (r, n)):
        if max(bad_r, bad_s) < 256 ** size:
            assert agree(mine, judge, data, raw(bad_r, bad_s)) is False
    assert_queue_empty(lib)


def test_ecdsa_signature_of_another_curve_size_is_refused(lib):
    private = ec.generate_private_key(ec.SECP256R1())
    mine = ours(private.public_key(), "ES256")
    other = ec.generate_private_key(ec.SECP384R1())
    assert mine(b"data", jws_sign(other, "ES384", b"data")) is False


@pytest.mark.parametrize("alg", RSA_ALGS)
def test_rsa_agrees_with_cryptography(lib, rsa_private, alg):
    public = rsa_private.public_key()
    mine, judge = ours(public, alg), reference(public, alg)
    for data in MESSAGES:
        signature = jws_sign(rsa_private, alg, data)
        assert agree(mine, judge, data, signature) is True
        assert agree(mine, judge, data + b"x", signature) is False
        for bad in mutations(signature):
            if alg.startswith("PS") and bad == signature[1:] and signature[0] == 0:
                continue   # the one spelling where we are stricter, tested below
            assert agree(mine, judge, data, bad) is False
        assert_queue_empty(lib)


@pytest.mark.parametrize("alg", RSA_ALGS)
def test_rsa_signature_of_the_other_padding_or_hash_is_refused(rsa_private, alg):
    public = rsa_private.public_key()
    mine, judge = ours(public, alg), reference(public, alg)
    for other in RSA_ALGS:
        if other != alg:
            signature = jws_sign(rsa_private, other, b"data")
            assert agree(mine, judge, b"data", signature) is False


@pytest.mark.parametrize("alg", ["PS256", "PS384", "PS512"])
def test_pss_salt_is_the_hash_length_and_mgf1_uses_the_same_hash(rsa_private, alg):
    """RFC 7518 3.5: a PSS signature with another salt length or MGF1 hash is refused."""
    mine = ours(rsa_private.public_key(), alg)
    hash_algorithm = HASHES[alg[2:]]()
    other_hash = hashes.SHA1() if alg != "PS256" else hashes.SHA512()
    for pad in (rsa_padding(alg, salt=0), rsa_padding(alg, salt=hash_algorithm.digest_size + 1),
                rsa_padding(alg, salt=padding.PSS.MAX_LENGTH),
                rsa_padding(alg, mgf_hash=other_hash)):
        signature = rsa_private.sign(b"data", pad, hash_algorithm)
        assert mine(b"data", signature) is False
    assert mine(b"data", rsa_private.sign(b"data", rsa_padding(alg), hash_algorithm)) is True


@pytest.mark.parametrize("alg", RSA_ALGS)
def test_rsa_signature_without_its_leading_zero_byte_is_refused(rsa_private, alg):
    """Stricter than `cryptography` for PSS: OpenSSL accepts a PSS signature whose leading
    zero byte was dropped (a second spelling of the same token); RFC 8017 8.2.2 step 1
    refuses any length but the modulus's, and so do we, for every RSA algorithm."""
    public = rsa_private.public_key()
    mine, judge = ours(public, alg), reference(public, alg)
    for attempt in range(5000):
        data = attempt.to_bytes(4, "big")
        signature = jws_sign(rsa_private, alg, data)
        if signature[0] == 0:
            break
    else:
        pytest.fail("no signature with a leading zero byte in 5000 attempts")
    assert agree(mine, judge, data, signature) is True
    assert mine(data, signature[1:]) is False
    assert judge(data, signature[1:]) is alg.startswith("PS")


def test_rsa_signature_as_large_as_the_modulus_or_larger_is_refused(rsa_private):
    public = rsa_private.public_key()
    n = public.public_numbers().n
    for alg in RSA_ALGS:
        mine, judge = ours(public, alg), reference(public, alg)
        for value in (n, n + 1, n - 1, 0, 1):
            assert agree(mine, judge, b"data", value.to_bytes(256, "big")) is False


@pytest.mark.parametrize("exponent", [1, 2, 4, 65536])
def test_rsa_exponents_cryptography_refuses_are_refused(rsa_private, exponent):
    key = json.loads(jwk_of(rsa_private.public_key()))
    key["e"] = b64(exponent.to_bytes(3, "big"))
    with pytest.raises(JwtError, match="not a valid RSA public key"):
        keys.parse(json.dumps(key))


def test_rsa_exponent_3_is_accepted_like_cryptography_does():
    private = rsa.generate_private_key(public_exponent=3, key_size=2048)
    mine, judge = ours(private.public_key(), "RS256"), reference(private.public_key(), "RS256")
    assert agree(mine, judge, b"data", jws_sign(private, "RS256", b"data")) is True


@pytest.mark.parametrize("alg", sorted(CURVES))
def test_ec_points_off_the_curve_are_refused(alg):
    public = ec.generate_private_key(CURVES[alg][0]()).public_key()
    key = json.loads(jwk_of(public))
    y = int.from_bytes(keys.b64url_decode(key["y"]), "big")
    key["y"] = b64(((y + 1) % 2 ** (8 * CURVES[alg][2])).to_bytes(CURVES[alg][2], "big"))
    with pytest.raises(JwtError, match="not a valid EC public key") as info:
        keys.parse(json.dumps(key))
    assert info.value.sqlstate == "42804"
    assert_queue_empty(libcrypto.library())


def test_ed25519_through_libcrypto_agrees_with_cryptography(lib):
    """libcrypto's Ed25519 (used where libsodium is missing) decides like `cryptography`."""
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    mine = libcrypto.ed25519_verifier(raw)

    def judge(data, signature):
        try:
            private.public_key().verify(signature, data)
        except InvalidSignature:
            return False
        return True

    for data in MESSAGES:
        signature = private.sign(data)
        assert agree(mine, judge, data, signature) is True
        for bad in mutations(signature):
            assert agree(mine, judge, data, bad) is False
        assert_queue_empty(lib)


def test_a_refused_ed25519_key_gives_no_verifier(lib):
    # keys.py checks the length first; OpenSSL itself refuses a 31-byte key.
    assert libcrypto.ed25519_verifier(b"\0" * 31) is None
    assert_queue_empty(lib)


def test_without_libcrypto_ec_and_rsa_keys_are_unusable_with_the_fix(monkeypatch):
    monkeypatch.setattr(libcrypto, "_lib", None)
    for alg in ("ES256", "RS256"):
        with pytest.raises(JwtError) as info:
            keys.parse(public_jwk(generate_key(alg)))
        assert info.value.sqlstate == "42804"
        assert "libcrypto.so.3" in info.value.message and "libssl3" in info.value.message


def test_ed25519_falls_back_to_libcrypto_without_libsodium(monkeypatch):
    monkeypatch.setattr(libsodium, "_lib", None)
    key = generate_key("EdDSA")
    keyset = keys.parse(public_jwk(key))
    assert isinstance(keyset.keys[0].verifiers["EdDSA"], libcrypto.Ed25519Verifier)
    assert token.verify(mint(key, sub="alice"), keyset, 16384)[0]["sub"] == "alice"
    with pytest.raises(JwtError, match="invalid JWT signature"):
        token.verify(mint(generate_key("EdDSA"), sub="mallory", header={"kid": key.get("kid")}),
                     keyset, 16384)


def test_without_either_library_an_ed25519_key_is_unusable_with_the_fix(monkeypatch):
    monkeypatch.setattr(libsodium, "_lib", None)
    monkeypatch.setattr(libcrypto, "_lib", None)
    with pytest.raises(JwtError) as info:
        keys.parse(public_jwk(generate_key("EdDSA")))
    assert info.value.sqlstate == "42804"
    assert "libsodium23" in info.value.message and "libcrypto.so.3" in info.value.message


def test_verifiers_hold_their_own_reference_to_the_key(rsa_private):
    """keys.py frees the EVP_PKEY once its contexts exist; they must stay usable."""
    import gc

    mine = ours(rsa_private.public_key(), "PS256")
    gc.collect()
    signature = jws_sign(rsa_private, "PS256", b"data")
    assert all(mine(b"data", signature) for _ in range(50))


def test_a_dropped_key_set_frees_its_openssl_objects(lib, monkeypatch):
    """Key sets are replaced over a backend's life (a JWKS that rotates): every context and
    key OpenSSL allocated for one is freed with it, not leaked until the backend exits."""
    import gc

    freed = []
    for name in ("EVP_PKEY_CTX_free", "EVP_PKEY_free"):
        real = getattr(lib, name)
        monkeypatch.setattr(lib, name, lambda pointer, real=real, name=name: (
            freed.append(name), real(pointer))[1])
    jwks = json.dumps({"keys": [json.loads(public_jwk(generate_key(alg, kid=alg)))
                                for alg in ("RS256", "ES384", "EdDSA")]})
    monkeypatch.setattr(libsodium, "_lib", None)     # Ed25519 through libcrypto as well
    keyset = keys.parse(jwks)
    # parse frees each EVP_PKEY once its contexts hold it, and the EC check's context; a
    # key with "alg" gets only that algorithm's context.
    assert freed.count("EVP_PKEY_free") == 2 and freed.count("EVP_PKEY_CTX_free") == 1
    freed.clear()
    del keyset
    gc.collect()
    assert freed.count("EVP_PKEY_CTX_free") == 2       # RS256's and ES384's
    assert freed.count("EVP_PKEY_free") == 1           # the Ed25519 key
