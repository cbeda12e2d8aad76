"""The pg_session_jwt extension in a real server, on every major: the API, every error
row of the original with its SQLSTATE, and each way a session could try to obtain an
identity it was not given (all must yield none).

Every test here runs against a database where the extension was freshly installed and
against one updated from each earlier version (the `pg` fixture below), so a new test is
an upgrade test too."""

import json
import time
import uuid

import psycopg
import pytest
from jwcrypto import jwk

from devtools.jwt import generate_key, mint, next_jti, public_jwk
from tests.support.installs import INSTALLS, drop_database, installed_database
from tests.support.jws import b64
from tests.support.jws import sign as sign_raw
from tests.support.sql import attempt, error, extension_version, identity, literal

pytestmark = pytest.mark.container

ORG = "6f1c3b1e-8a5b-4e8e-9d7a-2f6c1b2a3d4e"
GETTERS = "auth.user_id(), auth.uid(), auth.session(), auth.jwt(), auth.organization(), " \
          "auth.organization_id()"


def now():
    return int(time.time())


@pytest.fixture(scope="module", params=INSTALLS)
def pg(pg, request):
    """The module's container, aimed at a database holding the default version as
    `request.param` says: freshly installed, or updated from an earlier version."""
    target = installed_database(pg, request.param)
    yield target
    drop_database(pg, target)


@pytest.fixture(scope="module")
def attacker(key):
    """A key of the same type and kid as the real one, held by someone else."""
    return generate_key("EdDSA", kid=key.get("kid"))


# --- the API ---------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_session_and_getters(pg, keys, alg):
    key = keys[alg]
    sub = str(uuid.uuid4())
    token = mint(key, sub=sub, claims={"o": {"id": ORG, "name": "acme"}, "role": "member"})
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.init()")
        conn.execute("select auth.jwt_session_init(%s)", [token])
        user_id, uid, session, jwt, org, org_id = conn.execute(f"select {GETTERS}").fetchone()
    assert (user_id, str(uid), org_id) == (sub, sub, uuid.UUID(ORG))
    assert session == jwt and session["role"] == "member" and session["sub"] == sub
    assert org == {"id": ORG, "name": "acme"}


def test_getters_without_a_session(pg, key):
    with pg.connect(jwk=public_jwk(key)) as conn:
        row = conn.execute("select auth.session() = 'null'::jsonb, auth.jwt() = 'null'::jsonb, "
                           "auth.user_id(), auth.uid(), auth.organization(), auth.organization_id()"
                           ).fetchone()
    assert row == (True, True, None, None, None, None)


def test_session_init_works_without_init_and_accepts_newer_tokens(pg, key):
    with pg.connect(jwk=public_jwk(key)) as conn:
        for sub in ("first", "second"):
            conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub=sub)])
            assert identity(conn) == sub


def test_uid_and_organization_null_when_not_uuid_or_object(pg, key):
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice", claims={"o": "acme"})])
        assert conn.execute("select auth.uid(), auth.organization(), auth.organization_id()"
                            ).fetchone() == (None, None, None)


def test_jwks_key_rotation(pg):
    old, new = generate_key("ES256", kid="2025"), generate_key("RS256", kid="2026")
    jwks = json.dumps({"keys": [json.loads(public_jwk(old)), json.loads(public_jwk(new))]})
    with pg.connect(jwk=jwks) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [mint(old, sub="old")])
        assert identity(conn) == "old"
        conn.execute("select auth.jwt_session_init(%s)", [mint(new, sub="new")])
        assert identity(conn) == "new"
        stranger = generate_key("EdDSA", kid="2027")
        assert error(conn, "select auth.jwt_session_init(%s)", [mint(stranger, sub="x")])[0] == "23514"


def test_getters_are_inlined_sql_wrappers(pg, key):
    with pg.connect(jwk=public_jwk(key)) as conn:
        plan = "\n".join(r[0] for r in conn.execute(
            "explain verbose select auth.user_id() from generate_series(1, 3)"))
    assert "_user_id(current_setting('pg_session_jwt.jwt'::text, true)" in plan


