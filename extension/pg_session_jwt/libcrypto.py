"""ECDSA, RSA (PKCS#1 v1.5 and PSS) and Ed25519 verification through the server's libcrypto.

Why not `cryptography`: in a new backend, importing its Rust bindings costs 15-18 ms
(more on a busy host), half of a connection's cold-path budget, and then its EC or RSA
modules more. PostgreSQL links OpenSSL's libcrypto, so its verification code is already in
memory and costs only its bindings (ffi.py). OpenSSL 3 is required (bookworm ships 3.0,
trixie and forky later 3.x): the EVP_PKEY_CTX_set_* setters used here are functions there,
macros before. Without it `library()` is None and keys.py refuses EC and RSA keys.

A key is built once from DER assembled by der.py, with one EVP_PKEY_CTX per algorithm
prepared for verification; a signature then costs two calls: EVP_Digest of the signing
input and EVP_PKEY_verify of that digest, the same pair `cryptography` makes. Ed25519
has no separate digest and goes through EVP_DigestVerify (used where libsodium is not
loadable, see libsodium.py). Every failed call leaves errors on OpenSSL's per-thread
queue; they are cleared at once so that the server's own TLS code never reads them.
"""

from .der import ec_public_key, ecdsa_signature, rsa_public_key
from .ffi import Library, addressof, buffer, c_char_p, c_int, c_long, c_size_t, c_ulong, c_void_p

NID_ED25519 = 1087              # obj_mac.h, fixed since 1.1.1
RSA_PKCS1_PSS_PADDING = 6       # rsa.h
_OPENSSL_3 = 0x30000000
_LIBRARIES = (None, "libcrypto.so.3")  # None: the running process (postgres links it)
_lib = False  # False: not looked up yet; None: not available

_p, _int, _size = c_void_p, c_int, c_size_t
_PROTOTYPES = {
    "ERR_clear_error": (None, ()),
    "d2i_PUBKEY": (_p, (_p, _p, c_long)),   # the second: the address of a const unsigned char *
    "EVP_PKEY_new_raw_public_key": (_p, (_int, _p, c_char_p, _size)),
    "EVP_PKEY_free": (None, (_p,)),
    "EVP_PKEY_CTX_new": (_p, (_p, _p)),
    "EVP_PKEY_CTX_free": (None, (_p,)),
    "EVP_PKEY_public_check": (_int, (_p,)),
    "EVP_PKEY_verify_init": (_int, (_p,)),
    "EVP_PKEY_CTX_set_signature_md": (_int, (_p, _p)),
    "EVP_PKEY_CTX_set_rsa_padding": (_int, (_p, _int)),
    "EVP_PKEY_CTX_set_rsa_pss_saltlen": (_int, (_p, _int)),
    "EVP_PKEY_CTX_set_rsa_mgf1_md": (_int, (_p, _p)),
    "EVP_PKEY_verify": (_int, (_p, c_char_p, _size, c_char_p, _size)),
    "EVP_MD_fetch": (_p, (_p, c_char_p, c_char_p)),
    "EVP_MD_get_size": (_int, (_p,)),
    "EVP_Digest": (_int, (c_char_p, _size, _p, _p, _p, _p)),
    "EVP_MD_CTX_new": (_p, ()),
    "EVP_MD_CTX_free": (None, (_p,)),
    "EVP_DigestVerifyInit": (_int, (_p, _p, _p, _p, _p)),
    "EVP_DigestVerify": (_int, (_p, c_char_p, _size, c_char_p, _size)),
}


def _load():
    """libcrypto 3 with the functions above as typed attributes, or None."""
    for name in _LIBRARIES:
        try:
            lib = Library(name)
        except OSError:
            continue
        version = lib.function("OpenSSL_version_num", c_ulong)
        if version is None or version() < _OPENSSL_3:
            continue
        functions = {function: lib.function(function, restype, argtypes)
                     for function, (restype, argtypes) in _PROTOTYPES.items()}
        if None in functions.values():
            continue
        for function, bound in functions.items():
            setattr(lib, function, bound)
        return lib
    return None


def library():
    """The typed libcrypto, looked up once per process, or None."""
    global _lib
    if _lib is False:
        _lib = _load()
    return _lib


def _pubkey(lib, der):
    """The EVP_PKEY of a DER SubjectPublicKeyInfo; ValueError when OpenSSL refuses it."""
    data = buffer(der)
    cursor = _p(addressof(data))   # d2i_PUBKEY moves it past what it read
    pkey = lib.d2i_PUBKEY(None, addressof(cursor), len(der))
    if not pkey:
        lib.ERR_clear_error()
        raise ValueError("libcrypto refused the public key")
    return pkey


class _Digest:
    """One hash function fetched once: EVP_MD pointer and output size."""

    __slots__ = ("md", "size")

    def __init__(self, lib, name):
        self.md = lib.EVP_MD_fetch(None, name.encode("ascii"), None)
        if not self.md:
            lib.ERR_clear_error()
            raise ValueError(f"libcrypto has no {name}")
        self.size = lib.EVP_MD_get_size(self.md)


_digests = {}


def _digest(lib, name):
    # Fetched once per process and never freed: three small objects, shared by all keys.
    if name not in _digests:
        _digests[name] = _Digest(lib, name)
    return _digests[name]


