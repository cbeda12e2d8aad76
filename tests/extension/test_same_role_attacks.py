"""Attacks by a client that shares the victim's role, on every major: each tries to get
another identity (or run code inside the extension) and must fail.

The deployment they model: many end users reach the database as one ordinary role, and
any of them may run SQL. Here, on one server connection, an "attacker" prepares the
backend and a "victim" then uses it, as consecutive clients of a pooled server
connection do; tests/extension/test_pooled_attacks.py runs the pooled ones through the
dev stack's pgbouncer. Covered: name resolution through the caller (pg_temp and a schema
before pg_catalog), reading the token back, session-scoped identities, tokens in
pg_stat_activity, fail-open defaults, and the small ones (uuid, NUL claims, user site).
"""

import uuid

import psycopg
import pytest

from devtools.jwt import generate_key, mint, next_jti, public_jwk
from tests.support.jws import sign as sign_raw
from tests.support.sql import attempt, error, identity, literal

pytestmark = pytest.mark.container

HANDLE_PREFIX = "pg_session_jwt:"


@pytest.fixture(scope="module")
def role(pg):
    """An ordinary login role with TEMP and a schema of its own: what a shared application
    role often has, and more than the dev stack's `app` gets."""
    name = f"shared_{uuid.uuid4().hex[:8]}"
    with pg.connect() as admin:
        admin.execute(f"create role {name} login password {literal(pg.password)}")
        admin.execute(f"create schema {name} authorization {name}")
        admin.execute(f"grant temporary on database {pg.dbname} to {name}")
    yield name
    with pg.connect() as admin:
        admin.execute(f"drop schema {name} cascade")
        admin.execute(f"drop owned by {name}")
        admin.execute(f"drop role {name}")


def marker(conn):
    """What the planted code recorded (it sets attack.ran when it runs)."""
    return conn.execute("select pg_catalog.current_setting('attack.ran', true)").fetchone()[0]


# --- 1. no name resolution through the caller ---------------------------------------------

def plant_in_pg_temp(conn):
    """The issue's attack and its relatives: domains named like the types the extension
    uses, in pg_temp (searched first for types and relations), whose CHECK runs the
    attacker's function, which records the query text (the token) and then says yes."""
    conn.execute("""create function pg_temp.spy(v anyelement) returns boolean language plpgsql as $$
        begin perform pg_catalog.set_config('attack.ran', pg_catalog.current_query(), false);
        return true; end $$""")
    for name, base in (("text", "pg_catalog.text"), ("bool", "pg_catalog.bool"),
                       ("boolean", "pg_catalog.bool"), ("jsonb", "pg_catalog.jsonb"),
                       ("uuid", "pg_catalog.uuid"), ("void", "pg_catalog.int4")):
        conn.execute(f"create domain pg_temp.{name} as {base} check (pg_temp.spy(value))")
    conn.execute("create temp table pg_settings (name text, setting text)")
    conn.execute("create temp view pg_extension as select 'x'::pg_catalog.text as extname")


def plant_in_schema(conn, schema):
    """Functions, operators and types in a schema the caller puts before pg_catalog."""
    spy = "begin perform pg_catalog.set_config('attack.ran', 'schema', false); {tail} end"
    # The schema outlives one test: start from an empty one (spy_eq takes its operators along).
    for drop in ("function if exists {s}.spy_eq(text, text) cascade",
                 "function if exists {s}.spy_eq(text[], text[]) cascade",
                 "domain if exists {s}.text", "table if exists {s}.pg_extension"):
        conn.execute("drop " + drop.format(s=schema))
    conn.execute(f"""create or replace function {schema}.set_config(a text, b text, c boolean) returns text
        language plpgsql as $$ {spy.format(tail="return b;")} $$""")
    conn.execute(f"""create or replace function {schema}.current_setting(a text, b boolean) returns text
        language plpgsql as $$ {spy.format(tail="return 'x.y.z';")} $$""")
    conn.execute(f"""create or replace function {schema}.current_setting(a text) returns text
        language plpgsql as $$ {spy.format(tail="return 'x.y.z';")} $$""")
    conn.execute(f"""create function {schema}.spy_eq(a text, b text) returns boolean
        language plpgsql as $$ {spy.format(tail="return true;")} $$""")
    conn.execute(f"""create function {schema}.spy_eq(a text[], b text[]) returns boolean
        language plpgsql as $$ {spy.format(tail="return true;")} $$""")
    for left, right in (("text", "text"), ("text[]", "text[]")):
        for op in ("=", "<>"):
            conn.execute(f"create operator {schema}.{op} (leftarg = {left}, rightarg = {right}, "
                         f"function = {schema}.spy_eq)")
    conn.execute(f"create domain {schema}.text as pg_catalog.text")
    conn.execute(f"create table {schema}.pg_extension (extname text)")