def test_without_a_jwk_getters_read_request_jwt_claims_when_trusted_at_connect(pg):
    claims = json.dumps({"sub": str(uuid.uuid4()), "o": {"id": ORG}})
    with pg.connect(options="-c pg_session_jwt.trust_request_claims=on") as conn:
        conn.execute("select set_config('request.jwt.claims', %s, false)", [claims])
        row = conn.execute("select auth.user_id(), auth.uid()::text, auth.organization_id()::text, "
                           "auth.session()").fetchone()
        assert row == (json.loads(claims)["sub"],) * 2 + (ORG, json.loads(claims))
        for bad in ("", "not json"):
            conn.execute("select set_config('request.jwt.claims', %s, false)", [bad])
            assert conn.execute("select auth.user_id(), auth.session() = 'null'::jsonb").fetchone() == (
                None, True)


def test_with_a_jwk_request_jwt_claims_are_ignored(pg, key):
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("""select set_config('request.jwt.claims', '{"sub": "mallory"}', false)""")
        assert identity(conn) is None


# --- the error table of the original, and the extras ------------------------------------

def test_no_jwk_is_02000(pg):
    with pg.connect() as conn:
        state, message = error(conn, "select auth.init()")
        assert state == "02000" and "Missing runtime parameter: pg_session_jwt.jwk" in message


@pytest.mark.parametrize("bad_jwk, phrase", [
    ('{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}', "symmetric"),
    ("not json", "not valid JSON"),
    ('{"kty": "RSA", "n": "AQAB", "e": "AQAB"}', "2048"),
])
def test_unusable_jwk_is_42804_without_key_material(pg, bad_jwk, phrase):
    with pg.connect(jwk=bad_jwk) as conn:
        state, message = error(conn, "select auth.init()")
    assert state == "42804" and phrase in message and "c2VjcmV0" not in message


def test_private_jwk_is_refused_without_echoing_it(pg, key):
    private = json.loads(key.export_private())
    with pg.connect(jwk=json.dumps(private)) as conn:
        state, message = error(conn, "select auth.init()")
    assert state == "42804" and "private" in message and private["d"] not in message


