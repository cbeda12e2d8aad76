"""What the clients people use rely on, in a real server on every major: Supabase's
helpers under Supabase's own policies, one identity per statement when a token expires
mid-query, and refusals written to the log (pg_session_jwt.log_refusals) without the token.

Like test_sql_api.py, every test runs against a freshly installed database and against
one updated from each earlier version (the `pg` fixture below)."""

import time
import uuid

import psycopg
import pytest

from devtools.jwt import generate_key, mint, public_jwk
from tests.support.installs import INSTALLS, drop_database, installed_database
from tests.support.sql import error

pytestmark = pytest.mark.container


@pytest.fixture(scope="module", params=INSTALLS)
def pg(pg, request):
    target = installed_database(pg, request.param)
    yield target
    drop_database(pg, target)


# Three policies as Supabase's documentation writes them (auth.uid(), auth.role(),
# auth.email(); the tables are the ones its guides use), created unchanged.
SUPABASE_POLICIES = (
    '''create policy "Individuals can view their own todos." on todos for select
       using ( (select auth.uid()) = user_id );''',
    '''create policy "Public profiles are viewable only by authenticated users" on profiles
       for select using ( auth.role() = 'authenticated' );''',
    '''create policy "Users can view invitations sent to their email" on invitations
       for select using ( auth.email() = email );''',
)


@pytest.fixture(scope="module")
def supabase(pg):
    """A login role (not superuser, so RLS applies) and Supabase's tables and policies."""
    role, password = f"supa_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    with pg.connect() as conn:
        conn.execute(f"create role {role} login password '{password}'")
        conn.execute("create table todos (id serial primary key, user_id uuid, task text)")
        conn.execute("create table profiles (id uuid primary key, username text)")
        conn.execute("create table invitations (id serial primary key, email text)")
        for table in ("todos", "profiles", "invitations"):
            conn.execute(f"alter table {table} enable row level security")
            conn.execute(f"grant select on {table} to {role}")
        for policy in SUPABASE_POLICIES:
            conn.execute(policy)
        conn.execute("insert into todos (user_id, task) values (%s, 'a'), (%s, 'b')", (alice, bob))
        conn.execute("insert into profiles values (%s, 'alice'), (%s, 'bob')", (alice, bob))
        conn.execute("insert into invitations (email) values ('alice@example.com'), "
                     "('bob@example.com')")
    yield role, password, alice, bob
    with pg.connect() as conn:
        for table in ("todos", "profiles", "invitations"):
            conn.execute(f"drop table {table}")
        conn.execute(f"drop role {role}")


def test_supabase_policies_run_unchanged(pg, key, supabase):
    role, password, alice, bob = supabase
    token = mint(key, sub=alice, claims={"role": "authenticated", "email": "alice@example.com"})
    anon = mint(key, sub=bob, claims={"role": "anon", "email": "bob@example.com"})
    with pg.connect(jwk=public_jwk(key), user=role, password=password) as conn:
        # Without a session: every helper is NULL and every policy shows nothing.
        assert conn.execute("select auth.role(), auth.email(), auth.uid()").fetchone() == \
            (None, None, None)
        assert conn.execute("select count(*) from profiles").fetchone() == (0,)
        conn.execute("select auth.jwt_session_init(%s)", [token])
        assert conn.execute("select auth.role(), auth.email()").fetchone() == \
            ("authenticated", "alice@example.com")
        assert conn.execute("select user_id::text from todos").fetchall() == [(alice,)]
        assert conn.execute("select count(*) from profiles").fetchone() == (2,)
        assert conn.execute("select email from invitations").fetchall() == [("alice@example.com",)]
        conn.execute("select auth.jwt_session_init(%s)", [anon])
        assert conn.execute("select user_id::text from todos").fetchall() == [(bob,)]
        assert conn.execute("select count(*) from profiles").fetchone() == (0,)
        assert conn.execute("select email from invitations").fetchall() == [("bob@example.com",)]


def test_role_and_email_follow_the_rules_of_user_id(pg, key):
    with pg.connect(jwk=public_jwk(key)) as conn:
        conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="a", claims={"role": 7})])
        sqlstate, message = error(conn, "select auth.role()")
        assert sqlstate == "42804" and "invalid role claim in the JWT" in message
        assert conn.execute("select auth.email(), auth.user_id()").fetchone() == (None, "a")
        conn.execute("select auth.jwt_session_end()")
        assert conn.execute("select auth.role(), auth.email()").fetchone() == (None, None)