@pytest.mark.parametrize("where", ["pg_temp", "schema first", "both"])
def test_planted_types_functions_and_operators_never_run(pg, key, role, where):
    token = mint(key, sub="victim")
    with pg.connect(jwk=public_jwk(key), user=role) as conn:
        # The attacker's client: plants, then leaves the backend to the next client.
        if where in ("pg_temp", "both"):
            plant_in_pg_temp(conn)
        if where in ("schema first", "both"):
            plant_in_schema(conn, role)
            conn.execute(f"set search_path = {role}, pg_catalog, public")
        # The victim's client, first use of every function on this backend.
        conn.execute("select auth.init()")
        conn.execute("select auth.jwt_session_init(%s)", [token])
        assert identity(conn) == "victim"
        assert conn.execute("select auth.session()->>'sub', auth.uid(), auth.organization_id()"
                            ).fetchone() == ("victim", None, None)
        with conn.transaction():
            conn.execute("select auth.jwt_session_init(%s, true)", [mint(key, sub="local")])
            assert identity(conn) == "local"
        conn.execute("select auth.jwt_session_end()")
        assert identity(conn) is None
        assert error(conn, "select auth.jwt_session_init(%s)", [mint(generate_key("EdDSA"))])[0] \
            == "23514"
        assert error(conn, "select auth.jwt_session_init(null)")[0] == "22004"
        assert marker(conn) is None, "planted code ran inside the extension"
        # Dropping the planted objects breaks nothing for the clients after them.
        conn.execute("reset search_path")
        conn.execute("discard temp")
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="next")])
        assert identity(conn) == "next" and marker(conn) is None


def test_every_plpgsql_function_has_a_fixed_search_path_with_pg_temp_last(pg):
    with pg.connect() as conn:
        rows = conn.execute("""
            select p.oid::regprocedure::text, p.proconfig
            from pg_proc p join pg_depend d on d.objid = p.oid and d.classid = 'pg_proc'::regclass
            join pg_extension e on e.oid = d.refobjid and e.extname = 'pg_session_jwt'
            join pg_language l on l.oid = p.prolang
            where d.deptype = 'e' and l.lanname = 'plpgsql'""").fetchall()
    assert rows
    for name, config in rows:
        assert config == ["search_path=pg_catalog, pg_temp"], name


def test_a_set_clause_does_not_scope_set_config_of_another_setting(pg):
    """0.2.0 kept SET clauses off jwt_session_init() believing set_config(..., false) inside
    would then be undone at function exit. PostgreSQL undoes only the variables the clause
    names: this holds the design (a SET search_path clause on jwt_session_init) to that."""
    with pg.connect(autocommit=False) as conn:
        conn.execute("create function pg_temp.f(v text, l boolean) returns void language plpgsql "
                     "set search_path = pg_catalog, pg_temp as "
                     "$$ begin perform pg_catalog.set_config('probe.value', v, l); end $$")
        conn.execute("select pg_temp.f('session', false)")
        assert conn.execute("select current_setting('probe.value')").fetchone() == ("session",)
        conn.commit()
        conn.execute("select pg_temp.f('local', true)")
        assert conn.execute("select current_setting('probe.value')").fetchone() == ("local",)
        conn.commit()
        assert conn.execute("select current_setting('probe.value')").fetchone() == ("session",)
        conn.execute("select pg_temp.f('rolled back', false)")
        conn.rollback()
        assert conn.execute("select current_setting('probe.value')").fetchone() == ("session",)


# --- 2. the token is not kept where SQL can read it ---------------------------------------