def bad_tokens(key, attacker):
    """(name, token, SQLSTATE, phrase) for every refused token."""
    ok = mint(key, sub="a")
    h, p, s = ok.split(".")
    kid = key.get("kid")
    hdr = {"alg": "EdDSA", "kid": kid}
    return [
        ("two parts", f"{h}.{p}", "42804", "invalid JWT encoding"),
        ("four parts", f"{ok}.AAAA", "42804", "invalid JWT encoding"),
        ("JWE", "a.b.c.d.e", "42804", "JWE"),
        ("padding", f"{h}.{p}=.{s}", "42804", "invalid JWT encoding"),
        ("bad JSON", sign_raw(key, b"not json"), "42804", "could not parse JWT component"),
        ("invalid UTF-8", sign_raw(key, b'{"sub": "\xff"}'), "42804", "could not parse JWT component"),
        ("duplicate claims", sign_raw(key, b'{"jti": %d, "sub": "a", "sub": "b"}' % next_jti()),
         "42804", "could not parse JWT component"),
        ("deeply nested header", f"{b64(b'[' * 12000)}.{p}.{s}", "42804", "could not parse JWT component"),
        ("bad signature", mint(attacker, sub="mallory"), "23514", "invalid JWT signature"),
        ("tampered payload", f"{h}.{b64(json.dumps({'sub': 'mallory', 'jti': next_jti()}).encode())}.{s}",
         "23514", "invalid JWT signature"),
        ("jti missing", sign_raw(key, b'{"sub": "a"}'), "42804",
         "JWT payload must contain a valid 'jti' (JWT ID)"),
        ("jti a string", mint(key, sub="a", claims={"jti": "12"}), "42804", "valid 'jti'"),
        ("nbf in the future", mint(key, sub="a", claims={"nbf": now() + 3600}), "23514",
         "Token used before it is ready"),
        ("exp in the past", mint(key, sub="a", claims={"exp": now() - 3600}), "23514",
         "Token used after it has expired"),
        ("exp a string", mint(key, sub="a", claims={"exp": str(now() + 60)}), "42804", "'exp'"),
        ("exp a boolean", mint(key, sub="a", claims={"exp": True}), "42804", "'exp'"),
        ("exp null", mint(key, sub="a", claims={"exp": None}), "42804", "'exp'"),
        ("exp 1e400", sign_raw(key, b'{"jti": %d, "exp": 1e400}' % next_jti()), "42804",
         "could not parse JWT component"),
        ("exp NaN", sign_raw(key, b'{"jti": %d, "exp": NaN}' % next_jti()), "42804",
         "could not parse JWT component"),
        ("nbf a float", mint(key, sub="a", claims={"nbf": now() + 0.5}), "42804", "'nbf'"),
        ("alg none", f"{b64(json.dumps({'alg': 'none'}).encode())}.{p}.", "42804", "'none'"),
        ("alg NoNe", f"{b64(json.dumps({'alg': 'NoNe'}).encode())}.{p}.", "42804", "'none'"),
        ("HS256 with the public key", sign_raw(jwk.JWK(kty="oct", k=b64(public_jwk(key).encode())),
                                               b'{"sub": "mallory"}', {"alg": "HS256", "kid": kid}),
         "42804", "not supported"),
        ("alg not the key's", mint(generate_key("ES256", kid=kid), sub="m"), "23514", "does not match"),
        ("crit", sign_raw(key, b"{}", {**hdr, "crit": ["b64"], "b64": True}), "42804", "'crit'"),
        ("embedded jwk", sign_raw(attacker, b"{}", {**hdr, "jwk": json.loads(public_jwk(attacker))}),
         "42804", "jwk refused"),
        ("jku", sign_raw(attacker, b"{}", {**hdr, "jku": "https://evil.example/k"}), "42804", "jku"),
        ("x5u", sign_raw(attacker, b"{}", {**hdr, "x5u": "https://evil.example/c"}), "42804", "x5u"),
        ("x5c", sign_raw(attacker, b"{}", {**hdr, "x5c": ["MIIB"]}), "42804", "x5c"),
        ("unknown kid", mint(generate_key("EdDSA", kid="other"), sub="m"), "23514", "matches no key"),
        ("over 16 KiB", mint(key, sub="a", claims={"pad": "x" * 17000}), "54000", "max_token_bytes"),
    ]


def test_refused_tokens_give_their_sqlstate_and_no_traceback(pg, key, attacker):
    with pg.connect(jwk=public_jwk(key)) as conn:
        for name, token, state, phrase in bad_tokens(key, attacker):
            got_state, message = error(conn, "select auth.jwt_session_init(%s)", [token])
            assert got_state == state, name
            assert phrase in message, (name, message)
            assert "Traceback" not in message and token not in message, name
            # Raised by PL/pgSQL (0.2.0): the bare message, no Python in the error at all.
            if extension_version(conn) >= (0, 2, 0):
                failure = attempt(conn, "select auth.jwt_session_init(%s)", [token])
                assert not message.startswith("plpy."), message
                assert "Python" not in (failure.diag.context or ""), failure.diag.context
            conn.execute(f"set pg_session_jwt.jwt = {literal(token)}")
            assert error(conn, "select auth.user_id()")[0] == state, name
            conn.execute("reset pg_session_jwt.jwt")
        # The backend survived every one of them.
        assert conn.execute("select 1").fetchone() == (1,)


