"""Tokens of every provider's look-alike (tests/support/providers.py), several issuers in one
server, on every major: JWK Sets served over https with a test CA exactly as the providers
shape them (Keycloak's encryption key included), each recipe of the README accepted and its
audience and issuer checks on, an issuer going away while the others keep working, state
files planted with COPY ... TO, and auth.key_sets() for every role.
"""

import json
import time

import pytest
from pg_session_jwt import jwks

from devtools.jwt import generate_key, mint, public_jwk
from tests.support import providers
from tests.support.issuer import REFRESH_MIN, ca_volume
from tests.support.sql import init_refusal, session_user

pytestmark = [pytest.mark.container, pytest.mark.slow]

CA_FILE = "/etc/pgjwt-test-ca/ca.pem"


@pytest.fixture(scope="module")
def looks():
    """One look-alike of each provider, by its factory's name."""
    return {factory.__name__: factory() for factory in providers.PROVIDERS}


@pytest.fixture(scope="module")
def shared_kid():
    """Two issuers publishing the same kid for different keys."""
    return generate_key("EdDSA", kid="2026-01"), generate_key("EdDSA", kid="2026-01")


@pytest.fixture(scope="module")
def setup(image, network, start_container, issuers, looks, shared_kid):
    """One server trusting every look-alike (on one https server) and two more issuers with
    a shared kid, one of them on a server of its own that a test stops."""
    served, away = issuers(), issuers()
    entries = [look.issuer_entry(jwks_url=served.publish_document(name, look.jwks(),
                                                                   look.cache_control))
               for name, look in looks.items()]
    a_key, b_key = shared_kid
    entries.append({"issuer": "https://a.example", "audience": "db",
                    "jwks_url": served.publish_document("shared_a", json.dumps(
                        {"keys": [json.loads(public_jwk(a_key))]}), "max-age=1")})
    entries.append({"issuer": "https://b.example", "audience": "db",
                    "jwks_url": away.publish_document("shared_b", json.dumps(
                        {"keys": [json.loads(public_jwk(b_key))]}), "max-age=1"),
                    "ca_file": CA_FILE.replace("pgjwt-test-ca", "pgjwt-away-ca")})
    pg = start_container(image, network=network, environment={
        "PG_SESSION_JWT_ISSUERS": json.dumps(entries), "PG_SESSION_JWT_JWKS_CA_FILE": CA_FILE,
        "PG_SESSION_JWT_JWKS_REFRESH_MIN": str(REFRESH_MIN)},
        volumes={**ca_volume(served),
                 str(away.ca_folder): {"bind": "/etc/pgjwt-away-ca", "mode": "ro"}})
    with pg.connect() as admin:
        admin.execute("create role app login password 'app-password'")
        admin.execute("create role writer login password 'writer-password' "
                      "in role pg_write_server_files")
    return pg, served, away


def app(pg):
    return pg.connect(user="app", password="app-password")


def test_the_server_starts_with_every_provider_and_names_the_skipped_keys(setup, looks):
    pg, _, _ = setup
    logs = pg.logs()
    kc = looks["keycloak"]
    enc = next(m for m in kc.members if m.get("use") == "enc")
    assert f"fetched the key set of issuer {kc.issuer!r}" in logs
    assert f"skipped kid {enc['kid']!r} is an encryption key" in logs
    assert logs.count(f"skipped kid {enc['kid']!r}") == 1   # once at start, not per backend


@pytest.mark.parametrize("name", [f.__name__ for f in providers.PROVIDERS])
def test_each_provider_token_is_accepted_and_checked(setup, looks, name):
    pg, _, _ = setup
    look = looks[name]
    with app(pg) as conn:
        assert session_user(conn, look.token()) == look.user
        if not look.entry.get("allow_any_audience"):
            claim = look.entry.get("audience_claim", "aud")
            error = init_refusal(conn, look.token(**{claim: "another-app"}))
            assert error.sqlstate == "23514" and "does not match the audience" in str(error)
        error = init_refusal(conn, look.token(iss=look.issuer.rstrip("/") + "/x"))
        assert "is not one of the issuers this server trusts" in str(error)
        forged = generate_key(look.signing_key.get("alg"), kid=look.signing_key.get("kid"))
        error = init_refusal(conn, look.token(key=forged))
        assert "invalid JWT signature" in str(error) and look.issuer in str(error)


def test_a_token_naming_keycloaks_encryption_key_is_told_why(setup, looks):
    pg, _, _ = setup
    kc = looks["keycloak"]
    enc = next(m for m in kc.members if m.get("use") == "enc")
    with app(pg) as conn:
        error = init_refusal(conn, kc.token(header={"alg": "RS256", "kid": enc["kid"]}))
    assert f"JWT 'kid' {enc['kid']!r} is an encryption key" in str(error)


def test_a_shared_kid_verifies_only_with_the_keys_of_the_tokens_issuer(setup, shared_kid):
    pg, _, _ = setup
    a_key, b_key = shared_kid
    with app(pg) as conn:
        assert session_user(conn, mint(a_key, sub="alice", claims={"iss": "https://a.example",
                                                               "aud": "db"})) == "alice"
        assert session_user(conn, mint(b_key, sub="bob", claims={"iss": "https://b.example",
                                                             "aud": "db"})) == "bob"
        # A's key signing a token that claims to be B's.
        error = init_refusal(conn, mint(a_key, sub="mallory", claims={"iss": "https://b.example",
                                                                  "aud": "db"}))
        assert "invalid JWT signature" in str(error)
        assert "issuer 'https://b.example', kid '2026-01'" in str(error)


