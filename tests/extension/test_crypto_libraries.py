"""Signature checks in the image go through C libraries, never `cryptography`: Ed25519
through libsodium (installed in the image), ECDSA, RSA and RSA-PSS through the libcrypto
PostgreSQL links. One backend verifies a token of every algorithm, refuses a forgery of
each, and has imported neither `cryptography` nor jwcrypto."""

import json
import re

import psycopg
import pytest

from devtools.jwt import ALGORITHMS, generate_key, mint, public_jwk

pytestmark = pytest.mark.container

MODULES = ("create function pg_temp.modules() returns text[] language plpython3u as "
           "$$ import sys; return sorted(sys.modules) $$")
LIBRARIES = ("create function pg_temp.libraries() returns text[] language plpython3u as $$\n"
             "from pg_session_jwt import libcrypto, libsodium\n"
             "return [repr(libcrypto.library()), repr(libsodium.library())]\n$$")
VERIFIERS = ("create function pg_temp.verifier(kid text) returns text language plpython3u as $$\n"
             "from pg_session_jwt import pl\n"
             "key = pl.state.keys().select(kid)\n"
             "return type(next(iter(key.verifiers.values()))).__module__\n$$")


@pytest.fixture(scope="module")
def signers():
    """A key of every algorithm, each with its own kid, and an attacker's key per kid."""
    own = {alg: generate_key(alg, kid=f"k-{alg}") for alg in sorted(ALGORITHMS)}
    forged = {alg: generate_key(alg, kid=f"k-{alg}") for alg in own}
    jwks = json.dumps({"keys": [json.loads(public_jwk(key)) for key in own.values()]})
    return own, forged, jwks


def test_every_algorithm_verifies_without_cryptography(pg, signers):
    own, forged, jwks = signers
    with pg.connect(jwk=jwks) as conn:
        conn.execute("select auth.init()")
        for alg, key in own.items():
            conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub=f"user-{alg}")])
            assert conn.execute("select auth.user_id()").fetchone()[0] == f"user-{alg}"
            with pytest.raises(psycopg.Error) as info:
                conn.execute("select auth.jwt_session_init(%s)",
                             [mint(forged[alg], sub="mallory")])
            assert info.value.sqlstate == "23514"
            assert "invalid JWT signature" in info.value.diag.message_primary
        conn.execute(MODULES)
        modules = conn.execute("select pg_temp.modules()").fetchone()[0]
    assert "pg_session_jwt.libsodium" in modules and "pg_session_jwt.libcrypto" in modules
    assert [m for m in modules if m.split(".")[0] in ("cryptography", "jwcrypto")] == []


def test_ed25519_uses_libsodium_and_the_rest_the_servers_libcrypto(pg, signers):
    own, _, jwks = signers
    with pg.connect(jwk=jwks) as conn:
        conn.execute("select auth.init()")
        conn.execute(LIBRARIES)
        conn.execute(VERIFIERS)
        libcrypto, libsodium = conn.execute("select pg_temp.libraries()").fetchone()[0]
        used = {alg: conn.execute("select pg_temp.verifier(%s)", [f"k-{alg}"]).fetchone()[0]
                for alg in own}
    # None: found among the symbols the server process already holds, not loaded again.
    assert libcrypto == "<Library None>"
    # By full path: a bare soname the image lacks costs a new backend ~150 failed file lookups.
    assert re.fullmatch(r"<Library '/usr/lib/[^/]+/libsodium\.so\.2[36]'>", libsodium), libsodium
    assert used.pop("EdDSA") == "pg_session_jwt.libsodium"
    assert set(used.values()) == {"pg_session_jwt.libcrypto"}