def test_jti_must_increase_and_the_current_token_may_be_presented_again(pg, key):
    first, second = mint(key, sub="a"), mint(key, sub="b")
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [second])
        conn.execute("select auth.jwt_session_init(%s)", [second])
        state, message = error(conn, "select auth.jwt_session_init(%s)", [first])
    assert state == "23514" and "Token ID must be strictly monotonically increasing." in message


def test_sub_not_a_string_is_42804_from_user_id(pg, key):
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, claims={"sub": 42})])
        state, message = error(conn, "select auth.user_id()")
        assert state == "42804" and "invalid subject claim in the JWT" in message
        assert conn.execute("select auth.session()->'sub'").fetchone()[0] == 42


def test_audience_and_issuer_from_connection_options(pg, key):
    options = "-c pg_session_jwt.audience=app -c pg_session_jwt.issuer=https://issuer.example"
    with pg.connect(jwk=public_jwk(key), options=options) as conn:
        good = mint(key, sub="a", claims={"aud": "app", "iss": "https://issuer.example"})
        conn.execute("select auth.jwt_session_init(%s)", [good])
        assert identity(conn) == "a"
        wrong_aud = mint(key, sub="b", claims={"aud": "other", "iss": "https://issuer.example"})
        assert error(conn, "select auth.jwt_session_init(%s)", [wrong_aud])[0] == "23514"
        wrong_iss = mint(key, sub="b", claims={"aud": "app", "iss": "https://evil.example"})
        assert error(conn, "select auth.jwt_session_init(%s)", [wrong_iss])[0] == "23514"


# --- the security model: no identity from anything set after connecting -----------------

KEY_SETTERS = {
    "SET": ["set pg_session_jwt.jwk = {jwk}"],
    "set_config": ["select set_config('pg_session_jwt.jwk', {jwk}, false)"],
    "SET LOCAL": ["begin", "set local pg_session_jwt.jwk = {jwk}"],
}


@pytest.mark.parametrize("how", sorted(KEY_SETTERS))
@pytest.mark.parametrize("key_at_connect", [True, False], ids=["jwk-at-connect", "no-jwk-at-connect"])
def test_a_key_set_after_connect_is_never_used(pg, key, attacker, how, key_at_connect):
    forged = mint(attacker, sub="mallory")
    evil = literal(public_jwk(attacker))
    with pg.connect(jwk=public_jwk(key) if key_at_connect else None) as conn:
        for statement in KEY_SETTERS[how]:
            conn.execute(statement.format(jwk=evil))
        # The first capture of this backend happens now, with the attacker's key in effect.
        state = error(conn, "select auth.jwt_session_init(%s)", [forged])[0]
        assert state == ("23514" if key_at_connect else "02000")
        conn.execute("select set_config('pg_session_jwt.jwt', %s, false)", [forged])
        assert identity(conn) is None and identity(conn, "auth.session()") is None


def test_a_function_set_clause_cannot_change_the_key(pg, key, attacker):
    forged = mint(attacker, sub="mallory")
    name = f"pg_temp.f_{uuid.uuid4().hex[:8]}"
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute(f"create function {name}(t text) returns text language plpgsql "
                     f"set pg_session_jwt.jwk = {literal(public_jwk(attacker))} "
                     "as $$ begin perform auth.jwt_session_init(t); return auth.user_id(); end $$")
        state, _ = error(conn, f"select {name}(%s)", [forged])
        assert state == "23514"
        assert identity(conn) is None


def test_a_forged_jwt_setting_never_yields_an_identity(pg, key, attacker):
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
        assert identity(conn) == "alice"
        for forged in (mint(attacker, sub="mallory"), "x.y.z", ""):
            conn.execute("select set_config('pg_session_jwt.jwt', %s, false)", [forged])
            assert identity(conn) is None


