"""libsodium for tests on the host: the copy PyNaCl bundles (a pinned wheel in
requirements-dev.txt), loaded with ctypes by path where the image's code looks up Debian's
libsodium23/26 by soname, so the host needs no libsodium package. It exports the same C
functions (crypto_sign_verify_detached, sodium_init); tests/extension/test_crypto_libraries.py
checks that the image's own libsodium is what each backend uses.
"""

import importlib.util
from contextlib import contextmanager

import pytest


def library_path():
    """The file of PyNaCl's bundled libsodium."""
    spec = importlib.util.find_spec("nacl._sodium")
    if spec is None:
        pytest.fail("PyNaCl is missing from this Python: run the tests from .venv (`make venv`)")
    return spec.origin


@contextmanager
def bound(module):
    """`module` (pg_session_jwt.libsodium or bench.raw_verify) loading the bundled libsodium
    instead of a soname, until the block ends."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "SONAMES", (library_path(),))
        if hasattr(module, "_lib"):
            patch.setattr(module, "_lib", False)  # looked up again, from that file
        yield