def test_the_setting_holds_a_handle_not_the_token(pg, key):
    token = mint(key, sub="alice")
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [token])
        value = conn.execute("select current_setting('pg_session_jwt.jwt')").fetchone()[0]
        shown = conn.execute("show pg_session_jwt.jwt").fetchone()[0]
    assert value == shown and value.startswith(HANDLE_PREFIX)
    for part in token.split("."):
        assert part not in value


@pytest.mark.parametrize("scope", ["session", "transaction"])
def test_a_copied_handle_gives_no_identity_on_another_connection(pg, key, scope):
    with pg.connect(jwk=public_jwk(key), autocommit=False) as victim, \
            pg.connect(jwk=public_jwk(key)) as attacker:
        victim.execute("select auth.jwt_session_init(%s, %s)", [mint(key, sub="victim"),
                                                                scope == "transaction"])
        handle = victim.execute("select current_setting('pg_session_jwt.jwt')").fetchone()[0]
        attacker.execute("select auth.jwt_session_init(%s)", [mint(key, sub="attacker")])
        for statement in ("set pg_session_jwt.jwt = {v}",
                          "select set_config('pg_session_jwt.jwt', {v}, false)"):
            attacker.execute(statement.format(v=literal(handle)))
            assert identity(attacker) is None
            assert identity(attacker, "auth.session()->>'sub'") is None
        assert identity(victim) == "victim"
        victim.rollback()


@pytest.mark.parametrize("replay", ["SET", "SET LOCAL", "set_config", "copied at session level"])
def test_a_transaction_scoped_handle_dies_with_its_transaction(pg, key, replay):
    """The pooled case: the next client of the same server connection replays a handle
    that code in the victim's transaction copied."""
    with pg.connect(jwk=public_jwk(key), autocommit=False) as conn:
        conn.execute("select auth.jwt_session_init(%s, true)", [mint(key, sub="victim")])
        handle = conn.execute("select current_setting('pg_session_jwt.jwt')").fetchone()[0]
        if replay == "copied at session level":
            # e.g. a trigger in the victim's transaction: survives the COMMIT as a value.
            conn.execute("select set_config('pg_session_jwt.jwt', %s, false)", [handle])
        assert identity(conn) == "victim"
        conn.commit()
        if replay == "SET":
            conn.execute(f"set pg_session_jwt.jwt = {literal(handle)}")
        elif replay == "SET LOCAL":
            conn.execute(f"set local pg_session_jwt.jwt = {literal(handle)}")
        elif replay == "set_config":
            conn.execute("select set_config('pg_session_jwt.jwt', %s, true)", [handle])
        assert conn.execute("select current_setting('pg_session_jwt.jwt')").fetchone()[0] == handle
        assert identity(conn) is None
        assert identity(conn, "auth.session()->>'sub'") is None
        conn.rollback()


@pytest.mark.parametrize("ending", ["commit", "rollback", "error"])
def test_every_way_a_transaction_ends_ends_its_handles(pg, key, ending):
    with pg.connect(jwk=public_jwk(key), autocommit=False) as conn:
        conn.execute("select auth.jwt_session_init(%s, true)", [mint(key, sub="victim")])
        handle = conn.execute("select current_setting('pg_session_jwt.jwt')").fetchone()[0]
        assert identity(conn) == "victim"
        if ending == "error":
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("select 1 / 0")
            conn.rollback()
        else:
            getattr(conn, ending)()
        conn.execute("select set_config('pg_session_jwt.jwt', %s, true)", [handle])
        assert identity(conn) is None
        conn.rollback()


def test_a_procedure_cannot_carry_a_transaction_scoped_handle_past_its_commit(pg, key):
    """The tightest replay: the handle was just used (the getters' cache holds it) and the
    next transaction starts within microseconds, inside one CALL."""
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("""create procedure pg_temp.carry(token text) language plpgsql as $$
            declare h text;
            begin
                perform auth.jwt_session_init(token, true);
                h := pg_catalog.current_setting('pg_session_jwt.jwt');
                perform pg_catalog.set_config('probe.first', auth.user_id(), false);
                commit;
                perform pg_catalog.set_config('pg_session_jwt.jwt', h, true);
                perform pg_catalog.set_config('probe.second', auth.user_id(), false);
            end $$""")
        result = attempt(conn, "call pg_temp.carry(%s)", [mint(key, sub="victim")])
        assert isinstance(result, psycopg.Error) and result.sqlstate == "23514", result
        assert conn.execute("select current_setting('probe.first', true), "
                            "current_setting('probe.second', true)").fetchone() == ("victim", None)