@pytest.mark.parametrize("setting, value, token_claims", [
    ("audience", "other", {"aud": "other"}),
    ("audience", "", {"aud": "other"}),
    ("leeway", "100000", {"exp": int(time.time()) - 3600}),
    ("require_jti", "off", {"jti": None}),
    ("max_token_bytes", "1000000", {"pad": "x" * 17000}),
])
def test_checks_cannot_be_loosened_after_connect(pg, key, setting, value, token_claims):
    claims = dict(token_claims)
    if claims.get("jti", 0) is None:
        token = sign_raw(key, json.dumps({"sub": "mallory", "exp": now() + 60}).encode())
    else:
        token = mint(key, sub="mallory", claims=claims)
    with pg.connect(jwk=public_jwk(key), options="-c pg_session_jwt.audience=app") as conn:
        conn.execute(f"set pg_session_jwt.{setting} = {literal(value)}")
        assert error(conn, "select auth.jwt_session_init(%s)", [token])[0] in ("23514", "42804", "54000")
        assert identity(conn) is None


# The ways a session can change a setting after connecting, for any pg_session_jwt.* name:
# each a list of statements ({name}, {value} filled in), then the check runs in `call`.
SETTING_CHANGES = {
    "SET": ["set {name} = {value}"],
    "set_config": ["select set_config('{name}', {value}, false)"],
    "SET LOCAL": ["begin", "set local {name} = {value}"],
    "set_config local": ["begin", "select set_config('{name}', {value}, true)"],
    "SET then RESET ALL": ["set {name} = {value}", "reset all"],
    "SET then DISCARD ALL": ["set {name} = {value}", "discard all"],
}


def with_setting_clause(conn, name, value, body):
    """A pg_temp function that runs `body` (plpgsql, argument t) under SET name = value."""
    function = f"pg_temp.f_{uuid.uuid4().hex[:8]}"
    conn.execute(f"create function {function}(t text) returns text language plpgsql "
                 f"set {name} = {literal(value)} as $$ begin {body} end $$")
    return function


@pytest.mark.parametrize("how", sorted(SETTING_CHANGES) + ["function SET clause"])
def test_a_token_set_by_any_means_yields_no_identity(pg, key, attacker, how):
    forged = mint(attacker, sub="mallory")
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.init()")
        if how == "function SET clause":
            function = with_setting_clause(conn, "pg_session_jwt.jwt", forged, "return auth.user_id();")
            result = attempt(conn, f"select {function}(null)")
            assert isinstance(result, psycopg.Error) or result == [(None,)]
        else:
            for statement in SETTING_CHANGES[how]:
                conn.execute(statement.format(name="pg_session_jwt.jwt", value=literal(forged)))
        assert identity(conn) is None and identity(conn, "auth.session()->>'sub'") is None


@pytest.mark.parametrize("how", sorted(SETTING_CHANGES) + ["function SET clause"])
@pytest.mark.parametrize("setting, value, token_claims", [
    ("audience", "", {"aud": "other"}),
    ("leeway", "100000", {"exp": int(time.time()) - 3600}),
    ("max_token_bytes", "1000000", {"pad": "x" * 17000}),
], ids=["audience", "leeway", "max_token_bytes"])
def test_checks_cannot_be_loosened_by_any_means(pg, key, how, setting, value, token_claims):
    token = mint(key, sub="mallory", claims=token_claims)
    name = f"pg_session_jwt.{setting}"
    with pg.connect(jwk=public_jwk(key), options="-c pg_session_jwt.audience=app") as conn:
        if how == "function SET clause":
            function = with_setting_clause(conn, name, value, "perform auth.jwt_session_init(t); "
                                           "return auth.user_id();")
            assert error(conn, f"select {function}(%s)", [token])[0] in ("23514", "54000")
        else:
            for statement in SETTING_CHANGES[how]:
                conn.execute(statement.format(name=name, value=literal(value)))
            assert error(conn, "select auth.jwt_session_init(%s)", [token])[0] in ("23514", "54000")
        assert identity(conn) is None


