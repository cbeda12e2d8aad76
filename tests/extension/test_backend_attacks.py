"""Attacks on the server process itself, by a client of the shared role, on every major:
the extension called in parallel mode through a PARALLEL SAFE wrapper (on 15 an SPI call
there used to wreck the interpreter, and the next call crashed the whole server), and
memory that one connection makes the extension keep (200,000 sessions in one transaction
or across many, a stream of distinct tokens). Each test also checks the server survived.
"""

import psycopg
import pytest

from devtools.jwt import mint, public_jwk
from tests.support.sql import attempt, identity, literal

pytestmark = pytest.mark.container

# The extension's public functions as an application would wrap them; `t` is a token.
CALLS = {
    "init": "perform auth.init()",
    "jwt_session_init local": "perform auth.jwt_session_init(t, true)",
    "jwt_session_init": "perform auth.jwt_session_init(t)",
    "jwt_session_end": "perform auth.jwt_session_end()",
    "session": "perform auth.session()",
    "jwt": "perform auth.jwt()",
    "user_id": "perform auth.user_id()",
    "uid": "perform auth.uid()",
    "organization": "perform auth.organization()",
    "organization_id": "perform auth.organization_id()",
}
# What parallel mode may answer: the extension's refusal, or PostgreSQL's own refusal of
# set_config() there (jwt_session_end is plain SQL). Anything else is a bug.
PARALLEL_REFUSALS = {"55000", "25000"}


def force_parallel_mode(conn, pg_major):
    """Run every query under a Gather in the leader (no workers): the leader is then in
    parallel mode, which is where a PARALLEL SAFE wrapper takes the functions it calls."""
    force = "debug_parallel_query" if pg_major >= 16 else "force_parallel_mode"
    conn.execute(f"set {force} = on")
    conn.execute("set max_parallel_workers = 0")


def server_started(conn):
    return conn.execute("select pg_postmaster_start_time()").fetchone()[0]


@pytest.mark.parametrize("language", ["plpgsql", "sql"])
@pytest.mark.parametrize("call", list(CALLS))
def test_a_parallel_safe_wrapper_cannot_break_the_backend_or_the_server(
        pg, pg_major, key, call, language):
    token = mint(key, sub="alice")
    with pg.connect() as bystander:
        started = server_started(bystander)
        with pg.connect(jwk=public_jwk(key)) as conn:
            # A fresh connection: the wrapper's call is the extension's first in this backend.
            body = CALLS[call]
            if language == "plpgsql":
                conn.execute("create function pg_temp.w(t text) returns text language plpgsql "
                             f"parallel safe as $$ begin {body}; return 'x'; end $$")
            else:
                conn.execute("create function pg_temp.w(t text) returns text language sql "
                             f"parallel safe as $$ select {body.removeprefix('perform ')}; "
                             "select 'x' $$")
            force_parallel_mode(conn, pg_major)
            result = attempt(conn, "select pg_temp.w(%s)", [token])
            if isinstance(result, psycopg.Error):
                assert result.sqlstate in PARALLEL_REFUSALS, (result.sqlstate, str(result))
            else:
                assert result == [("x",)]
            # The attack's second half: whatever the first call left, later calls on this
            # connection, its PL/Python and its identity work as on any other.
            conn.execute("reset all")
            conn.execute(f"set pg_session_jwt.jwt = {literal('x')}")
            assert identity(conn) is None
            conn.execute("reset pg_session_jwt.jwt")
            conn.execute("select auth.init()")
            with conn.transaction():
                conn.execute("select auth.jwt_session_init(%s, true)", [token])
                assert [identity(conn, g) for g in ("auth.user_id()", "auth.uid()::text",
                                                    "auth.session()->>'sub'")] == [
                    "alice", None, "alice"]
        # The bystander's connection survived, and the server did not restart.
        assert server_started(bystander) == started


def backend_rss_kb(pg, conn):
    """The connection's server process's own resident memory (anonymous pages: not the
    shared buffers it has touched), in kB."""
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    _, status = pg.exec(["cat", f"/proc/{pid}/status"])
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:"))


# The README names the bound; what a backend may grow by under each load below, past a
# warm-up, is the verified-token cache's 1 MiB plus allocator slack.
MAX_GROWTH_KB = 4096
CALLS_PER_RUN = 200_000


def grows_by(pg, conn, run):
    """RSS growth of the backend across `run()`, after the same run once as a warm-up."""
    run()
    before = backend_rss_kb(pg, conn)
    run()
    return backend_rss_kb(pg, conn) - before


@pytest.mark.slow
@pytest.mark.parametrize("local", [True, False], ids=["transaction-scoped", "session-scoped"])
def test_sessions_in_one_transaction_keep_memory_bounded(pg, key, local):
    token = mint(key, sub="alice")
    with pg.connect(jwk=public_jwk(key)) as conn:
        query = (f"select count(auth.jwt_session_init(%s, {str(local).lower()})) "
                 f"from generate_series(1, {CALLS_PER_RUN})")
        growth = grows_by(pg, conn, lambda: conn.execute(query, [token]))
        assert growth < MAX_GROWTH_KB, f"{growth} kB after {CALLS_PER_RUN} sessions"
        # The last session still works (autocommit ended a transaction-scoped one).
        assert identity(conn) == (None if local else "alice")


@pytest.mark.slow
def test_sessions_across_transactions_keep_memory_bounded(pg, key):
    token = mint(key, sub="alice")
    loop = (f"do $$ begin for i in 1..{CALLS_PER_RUN // 4} loop "
            f"perform auth.jwt_session_init({literal(token)}, true); commit; end loop; end $$")
    with pg.connect(jwk=public_jwk(key)) as conn:
        growth = grows_by(pg, conn, lambda: conn.execute(loop))
        assert growth < MAX_GROWTH_KB, f"{growth} kB after {CALLS_PER_RUN // 4} transactions"


@pytest.mark.slow
def test_a_stream_of_distinct_tokens_keeps_memory_bounded(pg, key):
    """With require_jti off every verified token goes into the per-backend cache, which
    must evict rather than grow: 2,000 distinct tokens (the cache holds 256) ten times."""
    tokens = [mint(key, sub=f"user-{i}") for i in range(2000)]
    query = ("select count(auth.jwt_session_init(t, true)) "
             "from unnest(%s::text[]) t, generate_series(1, 10)")
    with pg.connect(jwk=public_jwk(key), options="-c pg_session_jwt.require_jti=off") as conn:
        growth = grows_by(pg, conn, lambda: conn.execute(query, [tokens]))
        assert growth < MAX_GROWTH_KB, f"{growth} kB after {len(tokens) * 10} tokens"
