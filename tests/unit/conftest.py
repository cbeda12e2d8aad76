"""Unit tests of the extension's Python package import it from extension/, as the image
installs it (a plain package in the Python that PL/Python embeds)."""

import sys

import pytest
from extension_support import EXTENSION

from scripts.jwt import ALGORITHMS, generate_key

sys.path.insert(0, str(EXTENSION))


@pytest.fixture(scope="session")
def signing_keys():
    """A fresh private JWK for every algorithm the extension verifies."""
    return {alg: generate_key(alg) for alg in ALGORITHMS}
