"""A new backend imports only what verification needs: no `re`, `json`, `base64` or `enum`
(about 5 ms, 12 ms on a busy host, of a connection's cold path), no `ctypes` (2-3 ms, 6-8 ms on
Python 3.14; ffi.py binds C functions on `_ctypes` instead), and the stand-ins that replace
them (encoding.json_dumps, session._uuid) agree with what they replace."""

import json
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pg_session_jwt import session
from pg_session_jwt.encoding import json_dumps

from builder.matrix import ROOT
from devtools.jwt import ALGORITHMS, generate_key, mint, public_jwk
from tests.support import sodium

# The interpreter below runs isolated (-S -I, as cold as a new backend): it finds the package
# where the image puts it on its path, here the source folder.
EXTENSION = ROOT / "extension"

HEAVY = ("re", "json", "base64", "enum", "ctypes", "sysconfig", "cryptography", "jwcrypto")
# PostgreSQL's uuid input (string_to_uuid in uuid.c) as a regular expression: 32 hex digits,
# a hyphen allowed after any group of four but the last, braces only as a pair.
_BODY = r"[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}"
UUID = re.compile(rf"{_BODY}|\{{{_BODY}\}}")


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
def test_verifying_imports_nothing_heavy(alg):
    """What a backend runs for auth.init() and jwt_session_init(), in a fresh interpreter
    started with -S -I (no site: nothing else has imported these modules before)."""
    key = generate_key(alg)
    # libsodium as in the image: the bundled copy (tests/support/sodium.py) stands in for it,
    # for the algorithm that uses it (importing it for the others would hide their imports).
    bind_sodium = ("from pg_session_jwt import libsodium\n"
                   f"libsodium.SONAMES = ({sodium.library_path()!r},)\n") if alg == "EdDSA" else ""
    program = (
        "import sys\n"
        f"sys.path.insert(0, {str(EXTENSION)!r})\n"
        f"{bind_sodium}"
        "from pg_session_jwt.session import Backend\n"
        "jwk, jwt = sys.stdin.read().split('\\n')\n"
        "backend = Backend()\n"
        "backend.configure({'jwk': jwk, 'require_jti': 'on'})\n"
        "import time\n"
        "s = backend.verify(jwt, time.time())\n"
        "assert s.sub == 'alice' and s.organization is not None and s.uid is None\n"
        f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}\n"
        "                or m in ('pg_session_jwt.libcrypto', 'pg_session_jwt.der',\n"
        "                         'pg_session_jwt.libsodium', 'pg_session_jwt.jwks')))\n"
    )
    token = mint(key, sub="alice", claims={"o": {"id": "x", "n": [1, 2.5, None]}})
    out = subprocess.run([sys.executable, "-S", "-I", "-c", program],
                         input=f"{public_jwk(key)}\n{token}", capture_output=True, text=True,
                         check=True).stdout
    # An Ed25519 issuer's backends load neither libcrypto.py nor der.py (libsodium verifies),
    # an EC or RSA issuer's not libsodium.py; with a key at connection start no backend loads
    # jwks.py (the JWKS URL's machinery).
    expected = (["pg_session_jwt.libsodium"] if alg == "EdDSA"
                else ["pg_session_jwt.der", "pg_session_jwt.libcrypto"])
    assert sorted(out.split()) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=25)


@given(json_values)
def test_json_dumps_is_json_dumps(value):
    assert json_dumps(value) == json.dumps(value)


@given(st.text(alphabet="0123456789abcdefABCDEFxg{}- ", max_size=40))
def test_uuid_check_is_the_regular_expression(text):
    assert session._uuid(text) == (text if UUID.fullmatch(text) else None)


@pytest.mark.parametrize("text", [
    "6f1c3b1e-8a5b-4e8e-9d7a-2f6c1b2a3d4e", "{6f1c3b1e-8a5b-4e8e-9d7a-2f6c1b2a3d4e}",
    "6f1c3b1e8a5b4e8e9d7a2f6c1b2a3d4e", "{6f1c3b1e8a5b4e8e9d7a2f6c1b2a3d4e",
    "6f1c3b1e-8a5b4e8e-9d7a2f6c1b2a3d4e", "6F1C3B1E-8A5B-4E8E-9D7A-2F6C1B2A3D4E",
    "6f1c3b1e-8a5b-4e8e-9d7a-2f6c1b2a3d4", "6f1c3b1e-8a5b-4e8e-9d7a-2f6c1b2a3d4e-",
    "6f1c3b1e--8a5b-4e8e-9d7a-2f6c1b2a3d4e", "6f1c3b1e-8a5b-4e8e-9d7a-2f6c1b2a3d4e}}",
    "6f1c3b1e-8a5b-4e8e-9d7a-2f6c1b2a3d4g", "-6f1c3b1e8a5b4e8e9d7a2f6c1b2a3d4e", "", 7, None,
])
def test_uuid_check_examples(text):
    expected = text if isinstance(text, str) and UUID.fullmatch(text) else None
    assert session._uuid(text) == expected
