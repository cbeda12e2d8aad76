"""The few DER structures OpenSSL needs from a JWK or a JWS signature, assembled by hand.

A JWK carries raw numbers (EC coordinates, RSA modulus and exponent) and a JWS ECDSA
signature is the fixed-width concatenation r || s (RFC 7518 3.4), while libcrypto reads
public keys as a DER SubjectPublicKeyInfo (d2i_PUBKEY, the same on every OpenSSL 3) and
ECDSA signatures as a DER SEQUENCE of two INTEGERs. Writing these few bytes here keeps
the path free of any ASN.1 library; OpenSSL parses the result strictly and checks the
numbers (the point is on its curve, r and s are in range), so a mistake here can only
refuse, never accept, a key or a signature.
"""

_SEQUENCE, _INTEGER, _BIT_STRING = 0x30, 0x02, 0x03
_NULL = b"\x05\x00"
_RSA_ENCRYPTION = bytes.fromhex("06092a864886f70d010101")      # 1.2.840.113549.1.1.1
_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")            # 1.2.840.10045.2.1
CURVE_OIDS = {"P-256": bytes.fromhex("06082a8648ce3d030107"),   # prime256v1
              "P-384": bytes.fromhex("06052b81040022"),         # secp384r1
              "P-521": bytes.fromhex("06052b81040023")}         # secp521r1


def _tlv(tag, content):
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _unsigned(value):
    """A DER INTEGER of the unsigned big-endian bytes `value` (minimal, never negative)."""
    value = value.lstrip(b"\0") or b"\0"
    if value[0] & 0x80:
        value = b"\0" + value
    return _tlv(_INTEGER, value)


def ecdsa_signature(signature, size):
    """The DER ECDSA-Sig-Value of a JWS signature r || s, each `size` bytes."""
    return _tlv(_SEQUENCE, _unsigned(signature[:size]) + _unsigned(signature[size:]))


def ec_public_key(crv, x, y):
    """The SubjectPublicKeyInfo of the point (x, y) on the JWK curve `crv` (uncompressed)."""
    algorithm = _tlv(_SEQUENCE, _EC_PUBLIC_KEY + CURVE_OIDS[crv])
    return _tlv(_SEQUENCE, algorithm + _tlv(_BIT_STRING, b"\0\x04" + x + y))


def rsa_public_key(n, e):
    """The SubjectPublicKeyInfo of the RSA key with modulus `n` and exponent `e` (bytes)."""
    algorithm = _tlv(_SEQUENCE, _RSA_ENCRYPTION + _NULL)
    key = _tlv(_SEQUENCE, _unsigned(n) + _unsigned(e))
    return _tlv(_SEQUENCE, algorithm + _tlv(_BIT_STRING, b"\0" + key))