@pytest.mark.parametrize("how", ["SET then RESET ALL", "SET then DISCARD ALL", "set_config local"])
def test_a_key_changed_then_reset_is_still_the_connections(pg, key, attacker, how):
    with pg.connect(jwk=public_jwk(key)) as conn:
        for statement in SETTING_CHANGES[how]:
            conn.execute(statement.format(name="pg_session_jwt.jwk", value=literal(public_jwk(attacker))))
        assert error(conn, "select auth.jwt_session_init(%s)", [mint(attacker, sub="mallory")])[0] == "23514"
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
        assert identity(conn) == "alice"


SETTINGS = ("jwk", "audience", "issuer", "leeway", "require_jti", "audit_log", "max_token_bytes")


def test_a_non_superuser_cannot_alter_role_or_database_settings(pg, key, attacker):
    """ALTER ROLE/DATABASE ... SET would reach the connection-start values of later sessions;
    PostgreSQL lets only superusers set placeholders that way, even on one's own role or
    database (42501), and whatever is refused leaves no trace in pg_db_role_setting."""
    role, db = f"self_{uuid.uuid4().hex[:8]}", f"own_{uuid.uuid4().hex[:8]}"
    with pg.connect() as admin:
        admin.execute(f"create role {role} login createrole password {literal(pg.password)}")
        admin.execute(f"create database {db} owner {role}")
    try:
        with pg.connect(user=role, dbname=db) as conn:
            for setting in SETTINGS:
                value = literal(public_jwk(attacker) if setting == "jwk" else "0")
                for target in (f"role {role}", f"role {role} in database {db}", f"database {db}"):
                    state = error(conn, f"alter {target} set pg_session_jwt.{setting} = {value}")[0]
                    assert state == "42501", (target, setting)
        with pg.connect() as admin:
            assert admin.execute("select count(*) from pg_db_role_setting s join pg_roles r "
                                 "on r.oid = s.setrole where r.rolname = %s", [role]).fetchone() == (0,)
            assert admin.execute("select count(*) from pg_db_role_setting s join pg_database d "
                                 "on d.oid = s.setdatabase where d.datname = %s", [db]).fetchone() == (0,)
        with pg.connect(jwk=public_jwk(key), user=role, dbname=db) as conn:
            conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
            assert error(conn, "select auth.jwt_session_init(%s)", [mint(attacker, sub="m")])[0] == "23514"
    finally:
        with pg.connect() as admin:
            admin.execute(f"drop database {db} with (force)")
            admin.execute(f"drop role {role}")


def parallel_settings(pg_major):
    force = "debug_parallel_query" if pg_major >= 16 else "force_parallel_mode"
    return [f"set {force} = on", "set parallel_setup_cost = 0", "set parallel_tuple_cost = 0",
            "set min_parallel_table_scan_size = 0", "set max_parallel_workers_per_gather = 2"]


@pytest.mark.parametrize("init_first", [False, True], ids=["no-init", "after-init"])
def test_a_parallel_worker_never_computes_an_identity(pg, pg_major, key, attacker, init_first):
    forged = mint(attacker, sub="mallory")
    name = f"leaky_{uuid.uuid4().hex[:8]}"
    with pg.connect() as admin:
        # Not inlinable (plpgsql), marked PARALLEL SAFE by someone who should not have.
        admin.execute(f"create function public.{name}() returns text language plpgsql stable "
                      "parallel safe as $$ begin return auth.user_id(); end $$")
    try:
        with pg.connect(jwk=public_jwk(key)) as conn:
            if init_first:
                conn.execute("select auth.init()")
            conn.execute(f"set pg_session_jwt.jwk = {literal(public_jwk(attacker))}")
            conn.execute(f"set pg_session_jwt.jwt = {literal(forged)}")
            for statement in parallel_settings(pg_major):
                conn.execute(statement)
            plan = "\n".join(r[0] for r in conn.execute(f"explain select public.{name}()"))
            assert "Gather" in plan
            result = attempt(conn, f"select public.{name}()")
            # Fails closed: the worker cannot capture the connection's settings.
            assert isinstance(result, psycopg.Error) and result.sqlstate == "55000", result
    finally:
        with pg.connect() as admin:
            admin.execute(f"drop function public.{name}()")


