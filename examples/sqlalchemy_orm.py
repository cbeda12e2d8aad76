"""SQLAlchemy 2 (ORM, sync and asyncio): the current request's token set at the start of
every transaction by an event hook, never left on a pooled connection.

    pip install "sqlalchemy[asyncio]" "psycopg[binary]"
    DATABASE_URL=postgresql://app:app@127.0.0.1:56432/demo ALICE_TOKEN=... BOB_TOKEN=... \\
        python examples/sqlalchemy_orm.py

The web framework puts the request's token in a context variable; an `after_begin` hook
on the Session class runs `auth.jwt_session_init(:token, true)` on the connection each
time a Session begins a transaction. `true` ends that identity at COMMIT/ROLLBACK, so the
engine's pool (and pgbouncer behind it, in transaction mode) hands out connections that
carry none; a request without a token gets no identity. The driver is psycopg 3, which
sends `:token` as a bind parameter (`$1`). The same hook serves AsyncSession, whose
events are those of its sync_session_class.

Prints what each request saw as JSON; exits non-zero if one user saw another's rows.
"""

import asyncio
import contextvars
import json
import os

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

current_token = contextvars.ContextVar("current_token", default=None)


class Base(DeclarativeBase):
    pass


class Todo(Base):
    __tablename__ = "todos"
    id: Mapped[int] = mapped_column(primary_key=True)
    # Filled in by the table's default, auth.user_id(): never sent by the client.
    owner: Mapped[str] = mapped_column(server_default=text("auth.user_id()"))
    title: Mapped[str]


class RequestSession(Session):
    """Sessions whose transactions carry the current request's identity."""


@event.listens_for(RequestSession, "after_begin")
def start_jwt_session(session, transaction, connection):
    token = current_token.get()
    if token is not None:
        connection.execute(text("select auth.jwt_session_init(:token, true)"), {"token": token})


def sync_request(factory, token, add=None):
    """One request: its token in the context, one Session, one transaction."""
    reset = current_token.set(token)
    try:
        with factory.begin() as session:
            if add is not None:
                session.add(Todo(title=add))
                session.flush()
            owners = sorted(set(session.scalars(select(Todo.owner))))
            user = session.scalar(select(text("auth.user_id()")))
            return [owners, user]
    finally:
        current_token.reset(reset)


def sync_two_transactions(factory, token):
    """One Session, two transactions (a commit between): the hook runs at each start, so
    the second has the identity too (the first's ended at its COMMIT)."""
    reset = current_token.set(token)
    try:
        with factory() as session:
            first = session.scalar(select(text("auth.user_id()")))
            session.commit()
            second = session.scalar(select(text("auth.user_id()")))
            session.commit()
            return [first, second]
    finally:
        current_token.reset(reset)


async def async_request(factory, token, add=None):
    reset = current_token.set(token)
    try:
        async with factory.begin() as session:
            if add is not None:
                session.add(Todo(title=add))
                await session.flush()
            owners = sorted(set((await session.scalars(select(Todo.owner))).all()))
            user = await session.scalar(select(text("auth.user_id()")))
            return [owners, user]
    finally:
        current_token.reset(reset)


def sync_part(url, alice, bob):
    engine = create_engine(url, pool_size=1, max_overflow=0)
    factory = sessionmaker(engine, class_=RequestSession)
    try:
        out = {"sync_alice": sync_request(factory, alice, add="SQLAlchemy recipe"),
               "sync_bob": sync_request(factory, bob, add="SQLAlchemy recipe"),
               "sync_alice_two_transactions": sync_two_transactions(factory, alice),
               # The same pooled connection, the next request: no identity left on it.
               "sync_anonymous": sync_request(factory, None)}
    finally:
        engine.dispose()
    return out


async def async_part(url, alice, bob):
    engine = create_async_engine(url, pool_size=2, max_overflow=0)
    factory = async_sessionmaker(engine, sync_session_class=RequestSession,
                                 class_=AsyncSession)
    try:
        alice_seen, bob_seen = await asyncio.gather(async_request(factory, alice),
                                                    async_request(factory, bob))
        out = {"async_alice": alice_seen, "async_bob": bob_seen,
               "async_anonymous": await async_request(factory, None)}
    finally:
        await engine.dispose()
    return out


def main():
    url, alice, bob = (os.environ[name] for name in ("DATABASE_URL", "ALICE_TOKEN", "BOB_TOKEN"))
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    out = sync_part(url, alice, bob)
    out.update(asyncio.run(async_part(url, alice, bob)))
    print(json.dumps(out))
    apart = all(out[f"{mode}_alice"] == [["alice"], "alice"]
                and out[f"{mode}_bob"] == [["bob"], "bob"]
                and out[f"{mode}_anonymous"] == [[], None] for mode in ("sync", "async"))
    apart = apart and out["sync_alice_two_transactions"] == ["alice", "alice"]
    raise SystemExit(0 if apart else "rows were not kept apart")


if __name__ == "__main__":
    main()
