"""asyncpg with its pool: one request is one transaction carrying the user's token.

    pip install asyncpg
    DATABASE_URL=postgresql://app:app@127.0.0.1:56432/demo ALICE_TOKEN=... BOB_TOKEN=... \\
        python examples/asyncpg_pool.py

asyncpg always binds on the server (`$1`) and prepares every statement under a name it
caches per connection. Through pgbouncer in transaction mode that needs pgbouncer 1.21 or
later with `max_prepared_statements` above 0 (the dev stack's pooler: Debian's pgbouncer
1.24, `max_prepared_statements = 200`); pgbouncer then re-prepares a client's statements on
whichever server connection serves its transaction. (asyncpg's names are unique per
process, so with a single server connection it seems to work without; with several, a
statement prepared on one is missing on the next.) With an older pgbouncer, pass
`statement_cache_size=0` (asyncpg still prepares, but unnamed).

Prints what each request saw as JSON; exits non-zero if one user saw another's rows.
"""

import asyncio
import json
import os
from contextlib import asynccontextmanager

import asyncpg

INIT = "select auth.jwt_session_init($1, true)"
TODOS = "select owner, title from todos order by id"


@asynccontextmanager
async def request(pool, token):
    """A connection in one transaction carrying `token`'s identity (None: anonymous)."""
    async with pool.acquire() as conn, conn.transaction():
        if token is not None:
            await conn.execute(INIT, token)
        yield conn


async def add_todo(pool, token, title):
    async with request(pool, token) as conn:
        return await conn.fetchval("insert into todos (title) values ($1) returning owner", title)


async def owners(pool, token):
    async with request(pool, token) as conn:
        rows = await conn.fetch(TODOS)
        # A named prepared statement, reused: what pgbouncer must track per client.
        statement = await conn.prepare("select auth.user_id()")
        users = {await statement.fetchval() for _ in range(3)}
        return sorted({row["owner"] for row in rows}), sorted(users, key=str)


async def main():
    url, alice, bob = (os.environ[name] for name in ("DATABASE_URL", "ALICE_TOKEN", "BOB_TOKEN"))
    async with asyncpg.create_pool(url, min_size=1, max_size=2) as pool:
        out = {"inserted": [await add_todo(pool, alice, "asyncpg recipe"),
                            await add_todo(pool, bob, "asyncpg recipe")]}
        # Concurrent requests: each keeps its own identity on its own connection.
        (out["alice"], out["alice_user"]), (out["bob"], out["bob_user"]) = await asyncio.gather(
            owners(pool, alice), owners(pool, bob))
        out["anonymous"], out["anonymous_user"] = await owners(pool, None)
    print(json.dumps(out))
    apart = (out["alice"] == ["alice"] and out["bob"] == ["bob"] and out["anonymous"] == []
             and out["anonymous_user"] == [None])
    raise SystemExit(0 if apart else "rows were not kept apart")


if __name__ == "__main__":
    asyncio.run(main())
