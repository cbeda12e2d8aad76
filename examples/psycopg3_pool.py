"""psycopg 3 with a ConnectionPool: one request is one transaction, and the user's token is
that transaction's identity.

    pip install "psycopg[binary]" psycopg-pool
    make run        # prints DATABASE_URL-style connection strings and ALICE_TOKEN/BOB_TOKEN
    DATABASE_URL=postgresql://app:app@127.0.0.1:56432/demo ALICE_TOKEN=... BOB_TOKEN=... \\
        python examples/psycopg3_pool.py

The pattern: `auth.jwt_session_init(%s, true)` as the first statement of the request's
transaction. psycopg 3 sends `%s` as a bind parameter (the server sees `$1`, never the
token in the SQL text), and `true` makes the session end at COMMIT/ROLLBACK, so a pooled
connection — the pool's, or pgbouncer's server connection in transaction mode — carries
no identity to the next request. Server-side prepared statements (`prepare_threshold`)
and pipeline mode work the same way, also through pgbouncer 1.21+ with
`max_prepared_statements` set (the dev stack's pooler sets it).

Prints what each request saw as JSON; exits non-zero if one user saw another's rows.
"""

import json
import os
from contextlib import contextmanager

from psycopg_pool import ConnectionPool

INIT = "select auth.jwt_session_init(%s, true)"
TODOS = "select owner, title from todos order by id"


@contextmanager
def request(pool, token):
    """A connection in one transaction carrying `token`'s identity (None: anonymous)."""
    with pool.connection() as conn, conn.transaction():
        if token is not None:
            conn.execute(INIT, [token])
        yield conn


def add_todo(pool, token, title):
    with request(pool, token) as conn:
        # owner defaults to auth.user_id(); the policy checks it too.
        return conn.execute("insert into todos (title) values (%s) returning owner",
                            [title]).fetchone()[0]


def owners(pool, token, repeat=1):
    """The owners of the todos `token` may see, reading them `repeat` times (psycopg
    prepares a statement on the server after prepare_threshold executions)."""
    with request(pool, token) as conn:
        seen = set()
        for _ in range(repeat):
            seen |= {owner for owner, _ in conn.execute(TODOS)}
        prepared = conn.execute("select count(*) from pg_prepared_statements "
                                "where not from_sql").fetchone()[0]
        return sorted(seen), prepared


def owners_pipelined(pool, token):
    """The same request in pipeline mode: both statements sent before any result is read."""
    with pool.connection() as conn, conn.transaction(), conn.pipeline():
        conn.execute(INIT, [token])
        cursor = conn.execute(TODOS)
        identity = conn.execute("select auth.user_id()")
        rows, user = cursor.fetchall(), identity.fetchone()[0]
    return sorted({owner for owner, _ in rows}), user


def main():
    url, alice, bob = (os.environ[name] for name in ("DATABASE_URL", "ALICE_TOKEN", "BOB_TOKEN"))
    # prepare_threshold=1: prepared on the server from a statement's second execution.
    with ConnectionPool(url, min_size=1, max_size=2, open=True,
                        kwargs={"autocommit": True, "prepare_threshold": 1}) as pool:
        out = {"inserted": [add_todo(pool, alice, "psycopg 3 recipe"),
                            add_todo(pool, bob, "psycopg 3 recipe")]}
        out["alice"], out["alice_prepared"] = owners(pool, alice, repeat=3)
        out["bob"], out["bob_prepared"] = owners(pool, bob, repeat=3)
        out["anonymous"], _ = owners(pool, None)
        out["alice_pipelined"], out["alice_pipelined_user"] = owners_pipelined(pool, alice)
        out["bob_pipelined"], _ = owners_pipelined(pool, bob)
        out["anonymous_after"], _ = owners(pool, None)
    print(json.dumps(out))
    apart = (out["alice"] == out["alice_pipelined"] == ["alice"]
             and out["bob"] == out["bob_pipelined"] == ["bob"]
             and out["anonymous"] == out["anonymous_after"] == []
             # The statements really were prepared on the server (also through pgbouncer).
             and out["alice_prepared"] > 0 and out["bob_prepared"] > 0)
    raise SystemExit(0 if apart else "rows were not kept apart")


if __name__ == "__main__":
    main()