def test_a_raw_token_from_a_gateway_is_still_verified_and_used(pg, key, attacker_key):
    token = mint(key, sub="gateway-user")
    with pg.connect(jwk=public_jwk(key), options=f"-c pg_session_jwt.jwt={token}") as conn:
        assert identity(conn) == "gateway-user"
    with pg.connect(jwk=public_jwk(key), autocommit=False) as conn:
        conn.execute(f"set local pg_session_jwt.jwt = {literal(mint(key, sub='local-user'))}")
        assert identity(conn) == "local-user"
        conn.commit()
        assert identity(conn) is None
        conn.execute(f"set pg_session_jwt.jwt = {literal(mint(key, sub='set-user'))}")
        assert identity(conn) == "set-user"
        conn.execute(f"set pg_session_jwt.jwt = {literal(mint(attacker_key, sub='mallory'))}")
        assert identity(conn) is None
        conn.rollback()


def test_rollback_of_init_and_end_leaves_the_session_before_it(pg, key):
    with pg.connect(jwk=public_jwk(key), autocommit=False) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
        conn.commit()
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="bob")])
        assert identity(conn) == "bob"
        conn.rollback()
        assert identity(conn) == "alice"
        conn.execute("savepoint s")
        conn.execute("select auth.jwt_session_init(%s, true)", [mint(key, sub="carol")])
        conn.execute("rollback to savepoint s")
        assert identity(conn) == "alice"
        conn.execute("select auth.jwt_session_end()")
        conn.rollback()
        assert identity(conn) == "alice"


@pytest.fixture(scope="module")
def attacker_key(key):
    return generate_key("EdDSA", kid=key.get("kid"))


# --- 3. fail closed -------------------------------------------------------------------------

CLAIMS = '{"sub": "mallory", "role": "admin"}'


@pytest.mark.parametrize("jwk", [None, ""], ids=["no-jwk", "empty-jwk"])
def test_without_a_key_request_jwt_claims_give_no_identity_unless_trusted(pg, jwk):
    options = None if jwk is None else "-c pg_session_jwt.jwk="
    with pg.connect(options=options) as conn:
        conn.execute("select set_config('request.jwt.claims', %s, false)", [CLAIMS])
        assert identity(conn) is None
        for how in ("set pg_session_jwt.trust_request_claims = on",
                    "select set_config('pg_session_jwt.trust_request_claims', 'on', false)"):
            conn.execute(how)
            assert identity(conn) is None
        conn.execute("create function pg_temp.f() returns text language sql "
                     "set pg_session_jwt.trust_request_claims = on return auth.user_id()")
        assert conn.execute("select pg_temp.f()").fetchone() == (None,)
    trusted = "-c pg_session_jwt.trust_request_claims=on" + ("" if jwk is None else " " + options)
    with pg.connect(options=trusted) as conn:
        conn.execute("select set_config('request.jwt.claims', %s, false)", [CLAIMS])
        assert identity(conn) == "mallory"


def test_a_null_token_or_scope_is_22004_and_never_the_previous_identity(pg, key):
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
        state, message = error(conn, "select auth.jwt_session_init(null)")
        assert state == "22004" and "NULL" in message and "jwt_session_end" in message
        state, message = error(conn, "select auth.jwt_session_init(%s, null)", [mint(key, sub="b")])
        assert state == "22004" and '"local"' in message
        state, _ = error(conn, "select auth.jwt_session_init(%s::text)", [None])
        assert state == "22004"


def test_session_scope_transaction_refuses_session_scoped_sessions(pg, key):
    options = "-c pg_session_jwt.session_scope=transaction"
    with pg.connect(jwk=public_jwk(key), options=options) as conn:
        for loosen in ("", "set pg_session_jwt.session_scope = session",
                       "reset pg_session_jwt.session_scope"):
            if loosen:
                conn.execute(loosen)
            state, message = error(conn, "select auth.jwt_session_init(%s)", [mint(key, sub="a")])
            assert state == "42501" and "pg_session_jwt.session_scope" in message
            assert "local" in message or "true" in message
            assert identity(conn) is None
        with conn.transaction():
            conn.execute("select auth.jwt_session_init(%s, true)", [mint(key, sub="alice")])
            assert identity(conn) == "alice"
        assert identity(conn) is None


