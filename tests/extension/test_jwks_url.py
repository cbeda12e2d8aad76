"""Keys from an identity provider's JWKS URL, on every major: fetched before the first
connection, rotated without restarting anything, kept while the issuer is away, and
never fetched from anywhere a client names.

The issuer is tests/support/jwks_server.py in a container on a Docker network made
for this module, speaking https with a CA and server certificate generated here; the
test rotates keys by replacing the files it serves. A second, plain-http server on the
same network records every request that reaches it: what clients try must leave it at 0.
"""

import re
import time
import uuid

import psycopg
import pytest

from devtools.jwt import generate_key, mint
from tests.support.issuer import AUDIENCE, REFRESH_MIN, ca_volume, jwks_env
from tests.support.sql import init_refusal, session_user

pytestmark = [pytest.mark.container, pytest.mark.slow]

@pytest.fixture(scope="module")
def old_key():
    return generate_key("EdDSA")


@pytest.fixture(scope="module")
def new_key():
    return generate_key("ES256")


@pytest.fixture(scope="module")
def setup(image, network, start_container, issuers, old_key):
    """One server trusting the https issuer, which publishes `old_key`; a recorder elsewhere."""
    issuer = issuers()
    elsewhere = issuers(tls=False)
    elsewhere.publish(generate_key("EdDSA"))
    issuer.publish(old_key)
    pg = start_container(image, environment=jwks_env(issuer), volumes=ca_volume(issuer),
                         network=network)
    with pg.connect() as admin:
        admin.execute("create role app login password 'app-password'")
    return pg, issuer, elsewhere


def app(pg, **kwargs):
    return pg.connect(user="app", password="app-password", **kwargs)


def token(key, sub="alice", **claims):
    return mint(key, sub=sub, claims={"aud": AUDIENCE, **claims})


def wait_past_refresh_min():
    time.sleep(REFRESH_MIN + 0.5)


def test_the_first_connection_is_served(setup, old_key):
    pg, issuer, _ = setup
    assert issuer.hits()[:1] == ["GET /jwks.json"]  # the entrypoint's fetch, before postgres
    assert "fetched the key set from https://" in pg.logs()
    with app(pg) as conn:
        assert session_user(conn, token(old_key)) == "alice"
        settings = dict(conn.execute("select name, setting from pg_settings "
                                     "where name like 'pg_session_jwt.%'").fetchall())
        assert conn.execute("show pg_session_jwt.require_jti").fetchone()[0] == "off"
    assert not any("issuer" in value or "http" in value for value in settings.values())


def test_rotation_without_restarting_anything(setup, old_key, new_key):
    pg, issuer, _ = setup
    with app(pg) as existing:
        old_token = token(old_key, sub="old")
        assert session_user(existing, old_token) == "old"
        # The issuer rotates: the new key only, the old one retired at once.
        issuer.publish(new_key)
        wait_past_refresh_min()
        with app(pg) as fresh:  # a new connection: its unknown kid triggers the refresh
            assert session_user(fresh, token(new_key, sub="new")) == "new"
            error = init_refusal(fresh, old_token)
            assert "matches no key" in str(error) and error.sqlstate == "23514"
        # The existing connection picks up the new set too; the old token, cached there,
        # was verified under the set that was refreshed away: verified again, refused.
        assert session_user(existing, token(new_key, sub="new-here")) == "new-here"
        assert "matches no key" in str(init_refusal(existing, old_token))
    assert len(issuer.hits()) >= 2
    assert re.search(r"the key set from https://\S+ changed: kids " + re.escape(new_key.get("kid")),
                     pg.logs())


