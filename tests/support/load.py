"""Concurrent Row Level Security load for the stress tests: many users at once, each
checking every row the server returns to it, each logging the commits it saw acknowledged.

One client = one thread = one connection = one user (`sub`) with its own signing key (the
server trusts a JWKS holding every client's public key). A client is either
  direct   a session-scoped identity (`auth.jwt_session_init(token)`) on its own server
           connection, refreshed now and then with a token of a higher jti; the role keeps
           the server's default `pg_session_jwt.require_jti = on`;
  pooled   through pgbouncer in transaction mode: every transaction starts with
           `auth.jwt_session_init(token, true)` (transaction-scoped). Its role has
           `require_jti = off` (ALTER ROLE ... SET, so read at connection start): one server
           connection serves every pooled client, so tokens minted by different clients reach
           it out of jti order, and a per-backend "strictly increasing jti" would refuse
           valid tokens (23514) for reasons that have nothing to do with replay. Now and then
           a pooled transaction runs without any session and must see no identity and no row:
           the previous client's transaction-scoped identity must not leak.

Every operation checks what came back: rows of another owner, own rows missing from an
update, a wrong `auth.user_id()` are *violations*. Errors are *unexpected* unless their
SQLSTATE is in `expected` or they are connection losses after `fault_injected()`.

The pure parts (scale, row checks, the ledger and the durability comparison) have unit tests
in tests/unit/test_load_logic.py; the runs are tests/stress/.
"""

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from devtools import jwt as tokens
from runtime.errors import UserError

SCALE_VARIABLE = "PG_SESSION_JWT_STRESS_SCALE"
# name → (clients, seconds)
SCALES = {"ci": (16, 10.0), "full": (64, 60.0)}
DEFAULT_SCALE = "full"

TABLE = "stress_items"
DIRECT_ROLE = "app_direct"
# The pooler image (compose/pooler) knows the users `postgres` and `app` only.
POOLED_ROLE = "app"
ROLE_PASSWORD = "stress-role-password"  # throwaway role inside a throwaway container

# The RLS demo table of compose/initdb, with a counter that updates increment.
SCHEMA_SQL = f"""
create table public.{TABLE} (
    id bigint generated always as identity primary key,
    owner text not null default auth.user_id(),
    n bigint not null default 0,
    note text not null
);
alter table public.{TABLE} enable row level security;
alter table public.{TABLE} force row level security;
create policy sel on public.{TABLE} for select using (owner = (select auth.user_id()));
create policy ins on public.{TABLE} for insert with check (owner = (select auth.user_id()));
create policy upd on public.{TABLE} for update using (owner = (select auth.user_id()))
    with check (owner = (select auth.user_id()));
create role {DIRECT_ROLE} login password '{ROLE_PASSWORD}';
create role {POOLED_ROLE} login password '{ROLE_PASSWORD}';
alter role {POOLED_ROLE} set pg_session_jwt.require_jti = off;
grant usage on schema auth to {DIRECT_ROLE}, {POOLED_ROLE};
grant select, insert, update (n, note) on public.{TABLE} to {DIRECT_ROLE}, {POOLED_ROLE};
"""

# Connection-level trouble: the server went away or is going away.
CONNECTION_SQLSTATE_PREFIXES = ("08", "57P")


def scale(environ):
    """(clients, seconds) for PG_SESSION_JWT_STRESS_SCALE ("ci" or "full", default full)."""
    name = (environ.get(SCALE_VARIABLE) or DEFAULT_SCALE).strip().lower()
    if name not in SCALES:
        raise UserError(f"{SCALE_VARIABLE}={name!r}: use one of {', '.join(SCALES)} "
                        "(ci: 16 clients x 10 s, full: 64 clients x 60 s)")
    return SCALES[name]


def foreign_rows(sub, rows, owner_index=1):
    """The rows in `rows` whose owner (column `owner_index`) is not `sub`."""
    return [row for row in rows if row[owner_index] != sub]


@dataclass
class Ledger:
    """What one client saw of its own writes: rows and increments acknowledged by COMMIT,
    and those whose COMMIT failed without an answer (in doubt: either outcome is correct)."""

    sub: str
    acked: dict = field(default_factory=dict)          # id → acknowledged increments
    doubtful_rows: set = field(default_factory=set)    # inserted, commit outcome unknown
    doubtful_increments: Counter = field(default_factory=Counter)

    def committed(self, inserted=(), updated=()):
        for row_id in inserted:
            self.acked[row_id] = 0
        for row_id in updated:
            self.acked[row_id] += 1

    def in_doubt(self, inserted=(), updated=()):
        self.doubtful_rows.update(inserted)
        self.doubtful_increments.update(updated)

    def own_ids(self):
        return list(self.acked)