def test_a_bad_session_scope_names_the_setting(pg, key):
    with pg.connect(jwk=public_jwk(key), options="-c pg_session_jwt.session_scope=pooled") as conn:
        state, message = error(conn, "select auth.init()")
    assert state == "22023" and "pg_session_jwt.session_scope must be one of" in message


# --- 5. the small ones ----------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "{11111111-1111-1111-1111-111111111111", "11111111-1111-1111-1111-111111111111}",
    "11111111-1111-1111-1111-11111111111-1", "-11111111111111111111111111111111",
    "１1111111-1111-1111-1111-111111111111",
])
def test_uid_and_organization_id_are_null_for_what_uuid_input_refuses(pg, key, value):
    with pg.connect(jwk=public_jwk(key)) as conn:
        assert attempt(conn, "select %s::uuid", [value]).sqlstate == "22P02"
        conn.execute("select auth.jwt_session_init(%s)",
                     [mint(key, sub=value, claims={"o": {"id": value}})])
        assert conn.execute("select auth.uid(), auth.organization_id(), auth.user_id()"
                            ).fetchone() == (None, None, value)


@pytest.mark.parametrize("value", [
    "{11111111-1111-1111-1111-111111111111}", "1111-1111-1111-1111-1111-1111-1111-1111",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
])
def test_uid_accepts_every_spelling_uuid_input_accepts(pg, key, value):
    with pg.connect(jwk=public_jwk(key)) as conn:
        expected = conn.execute("select %s::uuid", [value]).fetchone()[0]
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub=value)])
        assert conn.execute("select auth.uid()").fetchone()[0] == expected


@pytest.mark.parametrize("payload", [
    rb'{"jti": %d, "sub": "a\u0000b"}', rb'{"jti": %d, "sub": "alice", "x\u0000": 1}',
    rb'{"jti": %d, "sub": "\ud800"}', rb'{"jti": %d, "sub": "alice", "o": {"id": ["\udfff"]}}',
], ids=["nul-in-sub", "nul-in-name", "lone-high-surrogate", "lone-low-surrogate"])
def test_claims_postgresql_cannot_store_are_refused_at_session_init(pg, key, payload):
    token = sign_raw(key, payload.replace(b"%d", str(next_jti()).encode()))
    with pg.connect(jwk=public_jwk(key)) as conn:
        state, message = error(conn, "select auth.jwt_session_init(%s)", [token])
        assert state == "42804" and "lone surrogate" in message
        conn.execute(f"set pg_session_jwt.jwt = {literal(token)}")
        assert error(conn, "select auth.session()")[0] == "42804"
        assert identity(conn) is None


def test_the_backends_python_ignores_the_user_site_directory(pg):
    marker_file = "/tmp/user-site-ran"
    with pg.connect() as conn:
        conn.execute("create function pg_temp.site() returns text language plpython3u as $$\n"
                     "import site, sys\n"
                     "return ' '.join(map(str, (sys.flags.no_user_site, site.ENABLE_USER_SITE,\n"
                     "                          site.getusersitepackages())))\n"
                     "$$")
        flag, enabled, path = conn.execute("select pg_temp.site()").fetchone()[0].split(" ", 2)
    assert (flag, enabled) == ("1", "False")
    # A .pth file in the user site directory would run on a backend's first PL/Python call.
    code, out = pg.exec(["bash", "-c", f"mkdir -p {path} && echo 'import os; "
                         f"open(\"{marker_file}\", \"w\").close()' > {path}/evil.pth"])
    assert code == 0, out
    try:
        with pg.connect() as conn:
            conn.execute("create function pg_temp.ok() returns int language plpython3u as $$ return 1 $$")
            assert conn.execute("select pg_temp.ok()").fetchone() == (1,)
        assert pg.exec(["test", "-e", marker_file])[0] != 0, "the user site .pth file ran"
    finally:
        pg.exec(["rm", "-rf", f"{path}/evil.pth", marker_file])