# --- one identity per statement -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("local", [False, True])
def test_a_statement_keeps_its_identity_when_the_token_expires_mid_query(pg, key, local):
    token = mint(key, sub="slow-reader", ttl=2)
    with pg.connect(jwk=public_jwk(key), options="-c pg_session_jwt.leeway=0",
                    autocommit=not local) as conn:
        conn.execute("select auth.jwt_session_init(%s, %s)", [token, local])
        started = time.time()
        # The getter runs once per row; the token expires after about row 4.
        rows = conn.execute("select auth.user_id(), pg_sleep(0.5) from generate_series(1, 8)"
                            ).fetchall()
        assert time.time() - started >= 4
        assert [row[0] for row in rows] == ["slow-reader"] * 8
        # The next statement is refused.
        sqlstate, message = error(conn, "select auth.user_id()")
        assert sqlstate == "23514" and "Token used after it has expired" in message


@pytest.mark.slow
def test_a_procedure_that_commits_does_not_keep_an_expired_identity(pg, key):
    """One CALL is one statement, but each COMMIT inside it starts a new transaction: the
    grace of a statement that began while the session was valid ends there, or a looping
    procedure could act as the user for as long as it likes after `exp`."""
    token = mint(key, sub="looping", ttl=2)
    with pg.connect(jwk=public_jwk(key), options="-c pg_session_jwt.leeway=0") as conn:
        conn.execute("create procedure pg_temp.keep_going() language plpgsql as $$ "
                     "begin for i in 1..6 loop perform auth.user_id(), pg_sleep(0.6); "
                     "commit; end loop; end $$")
        conn.execute("select auth.jwt_session_init(%s)", [token])
        started = time.time()
        sqlstate, message = error(conn, "call pg_temp.keep_going()")
        assert sqlstate == "23514" and "Token used after it has expired" in message
        assert 1 <= time.time() - started < 3.6, "refused at the first transaction after exp"


# --- refusals you can see -----------------------------------------------------------------

def wait_for(pg, marker, timeout=5):
    deadline = time.monotonic() + timeout
    while marker not in pg.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    return pg.logs()


def test_refusals_are_logged_with_a_reason_and_never_the_token(pg, key):
    marker = f"refused-{uuid.uuid4().hex[:8]}"
    forged = mint(generate_key("EdDSA", kid=key.get("kid")), sub=f"{marker}-forger",
                  claims={"iss": f"https://{marker}"})
    expired = mint(key, sub=f"{marker}-late", claims={"exp": int(time.time()) - 3600})
    quiet = mint(key, sub=f"quiet-{marker}", claims={"exp": int(time.time()) - 3600})
    with pg.connect(jwk=public_jwk(key), options="-c pg_session_jwt.log_refusals=on") as conn:
        conn.execute("set pg_session_jwt.log_refusals = off")   # cannot silence it
        assert error(conn, "select auth.jwt_session_init(%s)", [forged])[0] == "23514"
        assert error(conn, "select auth.jwt_session_init(%s)", [expired])[0] == "23514"
    with pg.connect(jwk=public_jwk(key)) as conn:   # off by default
        assert error(conn, "select auth.jwt_session_init(%s)", [quiet])[0] == "23514"
    logs = wait_for(pg, f"{marker}-late")
    lines = [line for line in logs.splitlines() if "refused JWT" in line and marker in line]
    assert len(lines) == 2, lines
    kid = key.get("kid")
    assert "LOG:" in lines[0] and (f'reason=bad_signature sqlstate=23514 kid="{kid}" '
                                   f'iss="https://{marker}"') in lines[0]
    assert "forger" not in lines[0]   # no sub before the signature verified
    assert f'reason=expired sqlstate=23514 kid="{kid}" sub="{marker}-late"' in lines[1]
    assert f"quiet-{marker}" not in logs
    for token in (forged, expired):
        assert all(part not in logs for part in token.split("."))


def test_refusals_of_the_session_scope_are_logged(pg, key):
    with pg.connect(jwk=public_jwk(key),
                    options="-c pg_session_jwt.log_refusals=on "
                            "-c pg_session_jwt.session_scope=transaction") as conn:
        marker = f"scoped-{uuid.uuid4().hex[:8]}"
        token = mint(key, sub="alice", claims={"iss": f"https://{marker}"})
        assert error(conn, "select auth.jwt_session_init(%s)", [token])[0] == "42501"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select auth.jwt_session_init(%s, false)", [token])
    logs = wait_for(pg, marker)
    lines = [line for line in logs.splitlines() if marker in line]
    assert len(lines) == 2 and all("reason=session_scope sqlstate=42501" in line for line in lines)
    assert all('sub="alice"' not in line for line in lines)   # not verified: no sub
    assert token.split(".")[2] not in logs