def test_issuer_away_leaves_service_working(setup, new_key):
    pg, issuer, _ = setup
    issuer.publish(new_key, cache_control="max-age=1")  # stale almost at once
    wait_past_refresh_min()
    with app(pg) as conn:
        assert session_user(conn, token(new_key, sub="before")) == "before"
    hits = len(issuer.hits())
    issuer.container.stop(timeout=1)
    started = time.monotonic()
    tokens = [token(new_key, sub=f"user{i}") for i in range(30)]
    for i, jwt in enumerate(tokens):  # 30 new connections over ~3 refresh intervals
        with app(pg) as conn:
            assert session_user(conn, jwt) == f"user{i}"
        time.sleep(REFRESH_MIN * 3 / len(tokens))
    elapsed = time.monotonic() - started
    failures = re.findall(r"could not refresh the key set from \S+: cannot reach the issuer[^\n]*"
                          r"keeping the key set", pg.logs())
    # One LOG line per failed attempt, and at most one attempt per REFRESH_MIN server-wide.
    assert 1 <= len(failures) <= elapsed / REFRESH_MIN + 1
    (issuer.folder / "ready").unlink()
    issuer.container.start()  # served again for the tests below
    deadline = time.monotonic() + 20
    while not (issuer.folder / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(issuer.hits()) == hits


def test_a_client_cannot_make_the_server_fetch_elsewhere(setup, new_key):
    pg, issuer, elsewhere = setup
    stranger = generate_key("EdDSA")
    attempts = [
        f"-c pg_session_jwt.jwks_url={elsewhere.url}",
        f"-c pg_session_jwt.jwks_url={elsewhere.url} -c pg_session_jwt.jwks_allow_http=on "
        "-c pg_session_jwt.jwks_ca_file=/dev/null -c pg_session_jwt.jwks_refresh_min=1",
    ]
    for options in attempts:
        with app(pg, options=options) as conn:
            conn.execute(f"set pg_session_jwt.jwks_url = '{elsewhere.url}'")
            conn.execute("select set_config('pg_session_jwt.jwks_url', %s, false)", [elsewhere.url])
            with pytest.raises(psycopg.Error):
                conn.execute("alter role app set pg_session_jwt.jwks_url = 'http://x'")
            # A kid nobody knows makes the server refresh: from its own URL only.
            wait_past_refresh_min()
            assert "matches no key" in str(init_refusal(conn, token(stranger)))
            # A token naming a key URL is refused before any key is looked up.
            header = {"jku": elsewhere.url, "x5u": elsewhere.url}
            assert "refused" in str(init_refusal(conn, mint(stranger, header=header,
                                                       claims={"aud": AUDIENCE})))
            assert session_user(conn, token(new_key)) == "alice"
    with pg.connect() as admin:  # even a superuser's role setting is never read as a URL
        admin.execute(f"alter role app set pg_session_jwt.jwks_url = '{elsewhere.url}'")
    with app(pg) as conn:
        assert session_user(conn, token(new_key)) == "alice"
    assert elsewhere.hits() == []


def test_request_claims_give_no_identity(setup):
    """PostgREST's setting is trusted only without any key source; a URL is one."""
    pg, _, _ = setup
    with app(pg) as conn:
        conn.execute("""set request.jwt.claims = '{"sub": "mallory"}'""")
        assert conn.execute("select auth.user_id(), auth.session()").fetchone() == (None, None)


def test_http_needs_allow_http(image, network, start_container, issuers, old_key):
    plain = issuers(tls=False)
    plain.publish(old_key)
    pg = start_container(image, environment=jwks_env(plain), network=network, wait=False)
    assert pg.wait_exit() != 0
    assert "PG_SESSION_JWT_JWKS_ALLOW_HTTP=on" in pg.logs()
    assert plain.hits() == []
    pg = start_container(image, network=network,
                         environment=jwks_env(plain, PG_SESSION_JWT_JWKS_ALLOW_HTTP="on"))
    with app_role(pg) as conn:
        assert session_user(conn, token(old_key)) == "alice"


def app_role(pg):
    with pg.connect() as admin:
        admin.execute("create role app login password 'app-password'")
    return app(pg)


def test_refused_starts_name_the_problem(image, network, start_container, issuers, old_key):
    issuer = issuers()
    issuer.publish(old_key)
    cases = [
        # No CA for the issuer's certificate: not trusted.
        ({k: v for k, v in jwks_env(issuer).items() if k != "PG_SESSION_JWT_JWKS_CA_FILE"},
         {}, "certificate not trusted"),
        # No audience: the provider's tokens for other applications would work here.
        ({k: v for k, v in jwks_env(issuer).items() if k != "PG_SESSION_JWT_AUDIENCE"},
         ca_volume(issuer), "PG_SESSION_JWT_AUDIENCE is not"),
    ]
    for env, volumes, phrase in cases:
        pg = start_container(image, environment=env, volumes=volumes, network=network, wait=False)
        assert pg.wait_exit() != 0
        assert phrase in pg.logs() and "start refused" in pg.logs()


def test_unreachable_issuer_at_start_serves_no_identity(image, network, start_container,
                                                        old_key):
    url = f"https://pgjwt-nowhere-{uuid.uuid4().hex[:8]}:8443/jwks.json"
    pg = start_container(image, network=network, environment={
        "PG_SESSION_JWT_JWKS_URL": url, "PG_SESSION_JWT_AUDIENCE": AUDIENCE})
    assert "Starting without keys" in pg.logs()
    with pg.connect() as conn:
        error = init_refusal(conn, token(old_key))
        assert error.sqlstate == "02000" and url in str(error)
        assert "cannot reach the issuer" in str(error)


def test_key_sets_shows_the_url_and_its_kids_to_every_role(setup):
    pg, issuer, _ = setup
    with app(pg) as conn:
        [(source, kids, fetched_at, good_until)] = conn.execute(
            "select source, kids, fetched_at, good_until from auth.key_sets()").fetchall()
    assert source == issuer.url and kids and fetched_at <= good_until
