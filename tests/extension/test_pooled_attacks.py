"""The same-role attacks through the dev stack's pgbouncer (transaction mode, one server
connection, so consecutive clients share a backend), as the shared role `app`: each must
fail to reach another user's identity or rows, and nothing one client leaves on the server
connection (a holdable cursor, a session-level SET, a prepared statement) may reach the
next one. The stack is the `stack` fixture
(its own instance for this module)."""

import psycopg
import pytest

pytestmark = [pytest.mark.container, pytest.mark.slow]


def sees(conn):
    """(identity, owners of the visible todos) for a client without a session of its own."""
    with conn.transaction():
        user = conn.execute("select auth.user_id()").fetchone()[0]
        return user, {row[0] for row in conn.execute("select owner from todos")}


def test_app_cannot_create_temporary_objects(stack):
    """What the issue's first attack needed: a pg_temp type (or a temp view shadowing
    `todos`) planted on the server connection for the clients after it."""
    for service in ("pooler", "db"):
        with stack.connect(service, autocommit=True) as conn:
            for statement in ("create temp table todos (owner text, title text)",
                              "create domain pg_temp.text as pg_catalog.text",
                              "create function pg_temp.f() returns int language sql return 1",
                              "create temp view v as select 1"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)


def test_a_session_scoped_identity_is_refused_and_the_next_client_gets_nothing(stack):
    with stack.connect("pooler", autocommit=True) as first, \
            stack.connect("pooler", autocommit=True) as second:
        for loosen in (None, "set pg_session_jwt.session_scope = session"):
            if loosen:
                first.execute(loosen)
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match="pg_session_jwt.session_scope"):
                first.execute("select auth.jwt_session_init(%s)", (stack.token("alice"),))
        first.execute("reset pg_session_jwt.session_scope")
        with first.transaction():
            first.execute("select auth.jwt_session_init(%s, true)", (stack.token("alice"),))
            first.execute("insert into todos (title) values ('pooled alice')")
        pids = {conn.execute("select pg_backend_pid()").fetchone()[0] for conn in (first, second)}
        assert len(pids) == 1, "the pool has one server connection"
        assert sees(second) == (None, set())


def test_a_raw_token_set_by_one_client_gives_the_next_one_nothing(stack):
    """mallory SETs her own token at session level on the shared server connection; the next
    client's rows must not become hers. Two defences, either enough: the pooler's reset
    (DISCARD ALL) removes the SET before the next client, and app is held to session_scope =
    transaction, where only a startup packet's raw token counts (pgbouncer passes none)."""
    with stack.connect("pooler", autocommit=True) as planter, \
            stack.connect("pooler", autocommit=True) as victim:
        planter.execute("select set_config('pg_session_jwt.jwt', %s, false)",
                        (stack.token("mallory"),))
        pids = {conn.execute("select pg_backend_pid()").fetchone()[0] for conn in (planter, victim)}
        assert len(pids) == 1, "the pool has one server connection"
        assert victim.execute("select current_setting('pg_session_jwt.jwt')").fetchone() == ("",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with victim.transaction():
                victim.execute("insert into todos (title) values ('meant for me')")
        with victim.transaction():
            victim.execute("select auth.jwt_session_init(%s, true)", (stack.token("victim"),))
            victim.execute("insert into todos (title) values ('mine')")
            assert {row[0] for row in victim.execute("select owner from todos")} == {"victim"}
        planter.execute("reset pg_session_jwt.jwt")


def test_a_leaked_handle_gives_the_next_client_nothing(stack):
    with stack.connect("pooler", autocommit=True) as victim, \
            stack.connect("pooler", autocommit=True) as attacker, \
            stack.connect("db", autocommit=True) as direct:
        with victim.transaction():
            victim.execute("select auth.jwt_session_init(%s, true)", (stack.token("victim"),))
            victim.execute("insert into todos (title) values ('secret')")
            # What code in the victim's transaction could read and send out:
            handle = victim.execute("select current_setting('pg_session_jwt.jwt')").fetchone()[0]
        assert handle.startswith("pg_session_jwt:"), "a handle, not the token"
        for replay in ("set local pg_session_jwt.jwt = {}",
                       "select set_config('pg_session_jwt.jwt', {}, true)"):
            with attacker.transaction():
                attacker.execute(replay.format(psycopg.sql.quote(handle)))
                with pytest.raises(psycopg.errors.CheckViolation, match="another transaction"):
                    with attacker.transaction():
                        attacker.execute("select owner from todos")
        direct.execute("select set_config('pg_session_jwt.jwt', %s, false)", (handle,))
        with pytest.raises(psycopg.errors.CheckViolation, match="does not know"):
            direct.execute("select owner from todos")
        assert sees(attacker) == (None, set())


def test_tokens_passed_as_bind_parameters_stay_out_of_pg_stat_activity(stack):
    token = stack.token("victim")
    with stack.connect("pooler", autocommit=True) as victim, \
            stack.connect("db", autocommit=True) as watcher:
        with victim.transaction():
            victim.execute("select auth.jwt_session_init(%s, true)", (token,))
            queries = [row[0] for row in watcher.execute(
                "select query from pg_stat_activity where usename = 'app'")]
            victim.execute("select count(*) from todos")
    # The same role sees the pooled backend's query, only not the token in it.
    assert any("auth.jwt_session_init($1, true)" in query for query in queries), queries
    signature = token.rsplit(".", 1)[1]
    assert not [query for query in queries if signature in query or token in query]


def shared_backend(*conns):
    pids = {conn.execute("select pg_backend_pid()").fetchone()[0] for conn in conns}
    assert len(pids) == 1, "the pool has one server connection"


def test_a_holdable_cursor_does_not_reach_the_next_client(stack):
    """alice declares a WITH HOLD cursor over her rows and commits (psycopg withhold=True,
    JDBC HOLD_CURSORS_OVER_COMMIT); the next client of the server connection must find no
    cursor to FETCH her rows from."""
    with stack.connect("pooler", autocommit=True) as alice, \
            stack.connect("pooler", autocommit=True) as mallory:
        with alice.transaction():
            alice.execute("select auth.jwt_session_init(%s, true)", (stack.token("alice"),))
            alice.execute("insert into todos (title) values ('held')")
            alice.execute("declare held cursor with hold for select owner, title from todos")
        shared_backend(alice, mallory)
        assert mallory.execute("select count(*) from pg_cursors").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InvalidCursorName):
            mallory.execute("fetch all from held")