def durability_problems(ledgers, found):
    """What the database lost or invented, compared with the clients' ledgers.

    `found` maps id → (owner, n) for every row in the table, read by a superuser. For
    each acknowledged row: present, same owner, acked <= n <= acked + in-doubt increments.
    A row of a ledger's owner that the ledger never heard of is invented."""
    problems = []
    for ledger in ledgers:
        for row_id, increments in ledger.acked.items():
            if row_id not in found:
                problems.append(f"{ledger.sub}: acknowledged row {row_id} is missing")
                continue
            owner, n = found[row_id]
            if owner != ledger.sub:
                problems.append(f"{ledger.sub}: row {row_id} now belongs to {owner!r}")
            high = increments + ledger.doubtful_increments.get(row_id, 0)
            if not increments <= n <= high:
                problems.append(f"{ledger.sub}: row {row_id} has n={n}, acknowledged "
                                f"{increments} (+{high - increments} in doubt)")
        known = set(ledger.acked) | ledger.doubtful_rows
        for row_id, (owner, _) in found.items():
            if owner == ledger.sub and row_id not in known:
                problems.append(f"{ledger.sub}: row {row_id} was never inserted by this client")
    return problems


@dataclass
class Stats:
    """Counts of one client (or, merged, of a run)."""

    transactions: int = 0
    operations: Counter = field(default_factory=Counter)
    rows_checked: int = 0
    violations: list = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)        # expected ones, by SQLSTATE/kind
    samples: dict = field(default_factory=dict)             # kind → first message
    unexpected: list = field(default_factory=list)

    def expected_error(self, kind, exc):
        self.errors[kind] += 1
        self.samples.setdefault(kind, str(exc).strip()[:300])

    def merge(self, other):
        self.transactions += other.transactions
        self.operations.update(other.operations)
        self.rows_checked += other.rows_checked
        self.violations.extend(other.violations)
        self.errors.update(other.errors)
        for kind, message in other.samples.items():
            self.samples.setdefault(kind, message)
        self.unexpected.extend(other.unexpected)
        return self


def error_kind(exc):
    """The SQLSTATE of a psycopg error, or its class name when the server sent none."""
    return getattr(exc, "sqlstate", None) or type(exc).__name__


def is_connection_error(exc):
    import psycopg

    kind = error_kind(exc)
    return (isinstance(exc, psycopg.OperationalError)
            or any(kind.startswith(p) for p in CONNECTION_SQLSTATE_PREFIXES))


@dataclass
class Client:
    """One simulated user: its `sub`, its signing key, how it connects."""

    sub: str
    key: object
    mode: str       # "direct" or "pooled"
    seed: int = 0
    dsn: str = ""   # set by connect_clients once the server is up


def make_clients(count, pooled=False, prefix="user"):
    """`count` clients with their own EdDSA keys: alternately direct and pooled when `pooled`,
    else all direct."""
    return [Client(sub=f"{prefix}-{i:03d}", key=tokens.generate_key("EdDSA"),
                   mode="pooled" if pooled and i % 2 == 1 else "direct", seed=i)
            for i in range(count)]


def connect_clients(clients, direct_dsn, pooled_dsn=None):
    for client in clients:
        client.dsn = pooled_dsn if client.mode == "pooled" else direct_dsn


def jwks(clients):
    """The JWKS text that trusts every client's key (the server-wide PG_SESSION_JWT_JWK)."""
    return tokens.public_jwks(c.key for c in clients)


class _IdPool:
    """Ids acknowledged by any client: the foreign ids each client tries to read and update."""

    def __init__(self, limit=5000):
        self._lock = threading.Lock()
        self._ids = []
        self._limit = limit

    def add(self, ids):
        with self._lock:
            self._ids.extend(ids)
            if len(self._ids) > self._limit:
                del self._ids[: len(self._ids) - self._limit]

    def sample(self, rng, k):
        with self._lock:
            return rng.sample(self._ids, min(k, len(self._ids)))