def test_first_capture_in_a_parallel_leader_fails_closed_and_the_backend_recovers(pg, pg_major, key):
    table = f"big_{uuid.uuid4().hex[:8]}"
    query = f"select count(*) from public.{table} where g > (select length(auth.user_id()))"
    with pg.connect() as admin:
        admin.execute(f"create table public.{table} as select g from generate_series(1, 100000) g")
        admin.execute(f"analyze public.{table}")
    try:
        with pg.connect(jwk=public_jwk(key)) as conn:
            # The token is set by hand, so nothing has captured the settings yet.
            conn.execute(f"set pg_session_jwt.jwt = {literal(mint(key, sub='alice'))}")
            for statement in parallel_settings(pg_major)[1:]:
                conn.execute(statement)
            assert "Gather" in "\n".join(r[0] for r in conn.execute(f"explain {query}"))
            state, message = error(conn, query)
            assert state == "55000" and "auth.init()" in message
            conn.execute("select auth.init()")
            assert conn.execute(query).fetchone() == (99995,)
    finally:
        with pg.connect() as admin:
            admin.execute(f"drop table public.{table}")


def test_getters_in_a_parallel_query_run_in_the_leader(pg, pg_major, key):
    table = f"t_{uuid.uuid4().hex[:8]}"
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute(f"create temp table {table} as select g from generate_series(1, 20000) g")
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
        for statement in parallel_settings(pg_major)[1:]:
            conn.execute(statement)
        assert conn.execute(f"select count(*), auth.user_id() from {table}").fetchone() == (20000, "alice")


@pytest.mark.parametrize("ending", ["discard all", "reset all", "reset pg_session_jwt.jwt"])
def test_discard_and_reset_end_the_session(pg, key, ending):
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
        conn.execute(ending)
        assert identity(conn) is None
        assert conn.execute("select auth.session() = 'null'::jsonb").fetchone()[0]


def test_transaction_scoped_session_ends_at_commit(pg, key):
    with pg.connect(jwk=public_jwk(key), autocommit=False) as conn:
        conn.execute("select auth.jwt_session_init(%s, local => true)", [mint(key, sub="alice")])
        assert identity(conn) == "alice"
        conn.commit()
        assert identity(conn) is None
        conn.execute("select auth.jwt_session_init(%s, true)", [mint(key, sub="bob")])
        assert identity(conn) == "bob"
        conn.rollback()
        assert identity(conn) is None


def test_jwt_session_end_ends_session_and_transaction_scoped_sessions(pg, key):
    older = mint(key, sub="old")
    with pg.connect(jwk=public_jwk(key), autocommit=False) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
        conn.commit()
        conn.execute("select auth.jwt_session_end()")
        assert identity(conn) is None
        assert conn.execute("select auth.session() = 'null'::jsonb").fetchone() == (True,)
        conn.commit()
        assert identity(conn) is None
        # Like any SET, an end that rolls back leaves the session as it was.
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="bob")])
        conn.commit()
        conn.execute("select auth.jwt_session_end()")
        conn.rollback()
        assert identity(conn) == "bob"
        # A transaction-scoped session ends, and so does the session-level one under it.
        conn.execute("select auth.jwt_session_init(%s, true)", [mint(key, sub="carol")])
        assert identity(conn) == "carol"
        conn.execute("select auth.jwt_session_end()")
        assert identity(conn) is None
        conn.commit()
        assert identity(conn) is None
        # Ending does not forget the highest jti: an older token cannot start a new session.
        assert error(conn, "select auth.jwt_session_init(%s)", [older])[0] == "23514"


