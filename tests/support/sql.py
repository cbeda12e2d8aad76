"""SQL helpers of the extension's container tests: run a query that may fail, read an ERROR,
and ask for an identity the way an attacker's client would."""

import psycopg

# What the getters refuse with; any other error is a bug the tests must see.
REFUSALS = {"02000", "22023", "23514", "42501", "42804", "54000", "55000"}


def literal(value):
    """`value` quoted as an SQL literal (for statements that cannot take bind parameters)."""
    return psycopg.sql.quote(value)


def attempt(conn, query, params=None):
    """The rows of `query`, or the psycopg.Error it raised; inside a transaction block a
    savepoint keeps the block usable after the error."""
    in_block = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    if in_block:
        conn.execute("savepoint attempt")
    try:
        return conn.execute(query, params).fetchall()
    except psycopg.Error as exc:
        if in_block:
            conn.execute("rollback to savepoint attempt")
        return exc


def error(conn, query, params=None):
    """(SQLSTATE, primary message) of the ERROR `query` raises."""
    result = attempt(conn, query, params)
    assert isinstance(result, psycopg.Error), f"{query!r} did not fail: {result!r}"
    return result.sqlstate, result.diag.message_primary


def extension_version(conn):
    """The installed pg_session_jwt version of this database, as a tuple of ints."""
    version = conn.execute("select extversion from pg_extension where extname = 'pg_session_jwt'")
    return tuple(map(int, version.fetchone()[0].split(".")))


def identity(conn, getter="auth.user_id()"):
    """What `getter` returns, or None when it refuses: either way, no identity."""
    result = attempt(conn, f"select {getter}")
    if isinstance(result, psycopg.Error):
        assert result.sqlstate in REFUSALS, (result.sqlstate, str(result))
        return None
    return result[0][0]


def session_user(conn, jwt):
    """auth.user_id() after a session-scoped jwt_session_init(jwt) on `conn`."""
    conn.execute("select auth.jwt_session_init(%s)", [jwt])
    return conn.execute("select auth.user_id()").fetchone()[0]


def init_refusal(conn, jwt):
    """The psycopg.Error that jwt_session_init(jwt) raises on `conn` (it must raise)."""
    try:
        conn.execute("select auth.jwt_session_init(%s)", [jwt])
    except psycopg.Error as exc:
        return exc
    raise AssertionError("jwt_session_init accepted a token it should refuse")