@pytest.mark.parametrize("setting, value", [
    ("default_transaction_read_only", "on"), ("statement_timeout", "1"),
    ("search_path", "pg_catalog"),
])
def test_a_session_level_set_does_not_reach_the_next_client(stack, setting, value):
    """A client's session-level SET would otherwise break (read only, a 1 ms timeout) or
    redirect (search_path) every later client of the server connection."""
    with stack.connect("pooler", autocommit=True) as first, \
            stack.connect("pooler", autocommit=True) as second:
        before = second.execute(f"show {setting}").fetchone()[0]
        shared_backend(first, second)
        first.execute(f"set {setting} = {psycopg.sql.quote(value)}")
        assert second.execute(f"show {setting}").fetchone()[0] == before
        with second.transaction():
            second.execute("select auth.jwt_session_init(%s, true)", (stack.token("bob"),))
            second.execute("insert into todos (title) values ('still writable')")
            assert {row[0] for row in second.execute("select owner from todos")} == {"bob"}


def test_a_prepared_statement_does_not_reach_the_next_client(stack):
    with stack.connect("pooler", autocommit=True) as first, \
            stack.connect("pooler", autocommit=True) as second:
        first.execute("prepare leftover as select owner, title from todos")
        shared_backend(first, second)
        assert second.execute("select count(*) from pg_prepared_statements").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            second.execute("execute leftover")


def test_a_role_changing_its_own_defaults_is_not_stopped_but_shows(stack):
    """PostgreSQL lets a role ALTER ROLE itself SET any user-settable parameter, and no event
    trigger fires for roles, so nothing inside the database can refuse it; what stops it
    for pg_session_jwt.* (42501) does not extend to other settings. The README says how to
    find it: this is that query, and the fix, run by the operator."""
    with stack.connect("pooler", autocommit=True) as app:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("alter role app set pg_session_jwt.session_scope = session")
        app.execute("alter role app set default_transaction_read_only = on")
    try:
        with stack.connect("db", autocommit=True) as later:
            assert later.execute("show default_transaction_read_only").fetchone() == ("on",)
        with stack.admin() as conn:
            found = conn.execute(
                "select r.rolname, s.setconfig from pg_db_role_setting s "
                "join pg_roles r on r.oid = s.setrole where r.rolname = 'app'").fetchall()
            assert ("app", ["pg_session_jwt.session_scope=transaction",
                            "default_transaction_read_only=on"]) in found
    finally:
        with stack.admin() as conn:
            conn.execute("alter role app reset default_transaction_read_only")