def test_key_sets_are_public_and_list_every_issuer(setup, looks):
    pg, _, _ = setup
    with app(pg) as conn:
        rows = {row[0]: row for row in conn.execute(
            "select issuer, source, kids, skipped, fetched_at, good_until, last_failure "
            "from auth.key_sets()").fetchall()}
    assert set(rows) == {look.issuer for look in looks.values()} | {"https://a.example",
                                                                    "https://b.example"}
    kc = looks["keycloak"]
    issuer, source, kids, skipped, fetched_at, good_until, failure = rows[kc.issuer]
    assert source.startswith("https://") and kids == [kc.signing_key.get("kid")]
    assert [entry["reason"] for entry in skipped] == ['is an encryption key ("use": "enc")']
    assert fetched_at < good_until and failure is None


def test_one_issuer_going_away_leaves_the_others_working(setup, looks, shared_kid):
    pg, served, away = setup
    a_key, b_key = shared_kid
    away.container.stop(timeout=1)
    try:
        time.sleep(REFRESH_MIN + 1.5)   # both shared-kid sets are stale (max-age=1)
        for i in range(3):
            with app(pg) as conn:
                assert session_user(conn, mint(b_key, sub=f"b{i}", claims={
                    "iss": "https://b.example", "aud": "db"})) == f"b{i}"   # kept set
                assert session_user(conn, mint(a_key, sub=f"a{i}", claims={
                    "iss": "https://a.example", "aud": "db"})) == f"a{i}"
                assert session_user(conn, looks["google"].token()) == looks["google"].user
            time.sleep(REFRESH_MIN / 2)
        with app(pg) as conn:
            row = conn.execute("select last_failure, failed_at from auth.key_sets() "
                               "where issuer = 'https://b.example'").fetchone()
        assert "cannot reach the issuer" in row[0] and row[1] is not None
    finally:
        (away.folder / "ready").unlink(missing_ok=True)
        away.container.start()


def test_planted_state_files_never_break_verification(setup, looks, shared_kid):
    """A role with pg_write_server_files writes what it likes over the state files."""
    pg, _, _ = setup
    a_key, _ = shared_kid
    cache, lock = jwks.Config("x", issuer="https://a.example").file_names()
    google_cache, _ = jwks.Config("x", issuer=looks["google"].issuer).file_names()
    with pg.connect(user="writer", password="writer-password") as writer:
        for name, content in ((lock, '{"attempted": "x"}'), (cache, '{"url": 1, "jwks": []}'),
                              (google_cache, "not json at all")):
            literal = "'" + content.replace("'", "''") + "'"   # COPY takes no parameters
            writer.execute(f"copy (select {literal}) to '/var/run/postgresql/{name}'")
    time.sleep(REFRESH_MIN + 1.5)
    for i in range(3):   # new connections: new backends read the planted files
        with app(pg) as conn:
            assert session_user(conn, mint(a_key, sub=f"a{i}", claims={
                "iss": "https://a.example", "aud": "db"})) == f"a{i}"
            assert session_user(conn, looks["google"].token()) == looks["google"].user
    assert "TypeError" not in pg.logs()
    assert "ignoring" in pg.logs()


def test_keycloak_alone_through_the_single_url_variable(image, network, start_container,
                                                         issuers, looks):
    """The first thing a Keycloak user tries: PG_SESSION_JWT_JWKS_URL at the realm's certs."""
    kc = looks["keycloak"]
    served = issuers()
    url = served.publish_document("realm", kc.jwks(), kc.cache_control)
    pg = start_container(image, network=network, volumes=ca_volume(served), environment={
        "PG_SESSION_JWT_JWKS_URL": url, "PG_SESSION_JWT_JWKS_CA_FILE": CA_FILE,
        "PG_SESSION_JWT_AUDIENCE": "db-api", "PG_SESSION_JWT_ISSUER": kc.issuer})
    with pg.connect() as conn:
        assert session_user(conn, kc.token()) == kc.user
        assert "is an encryption key" in pg.logs()


def test_issuers_from_the_settings_yaml(image, network, start_container, issuers, looks,
                                        tmp_path):
    clerk, neon = looks["clerk"], looks["neon_auth"]
    served = issuers()
    url = served.publish_document("clerk", clerk.jwks(), clerk.cache_control)
    import yaml

    config = tmp_path / "postgresql.yaml"
    config.write_text(yaml.safe_dump({"settings": {"work_mem": "8MB"}, "issuers": [
        clerk.issuer_entry(jwks_url=url, ca_file=CA_FILE),
        neon.issuer_entry(jwk=json.loads(neon.jwks()))]}))
    config.chmod(0o644)
    pg = start_container(image, network=network, environment={
        "PG_SESSION_JWT_CONFIG_YAML": "/etc/pgjwt-test.yaml"}, volumes={
        **ca_volume(served), str(config): {"bind": "/etc/pgjwt-test.yaml", "mode": "ro"}})
    with pg.connect() as conn:
        assert session_user(conn, clerk.token()) == clerk.user
        assert session_user(conn, neon.token()) == neon.user
        assert conn.execute("show pg_session_jwt.require_jti").fetchone()[0] == "off"