def test_non_superuser_rls_with_user_id(pg, key):
    role, table = f"app_{uuid.uuid4().hex[:8]}", f"docs_{uuid.uuid4().hex[:8]}"
    with pg.connect() as admin:
        admin.execute(f"create role {role} login password {literal(pg.password)}")
        admin.execute(f"create table public.{table} (owner text, body text)")
        admin.execute(f"insert into public.{table} values ('alice', 'a1'), ('alice', 'a2'), ('bob', 'b1')")
        admin.execute(f"alter table public.{table} enable row level security")
        admin.execute(f"create policy own on public.{table} using (owner = (select auth.user_id()))")
        admin.execute(f"grant select on public.{table} to {role}")
    try:
        with pg.connect(jwk=public_jwk(key), user=role) as conn:
            assert conn.execute(f"select count(*) from public.{table}").fetchone() == (0,)
            conn.execute("select auth.init()")
            conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
            rows = conn.execute(f"select body from public.{table} order by body").fetchall()
            assert rows == [("a1",), ("a2",)]
            assert conn.execute(f"select {GETTERS}").fetchone()[0] == "alice"
            other = mint(generate_key("EdDSA"), sub="bob")
            conn.execute(f"set pg_session_jwt.jwt = {literal(other)}")
            with pytest.raises(psycopg.Error):
                conn.execute(f"select body from public.{table}")
    finally:
        with pg.connect() as admin:
            admin.execute(f"drop table public.{table}")
            admin.execute(f"drop role {role}")


def test_database_owner_creates_the_extension(pg, key):
    owner, db = f"owner_{uuid.uuid4().hex[:8]}", f"db_{uuid.uuid4().hex[:8]}"
    with pg.connect() as admin:
        admin.execute(f"create role {owner} login password {literal(pg.password)}")
        admin.execute(f"create database {db} owner {owner} template template0 encoding 'UTF8'")
    try:
        with pg.connect(dbname=db) as admin:
            admin.execute("create extension plpython3u")
        with pg.connect(jwk=public_jwk(key), user=owner, dbname=db) as conn:
            superuser = "select rolsuper from pg_roles where rolname = current_user"
            assert conn.execute(superuser).fetchone() == (False,)
            conn.execute("create extension pg_session_jwt")
            conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
            assert identity(conn) == "alice"
    finally:
        with pg.connect() as admin:
            admin.execute(f"drop database {db} with (force)")
            admin.execute(f"drop role {owner}")


def test_audit_log_has_sub_and_aud_but_never_the_token(pg, key):
    sub = f"auditor-{uuid.uuid4().hex[:8]}"
    token = mint(key, sub=sub, claims={"aud": "app"})
    with pg.connect(jwk=public_jwk(key), options="-c pg_session_jwt.audit_log=on") as conn:
        conn.execute("set pg_session_jwt.audit_log = off")   # cannot silence it either
        conn.execute("select auth.jwt_session_init(%s)", [token])
        conn.execute("select auth.user_id()")
    with pg.connect(jwk=public_jwk(key)) as conn:
        quiet = f"quiet-{uuid.uuid4().hex[:8]}"
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub=quiet)])
    deadline = time.monotonic() + 5
    while sub not in pg.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    logs = pg.logs()
    lines = [line for line in logs.splitlines() if sub in line]
    assert len(lines) == 1 and f'sub="{sub}" aud="app"' in lines[0] and "LOG:" in lines[0]
    assert quiet not in logs
    assert token.split(".")[2] not in logs and token.split(".")[1] not in logs


def test_the_extension_never_imports_jwcrypto(pg, key):
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
        assert identity(conn) == "alice"
        conn.execute("create function pg_temp.modules() returns text[] language plpython3u as "
                     "$$ import sys; return sorted(sys.modules) $$")
        modules = conn.execute("select pg_temp.modules()").fetchone()[0]
    assert "pg_session_jwt.pl" in modules
    assert not [m for m in modules if m.startswith("jwcrypto")]
    # Signatures go through libsodium and the server's own libcrypto, never the cryptography
    # package (every algorithm: test_crypto_libraries.py).
    assert not [m for m in modules if m.startswith("cryptography")]