class Load:
    """Run the clients until `stop()` (or `seconds`), then `join()` for the merged Stats.

    `expected` is a set of SQLSTATEs that are not counted as unexpected (e.g. 53100 while a
    disk is full); after `fault_injected()`, connection losses are expected and end a client.
    """

    def __init__(self, clients, seconds, expected=(), reconnect=False):
        self.clients = clients
        self.seconds = seconds
        self.expected = set(expected)
        self.reconnect = reconnect
        self.ledgers = {c.sub: Ledger(c.sub) for c in clients}
        self.pool = _IdPool()
        self._stop = threading.Event()
        self._fault = threading.Event()
        self._threads = []
        self._stats = []
        self.started = self.elapsed = None

    def start(self):
        self.started = time.monotonic()
        for client in self.clients:
            stats = Stats()
            self._stats.append(stats)
            thread = threading.Thread(target=self._run_client, args=(client, stats),
                                      name=f"load-{client.sub}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def fault_injected(self):
        self._fault.set()

    def acknowledged(self):
        """Transactions whose COMMIT clients saw succeed so far (read while the load runs)."""
        return sum(stats.transactions for stats in list(self._stats))

    def stop(self):
        self._stop.set()

    def error_count(self, kind):
        """Expected errors of `kind` so far (read while the load runs)."""
        return sum(stats.errors.get(kind, 0) for stats in list(self._stats))

    def rows_acknowledged(self):
        return sum(len(ledger.acked) for ledger in self.ledgers.values())

    def transactions_by_mode(self):
        counts = Counter()
        for client, stats in zip(self.clients, self._stats, strict=True):
            counts[client.mode] += stats.transactions
        return dict(counts)

    def join(self, timeout=120):
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        self.elapsed = time.monotonic() - self.started
        total = Stats()
        for stats in self._stats:
            total.merge(stats)
        if alive:
            total.unexpected.append(f"clients still running after {timeout}s: {alive}")
        return total

    def run(self):
        """start(), wait `seconds`, stop(), join()."""
        self.start()
        self._stop.wait(self.seconds)
        self.stop()
        return self.join()

    # --- one client ---------------------------------------------------------------------

    def _done(self):
        return self._stop.is_set() or time.monotonic() - self.started >= self.seconds

    def _run_client(self, client, stats):
        import psycopg

        rng = random.Random(client.seed)
        ledger = self.ledgers[client.sub]
        while not self._done():
            try:
                conn = psycopg.connect(client.dsn, autocommit=False, connect_timeout=10,
                                       prepare_threshold=None)
            except Exception as exc:
                if not self._handle(exc, stats, "connect"):
                    return
                time.sleep(0.2)
                continue
            try:
                with conn:
                    _Session(self, client, conn, rng, ledger, stats).run()
                return
            except Exception as exc:  # the session ended on an error _handle() judged
                if not self._handle(exc, stats, "session"):
                    return

    def _handle(self, exc, stats, where):
        """Count `exc`; True when the client should carry on (reconnecting)."""
        kind = error_kind(exc)
        if self._fault.is_set() and is_connection_error(exc):
            stats.expected_error(f"after fault: {kind}", exc)
            return self.reconnect and not self._done()
        if kind in self.expected:
            stats.expected_error(kind, exc)
            return not self._done()
        stats.unexpected.append(f"{where}: {kind}: {str(exc).strip()[:300]}")
        return False


class _Session:
    """One client's connection: transactions until the load ends."""

    # operation → weight
    DIRECT_MIX = {"insert": 35, "select": 30, "update": 25, "refresh": 10}
    POOLED_MIX = {"insert": 35, "select": 30, "update": 25, "anonymous": 10}

    def __init__(self, load, client, conn, rng, ledger, stats):
        self.load, self.client, self.conn, self.rng = load, client, conn, rng
        self.ledger, self.stats = ledger, stats
        self.sub = client.sub
        self.token = None
        self.pooled = client.mode == "pooled"
        mix = self.POOLED_MIX if self.pooled else self.DIRECT_MIX
        self.ops, self.weights = list(mix), list(mix.values())
        self.uses = 0

    def run(self):
        if not self.pooled:
            self.transaction(self.refresh)
        while not self.load._done():
            op = self.rng.choices(self.ops, self.weights)[0]
            if op == "anonymous":
                self.transaction(self.anonymous, session=False)
            else:
                self.transaction(getattr(self, op))

    def fresh_token(self):
        return tokens.mint(self.client.key, sub=self.sub, ttl=600)

    def transaction(self, body, session=True):
        """Run `body(cur)` in one transaction and record its (inserted, updated) ids in the
        ledger once COMMIT acknowledges them; errors are raised for _run_client to judge."""
        import psycopg

        conn = self.conn
        try:
            with conn.cursor() as cur:
                if self.pooled and session:
                    self.uses += 1
                    if self.token is None or self.uses % 10 == 0:
                        self.token = self.fresh_token()  # a refresh through the pooler
                        self.stats.operations["refresh"] += 1
                    cur.execute("select auth.jwt_session_init(%s, true)", (self.token,))
                written = body(cur) or ((), ())
        except psycopg.Error as exc:
            if conn.closed or conn.broken:
                raise
            conn.rollback()
            if error_kind(exc) in self.load.expected:
                self.stats.expected_error(error_kind(exc), exc)
                return
            raise
        inserted, updated = written
        try:
            conn.commit()
        except psycopg.Error:
            self.ledger.in_doubt(inserted, updated)
            raise
        self.ledger.committed(inserted, updated)
        self.load.pool.add(inserted)
        self.stats.transactions += 1

    def check(self, what, rows, owner_index=1):
        self.stats.rows_checked += len(rows)
        for row in foreign_rows(self.sub, rows, owner_index):
            self.stats.violations.append(f"{self.sub} ({self.client.mode}) {what}: got {row!r}")

    def refresh(self, cur):
        self.token = self.fresh_token()
        cur.execute("select auth.jwt_session_init(%s)", (self.token,))
        cur.execute("select 0, auth.user_id()")
        self.check("auth.user_id() after refresh", cur.fetchall())
        self.stats.operations["refresh"] += 1

    def insert(self, cur):
        count = self.rng.randint(1, 3)
        cur.execute(f"insert into {TABLE} (note) select 'n' || g from generate_series(1, %s) g "
                    "returning id, owner", (count,))
        rows = cur.fetchall()
        self.check("insert returning", rows)
        if len(rows) != count:
            self.stats.violations.append(f"{self.sub}: inserted {count} rows, got {len(rows)} back")
        self.stats.operations["insert"] += 1
        return [row[0] for row in rows], ()

    def _targets(self):
        own = self.ledger.own_ids()
        mine = self.rng.sample(own, min(3, len(own)))
        return mine, self.load.pool.sample(self.rng, 5)

    def select(self, cur):
        if self.rng.random() < 0.5:
            cur.execute(f"select id, owner from {TABLE} order by id desc limit 50")
            self.check("select latest", cur.fetchall())
        else:
            mine, others = self._targets()
            wanted = set(mine) | set(others)
            cur.execute(f"select id, owner from {TABLE} where id = any(%s)", (list(wanted),))
            rows = cur.fetchall()
            self.check("select by id", rows)
            missing = set(mine) - {row[0] for row in rows}
            if missing:
                self.stats.violations.append(f"{self.sub}: own rows {sorted(missing)} not visible")
        self.stats.operations["select"] += 1

    def update(self, cur):
        mine, others = self._targets()
        wanted = set(mine) | set(others)
        cur.execute(f"update {TABLE} set n = n + 1 where id = any(%s) returning id, owner",
                    (list(wanted),))
        rows = cur.fetchall()
        self.check("update returning", rows)
        got = {row[0] for row in rows}
        expected = set(mine) | (set(others) & set(self.ledger.acked))
        if got != expected:
            self.stats.violations.append(f"{self.sub}: update touched {sorted(got)}, expected "
                                         f"{sorted(expected)}")
        self.stats.operations["update"] += 1
        return (), sorted(got & expected)

    def anonymous(self, cur):
        """A pooled transaction without a session: no identity, no rows."""
        cur.execute(f"select auth.user_id(), (select count(*) from {TABLE})")
        user, count = cur.fetchone()
        self.stats.rows_checked += 1
        if user is not None or count != 0:
            self.stats.violations.append(f"{self.sub}: without a session saw user {user!r} "
                                         f"and {count} rows")
        self.stats.operations["anonymous"] += 1


def create_schema(conn):
    """The stress table, its policies and the two login roles (as a superuser)."""
    conn.execute(SCHEMA_SQL)


def read_table(conn):
    """{id: (owner, n)} of every row, for durability_problems (a superuser bypasses RLS)."""
    rows = conn.execute(f"select id, owner, n from {TABLE}").fetchall()
    return {row_id: (owner, n) for row_id, owner, n in rows}


def summary(load, stats, label):
    """A JSON-ready summary of a finished run."""
    elapsed = load.elapsed
    return {
        "label": label,
        "clients": len(load.clients),
        "clients_by_mode": dict(Counter(c.mode for c in load.clients)),
        "transactions_by_mode": load.transactions_by_mode(),
        "seconds": round(elapsed, 2),
        "transactions": stats.transactions,
        "tps": round(stats.transactions / elapsed, 1) if elapsed else 0.0,
        "operations": dict(stats.operations),
        "rows_checked": stats.rows_checked,
        "violations": len(stats.violations),
        "rows_acknowledged": load.rows_acknowledged(),
        "expected_errors": dict(stats.errors),
        "unexpected_errors": len(stats.unexpected),
    }
