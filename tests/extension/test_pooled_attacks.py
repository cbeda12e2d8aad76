"""The same-role attacks through the dev stack's pgbouncer (transaction mode, one server
connection, so consecutive clients share a backend), as the shared role `app`: each must
fail to reach another user's identity or rows. The stack is the `stack` fixture
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
    client's rows must not become hers (app is held to session_scope = transaction, where only
    a startup packet's raw token counts: pgbouncer passes none)."""
    with stack.connect("pooler", autocommit=True) as planter, \
            stack.connect("pooler", autocommit=True) as victim:
        planter.execute("select set_config('pg_session_jwt.jwt', %s, false)",
                        (stack.token("mallory"),))
        pids = {conn.execute("select pg_backend_pid()").fetchone()[0] for conn in (planter, victim)}
        assert len(pids) == 1, "the pool has one server connection"
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="session_scope"):
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
