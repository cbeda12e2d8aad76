"""Ed25519 verification through libsodium (Debian's libsodium23, libsodium26 from forky on),
called through ffi.py.

Why libsodium for Ed25519: on the machines measured, OpenSSL 3 takes about 200 us per
Ed25519 verification (its generic EVP path and portable field arithmetic) and libsodium
about 57 us, which is most of what `auth.jwt_session_init()` costs with a fresh token.
`verifier()` returns None where the library cannot be loaded; keys.py then uses libcrypto.

libsodium is stricter than RFC 8032 and than OpenSSL: besides S >= L (which both refuse),
crypto_sign_verify_detached refuses public keys and R values of small order and
non-canonical public key encodings. Honest signers never produce either; keys.py refuses
such keys itself, so that both libraries accept exactly the same keys.
"""

import os
import sys

from .ffi import Library, c_char_p, c_int, c_ulonglong

# Newest first; crypto_sign_verify_detached is the same function in both.
SONAMES = ("libsodium.so.26", "libsodium.so.23")
_lib = False  # False: not looked up yet; None: not available


def _candidates():
    """The files to try, in order: each soname in Debian's multiarch library directory, by
    full path, then each bare soname (other layouts). A bare soname the system lacks sends
    the dynamic loader through every hardware-capability directory (about 150 failed opens
    and stats on x86-64): on a container's FUSE-backed root file system that was 10-15 ms
    of a new backend's first call, where a full path that is missing costs one failed open."""
    multiarch = getattr(sys.implementation, "_multiarch", None)
    if multiarch:
        yield from (os.path.join("/usr/lib", multiarch, name) for name in SONAMES)
    yield from SONAMES


def _load():
    for name in _candidates():
        try:
            lib = Library(name)
        except OSError:
            continue
        init = lib.function("sodium_init", c_int)
        verify = lib.function("crypto_sign_verify_detached", c_int,
                              (c_char_p, c_char_p, c_ulonglong, c_char_p))
        # sodium_init: 0 initialised now, 1 already initialised; -1 unusable (no entropy).
        if init is None or verify is None or init() < 0:
            continue
        lib.crypto_sign_verify_detached = verify
        return lib
    return None


def library():
    """libsodium, looked up once per process, or None."""
    global _lib
    if _lib is False:
        _lib = _load()
    return _lib


class Ed25519Verifier:
    """verify(data, signature) -> bool for one 32-byte Ed25519 public key."""

    __slots__ = ("_verify", "_key")

    def __init__(self, lib, public_key):
        self._verify, self._key = lib.crypto_sign_verify_detached, bytes(public_key)

    def __call__(self, data, signature):
        # The C function reads exactly 64 bytes of signature: a shorter one must not reach it.
        return len(signature) == 64 and self._verify(signature, data, len(data), self._key) == 0


def verifier(public_key):
    """The Ed25519 verifier of the 32-byte `public_key`, or None without libsodium."""
    lib = library()
    if lib is None or len(public_key) != 32:
        return None
    return Ed25519Verifier(lib, public_key)
