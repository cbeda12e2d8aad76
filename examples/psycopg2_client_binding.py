"""psycopg2 works, but binds on the client: the token ends up in the SQL text.

    pip install psycopg2-binary "psycopg[binary]"
    DATABASE_URL=postgresql://app:app@127.0.0.1:56432/demo ALICE_TOKEN=... BOB_TOKEN=... \\
        python examples/psycopg2_client_binding.py

psycopg2 has no server-side parameters: `cursor.execute(sql, [token])` quotes the token
into the statement and sends `select auth.jwt_session_init('eyJ...', true)`. The server
then shows that text in `pg_stat_activity.query` — to every session of the same role
(every end user of a shared `app` role) while it is the connection's current or last
statement — and writes it to the server log if statements are logged. Rows are still
kept apart (the identity is right); the token is what leaks, and anyone who reads it can
use it until it expires.

The safe alternative is psycopg 3, whose API is close to psycopg2's: `psycopg.connect`,
the same `%s` placeholders, and parameters sent separately (the server sees `$1`).
`safe_request()` below is the same request with it. (Wrapping the call in a PREPARE does
not help: `EXECUTE name('eyJ...')` is SQL text too.)

Prints what each request saw and the SQL text psycopg2 sent (token elided) as JSON; exits non-zero
if rows were not kept apart.
"""

import json
import os
from contextlib import contextmanager

import psycopg
import psycopg2

INIT = "select auth.jwt_session_init(%s, true)"
TODOS = "select owner from todos order by id"


@contextmanager
def request(conn, token):
    """psycopg2: one request, one transaction (`with conn` commits or rolls back)."""
    with conn, conn.cursor() as cursor:
        if token is not None:
            cursor.execute(INIT, [token])
        yield cursor


def owners(conn, token, title=None):
    with request(conn, token) as cursor:
        if title is not None:
            cursor.execute("insert into todos (title) values (%s)", [title])
        cursor.execute(TODOS)
        seen = sorted({row[0] for row in cursor.fetchall()})
        cursor.execute("select auth.user_id()")
        return seen, cursor.fetchone()[0]


def sent_text(conn, token):
    """The statement psycopg2 sends for the session call: the token is in it."""
    with conn.cursor() as cursor:
        return cursor.mogrify(INIT, [token]).decode()


def safe_request(url, token):
    """The same request with psycopg 3: the token travels as a bind parameter."""
    with psycopg.connect(url, prepare_threshold=None) as conn, conn.transaction():
        conn.execute(INIT, [token])          # the server sees: ... jwt_session_init($1, true)
        return sorted({row[0] for row in conn.execute(TODOS)})


def main():
    url, alice, bob = (os.environ[name] for name in ("DATABASE_URL", "ALICE_TOKEN", "BOB_TOKEN"))
    conn = psycopg2.connect(url)
    try:
        out = {"alice": owners(conn, alice, "psycopg2 recipe"),
               "bob": owners(conn, bob, "psycopg2 recipe"),
               "anonymous": owners(conn, None)}
        out["psycopg2_sent"] = sent_text(conn, alice)
    finally:
        conn.close()
    out["psycopg3_alice"] = safe_request(url, alice)
    # The token is in the text psycopg2 sends (shown here without it).
    out["token_in_sql_text"] = alice in out["psycopg2_sent"]
    out["psycopg2_sent"] = out["psycopg2_sent"].replace(alice, "<ALICE_TOKEN>")
    print(json.dumps(out))
    apart = (list(out["alice"]) == [["alice"], "alice"] and list(out["bob"]) == [["bob"], "bob"]
             and list(out["anonymous"]) == [[], None] and out["psycopg3_alice"] == ["alice"])
    raise SystemExit(0 if apart else "rows were not kept apart")


if __name__ == "__main__":
    main()
