"""Ed25519 verification through the OpenSSL libcrypto that the server process already holds.

Why not `cryptography` here: in a new backend, importing its Rust bindings costs about
15 ms (more on a busy host), half of the cold-path budget of a connection. PostgreSQL is
linked against libcrypto, so EVP_DigestVerify is already in memory and costs only the
import of ctypes. Only Ed25519 goes this way — a fixed 32-byte key and one call, nothing
to encode — while EC and RSA keys use `cryptography`. `verifier()` returns None where no
libcrypto 1.1.1+ can be found, and keys.py then uses `cryptography` for Ed25519 too.

OpenSSL rejects non-canonical signatures (S >= L), as RFC 8032 requires; a failed check
leaves errors on OpenSSL's per-thread queue, which is cleared so that the server's own TLS
code never reads them as its own.
"""

import ctypes
import weakref

NID_ED25519 = 1087  # fixed in OpenSSL's obj_mac.h since 1.1.1
_LIBRARIES = (None, "libcrypto.so.3", "libcrypto.so.1.1")  # None: the running process
_lib = False  # False: not looked up yet; None: not available


def _load():
    """libcrypto with the six functions typed, or None."""
    p, size = ctypes.c_void_p, ctypes.c_size_t
    for name in _LIBRARIES:
        try:
            lib = ctypes.CDLL(name)
            lib.EVP_PKEY_new_raw_public_key.argtypes = (ctypes.c_int, p, ctypes.c_char_p, size)
            lib.EVP_PKEY_new_raw_public_key.restype = p
            lib.EVP_PKEY_free.argtypes = (p,)
            lib.EVP_PKEY_free.restype = None
            lib.EVP_MD_CTX_new.argtypes = ()
            lib.EVP_MD_CTX_new.restype = p
            lib.EVP_MD_CTX_free.argtypes = (p,)
            lib.EVP_MD_CTX_free.restype = None
            lib.EVP_DigestVerifyInit.argtypes = (p, p, p, p, p)
            lib.EVP_DigestVerifyInit.restype = ctypes.c_int
            lib.EVP_DigestVerify.argtypes = (p, ctypes.c_char_p, size, ctypes.c_char_p, size)
            lib.EVP_DigestVerify.restype = ctypes.c_int
            lib.ERR_clear_error.argtypes = ()
            lib.ERR_clear_error.restype = None
        except (OSError, AttributeError):
            continue
        return lib
    return None


def library():
    """The typed libcrypto, looked up once per process, or None."""
    global _lib
    if _lib is False:
        _lib = _load()
    return _lib


def verifier(public_key):
    """A function (data, signature) -> bool checking Ed25519 signatures by the 32-byte
    `public_key`, or None when libcrypto is unavailable or refuses the key."""
    lib = library()
    if lib is None:
        return None
    pkey = lib.EVP_PKEY_new_raw_public_key(NID_ED25519, None, public_key, len(public_key))
    if not pkey:
        lib.ERR_clear_error()
        return None

    def verify(data, signature):
        if len(signature) != 64:
            return False
        ctx = lib.EVP_MD_CTX_new()
        if not ctx:
            raise MemoryError("EVP_MD_CTX_new failed")
        try:
            ok = (lib.EVP_DigestVerifyInit(ctx, None, None, None, pkey) == 1
                  and lib.EVP_DigestVerify(ctx, signature, 64, data, len(data)) == 1)
        finally:
            lib.EVP_MD_CTX_free(ctx)
        if not ok:
            lib.ERR_clear_error()
        return ok

    weakref.finalize(verify, lib.EVP_PKEY_free, pkey)
    return verify
