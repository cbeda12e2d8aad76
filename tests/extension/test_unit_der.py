"""der.py writes the same bytes as `cryptography` for public keys and ECDSA signatures."""

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pg_session_jwt import der

CURVES = {"P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48), "P-521": (ec.SECP521R1, 66)}


@pytest.mark.parametrize("crv", sorted(CURVES))
def test_ec_subject_public_key_info(crv):
    curve, size = CURVES[crv]
    public = ec.generate_private_key(curve()).public_key()
    numbers = public.public_numbers()
    ours = der.ec_public_key(crv, numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big"))
    assert ours == public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("bits, exponent", [(2048, 65537), (3072, 3), (4096, 65537)])
def test_rsa_subject_public_key_info(bits, exponent):
    public = rsa.generate_private_key(public_exponent=exponent, key_size=bits).public_key()
    numbers = public.public_numbers()
    # JWK members may carry leading zero bytes; DER integers must not.
    n = b"\0" + numbers.n.to_bytes(bits // 8, "big")
    e = numbers.e.to_bytes(4, "big")
    ours = der.rsa_public_key(n, e)
    assert ours == public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("size", [32, 48, 66])
def test_ecdsa_signature_matches_cryptography(size):
    edge = [0, 1, 0x7f, 0x80, 0xff, 2 ** (8 * size) - 1, 2 ** (8 * size - 1),
            2 ** (8 * size - 1) - 1]
    values = edge + [int.from_bytes(os.urandom(size), "big") for _ in range(50)]
    for r in values:
        for s in (values[0], values[3], values[-1], r):
            raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
            assert der.ecdsa_signature(raw, size) == encode_dss_signature(r, s), (r, s)