class Verifier:
    """verify(data, signature) -> bool for one algorithm and one key: an EVP_PKEY_CTX
    prepared once, a digest per call. A signature must be `length` bytes; `ec_size` is
    set for ECDSA (the width of r and of s, converted to DER for OpenSSL)."""

    __slots__ = ("_lib", "_ctx", "_md", "_size", "_out", "_out_address", "_length", "_ec_size")

    def __init__(self, lib, pkey, digest, length, ec_size=None, pss=False):
        self._ctx = None
        self._lib, self._md, self._size = lib, digest.md, digest.size
        self._length, self._ec_size = length, ec_size
        self._out = buffer(digest.size)
        self._out_address = addressof(self._out)
        self._ctx = lib.EVP_PKEY_CTX_new(pkey, None)
        if not self._ctx:
            raise MemoryError("EVP_PKEY_CTX_new failed")
        ok = (lib.EVP_PKEY_verify_init(self._ctx) == 1
              and lib.EVP_PKEY_CTX_set_signature_md(self._ctx, digest.md) == 1)
        if ok and pss:
            # RFC 7518 3.5: MGF1 with the signature's hash, salt as long as the hash.
            ok = (lib.EVP_PKEY_CTX_set_rsa_padding(self._ctx, RSA_PKCS1_PSS_PADDING) == 1
                  and lib.EVP_PKEY_CTX_set_rsa_mgf1_md(self._ctx, digest.md) == 1
                  and lib.EVP_PKEY_CTX_set_rsa_pss_saltlen(self._ctx, digest.size) == 1)
        if not ok:
            lib.ERR_clear_error()
            raise ValueError("libcrypto cannot verify with this key")

    def __call__(self, data, signature):
        if len(signature) != self._length:
            return False
        lib = self._lib
        if self._ec_size is not None:
            signature = ecdsa_signature(signature, self._ec_size)
        if lib.EVP_Digest(data, len(data), self._out_address, None, self._md, None) != 1:
            lib.ERR_clear_error()
            raise MemoryError("EVP_Digest failed")
        if lib.EVP_PKEY_verify(self._ctx, signature, len(signature), self._out, self._size) == 1:
            return True
        lib.ERR_clear_error()
        return False

    def __del__(self):
        if self._ctx:
            self._lib.EVP_PKEY_CTX_free(self._ctx)
            self._ctx = None


def ec_verifier(crv, x, y, hash_name, size):
    """The ECDSA Verifier of the point (x, y) on `crv` ("P-256"...); None without libcrypto,
    ValueError when the point is not a valid public key of that curve."""
    lib = library()
    if lib is None:
        return None
    pkey = _pubkey(lib, ec_public_key(crv, x, y))
    try:
        # d2i_PUBKEY already refuses points off the curve; the check makes it explicit.
        check = lib.EVP_PKEY_CTX_new(pkey, None)
        valid = check and lib.EVP_PKEY_public_check(check) == 1
        lib.EVP_PKEY_CTX_free(check)
        if not valid:
            lib.ERR_clear_error()
            raise ValueError("not a valid EC public key")
        return Verifier(lib, pkey, _digest(lib, hash_name), 2 * size, ec_size=size)
    finally:
        lib.EVP_PKEY_free(pkey)   # each EVP_PKEY_CTX holds its own reference


def rsa_verifiers(n, e, algorithms):
    """{alg: Verifier} for the RSA key (n, e) (bytes) and `algorithms` {"RS256": "SHA256"...};
    None without libcrypto, ValueError when OpenSSL refuses the key.

    A signature must be exactly as long as the modulus (RFC 8017 8.1.2 and 8.2.2, step 1):
    OpenSSL's PSS check alone also accepts one whose leading zero bytes were dropped, a
    second spelling of the same token."""
    lib = library()
    if lib is None:
        return None
    pkey = _pubkey(lib, rsa_public_key(n, e))
    length = (int.from_bytes(n, "big").bit_length() + 7) // 8
    try:
        return {alg: Verifier(lib, pkey, _digest(lib, hash_name), length,
                              pss=alg.startswith("PS"))
                for alg, hash_name in algorithms.items()}
    finally:
        lib.EVP_PKEY_free(pkey)


class Ed25519Verifier:
    """verify(data, signature) -> bool for one Ed25519 key, through EVP_DigestVerify."""

    __slots__ = ("_lib", "_pkey")

    def __init__(self, lib, pkey):
        self._lib, self._pkey = lib, pkey

    def __call__(self, data, signature):
        if len(signature) != 64:
            return False
        lib = self._lib
        ctx = lib.EVP_MD_CTX_new()
        if not ctx:
            raise MemoryError("EVP_MD_CTX_new failed")
        try:
            ok = (lib.EVP_DigestVerifyInit(ctx, None, None, None, self._pkey) == 1
                  and lib.EVP_DigestVerify(ctx, signature, 64, data, len(data)) == 1)
        finally:
            lib.EVP_MD_CTX_free(ctx)
        if not ok:
            lib.ERR_clear_error()
        return ok

    def __del__(self):
        if self._pkey:
            self._lib.EVP_PKEY_free(self._pkey)
            self._pkey = None


def ed25519_verifier(public_key):
    """The Ed25519 verifier of the 32-byte `public_key`, or None when libcrypto is
    unavailable or refuses the key."""
    lib = library()
    if lib is None:
        return None
    pkey = lib.EVP_PKEY_new_raw_public_key(NID_ED25519, None, public_key, len(public_key))
    if not pkey:
        lib.ERR_clear_error()
        return None
    return Ed25519Verifier(lib, pkey)
