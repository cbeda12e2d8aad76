"""The JWKS cache file authenticated by PG_SESSION_JWT_JWKS_SECRET: a file planted by
anyone who can write as the server's user (COPY TO with pg_write_server_files) is not
taken, the server's own file is, and a bad secret names the variable."""

import json

import pytest
from pg_session_jwt import jwks
from pg_session_jwt.errors import JwtError

from devtools.jwt import generate_key, public_jwk
from tests.support.jwks_fakes import URL, Clock, Issuer, kids

SECRET = b"s" * 32


def source(tmp_path, issuer, secret=SECRET, log=None):
    return jwks.Source(jwks.Config(URL, 60, secret=secret), directory=str(tmp_path),
                       fetcher=issuer, clock=Clock(), log=log)


def document(key):
    return jwks.Document(URL, json.dumps({"keys": [json.loads(public_jwk(key))]}), Clock().now,
                         86400)


@pytest.fixture(scope="module")
def keys():
    return generate_key("EdDSA"), generate_key("EdDSA")


@pytest.mark.parametrize("mac", [None, "wrong", "other secret"])
def test_a_planted_file_is_ignored_and_said_so(tmp_path, keys, mac):
    good, planted = keys
    text = document(planted).to_json(b"o" * 32 if mac == "other secret" else None)
    if mac == "wrong":
        text = json.dumps({**json.loads(text), "mac": "0" * 64})
    (tmp_path / jwks.CACHE_NAME).write_text(text)
    lines = []
    mine = source(tmp_path, Issuer(good), log=lines.append)
    assert mine.reload() is False and mine.keyset is None
    assert any(jwks.SECRET_VARIABLE in line for line in lines), lines
    # The first use fetches the real set instead, and writes it with its MAC.
    assert kids(mine.current()) == {good.get("kid")}
    assert "mac" in json.loads((tmp_path / jwks.CACHE_NAME).read_text())


def test_the_servers_own_file_is_read_by_every_backend(tmp_path, keys):
    good, _ = keys
    writer = source(tmp_path, Issuer(good))
    writer.current()
    reader = source(tmp_path, Issuer())
    assert reader.reload() is True and kids(reader.keyset) == {good.get("kid")}


def test_a_changed_field_breaks_the_mac(tmp_path, keys):
    good, planted = keys
    value = json.loads(document(good).to_json(SECRET))
    value["jwks"] = document(planted).jwks
    (tmp_path / jwks.CACHE_NAME).write_text(json.dumps(value))
    assert source(tmp_path, Issuer()).reload() is False


def test_without_a_secret_the_file_is_trusted_by_owner_and_mode(tmp_path, keys):
    """An image run without its entrypoint and no secret: as before."""
    good, _ = keys
    (tmp_path / jwks.CACHE_NAME).write_text(document(good).to_json())
    assert source(tmp_path, Issuer(), secret=None).reload() is True


def test_the_secret_comes_from_the_environment_and_a_short_one_is_refused():
    config = jwks.Config.from_env({jwks.URL_VARIABLE: URL, jwks.SECRET_VARIABLE: "x" * 40})
    assert config.secret == b"x" * 40
    assert jwks.Config.from_env({jwks.URL_VARIABLE: URL}).secret is None
    with pytest.raises(JwtError, match=jwks.SECRET_VARIABLE + " is too short"):
        jwks.Config.from_env({jwks.URL_VARIABLE: URL, jwks.SECRET_VARIABLE: "short"})
