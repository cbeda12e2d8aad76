"""Faults: SIGKILL and `docker stop` in the middle of the load, and a data
directory that fills up. Clients log every commit they saw acknowledged (tests/support/load.py's
ledgers); afterwards every acknowledged row and increment must be in the table.

The load here is direct connections only (session-scoped identities, refreshes with jti on,
inserts, updates, selects): these are faults of the server and its storage, and a restart
on the same volume is a new container, which a pooler would have to re-resolve; the pooled
path is covered by test_load.py.

The full-disk test puts the data directory on a small tmpfs and WAL outside it
(POSTGRES_INITDB_WALDIR): when WAL itself cannot be written PostgreSQL PANICs by design
(a crash, not an error a client can act on), so the case a client can be told about is
the one where the tables' volume fills.
"""

import time

import psycopg
import pytest

from builder import containers
from devtools.jwt import mint
from tests.support import load

pytestmark = [pytest.mark.stress, pytest.mark.container, pytest.mark.slow,
              pytest.mark.destructive]

FAULT_CLIENTS = 16  # the CI size; more adds no new interleavings on two cores
WALDIR = "/var/lib/postgresql/wal"


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_with_load(resources, image, clients, **kwargs):
    pg = resources.start(image, environment={"PG_SESSION_JWT_JWK": load.jwks(clients),
                                             **kwargs.pop("environment", {})}, **kwargs)
    with pg.connect() as conn:
        load.create_schema(conn)
    load.connect_clients(clients, pg.dsn(load.DIRECT_ROLE, load.ROLE_PASSWORD))
    return pg


def check_after_restart(pg, run, client):
    """Nothing acknowledged lost or invented; a new session of `client` sees its rows only."""
    with pg.connect() as conn:
        found = load.read_table(conn)
    problems = load.durability_problems(run.ledgers.values(), found)
    assert problems == [], problems[:20]
    with psycopg.connect(pg.dsn(load.DIRECT_ROLE, load.ROLE_PASSWORD), autocommit=True) as conn:
        conn.execute("select auth.jwt_session_init(%s)", (mint(client.key, sub=client.sub),))
        assert conn.execute("select auth.user_id()").fetchone()[0] == client.sub
        owners = {row[0] for row in conn.execute(f"select owner from {load.TABLE}")}
        assert owners <= {client.sub}
        row = conn.execute(f"insert into {load.TABLE} (note) values ('after') returning owner")
        assert row.fetchone()[0] == client.sub
    return found


def interrupt_load(resources, image, stress_scale, fault):
    """Start the load on a volume, let it commit, `fault(container)` it, restart on the
    volume; returns (run, stats, old container, new container)."""
    _, seconds = stress_scale
    clients = load.make_clients(FAULT_CLIENTS)
    volume = resources.volume(image)
    pg = start_with_load(resources, image, clients, volumes=volume)
    run = load.Load(clients, seconds=600).start()
    wait_for(lambda: run.acknowledged() >= 200 and time.monotonic() - run.started >= seconds / 2,
             timeout=300, what="200 acknowledged commits")
    run.fault_injected()
    fault(pg.container)
    stats = run.join(timeout=60)
    run.stop()
    assert stats.violations == [], stats.violations[:20]
    assert stats.unexpected == [], stats.unexpected[:20]
    restarted = resources.start(image, environment={"PG_SESSION_JWT_JWK": load.jwks(clients)},
                                volumes=volume)
    check_after_restart(restarted, run, clients[0])
    return run, stats, pg, restarted


def test_sigkill_mid_load_loses_nothing_acknowledged(pg_major, image, stress_scale, resources,
                                                     write_result):
    run, stats, old, new = interrupt_load(resources, image, stress_scale,
                                          lambda c: c.kill(signal="SIGKILL"))
    assert old.reload()["State"]["ExitCode"] == 137
    log = new.logs()
    assert "database system was interrupted" in log or "not properly shut down" in log, log[-3000:]
    assert "redo done" in log or "redo is not required" in log, log[-3000:]
    write_result(load.summary(run, stats, f"sigkill pg{pg_major}"))


def test_docker_stop_mid_load_is_a_clean_shutdown(pg_major, image, stress_scale, resources,
                                                  write_result):
    run, stats, old, new = interrupt_load(resources, image, stress_scale,
                                          lambda c: c.stop(timeout=30))
    state = old.reload()["State"]
    assert state["ExitCode"] == 0, (state, old.logs()[-3000:])
    assert not state.get("OOMKilled")
    old_log = old.logs()
    assert "fast shutdown request" in old_log and "database system is shut down" in old_log, \
        old_log[-3000:]
    new_log = new.logs()
    assert "database system was shut down at" in new_log, new_log[-3000:]
    assert "automatic recovery in progress" not in new_log, new_log[-3000:]
    write_result(load.summary(run, stats, f"docker-stop pg{pg_major}"))


# bt_index_check raises on corruption; heapallindexed (true) also checks every heap tuple
# has its index entry.
INTEGRITY_SQL = """
select count(public.bt_index_check(c.oid::regclass, true))
from pg_catalog.pg_index i
join pg_catalog.pg_class c on c.oid = i.indexrelid
join pg_catalog.pg_am am on am.oid = c.relam
where am.amname = 'btree' and c.relpersistence <> 't'
"""


def integrity_problems(pg):
    """amcheck over every btree index (with heapallindexed), heap checks of the stress table
    and the catalogs, and a full scan; a list of what is wrong."""
    problems = []
    with pg.connect() as conn:
        conn.execute(INTEGRITY_SQL)  # raises on a corrupt index
        for rel in (load.TABLE, "pg_catalog.pg_class", "pg_catalog.pg_attribute",
                    "pg_catalog.pg_proc"):
            rows = conn.execute("select * from public.verify_heapam(%s::regclass)", (rel,)).fetchall()
            problems.extend(f"{rel}: {row}" for row in rows)
        conn.execute(f"select count(*), sum(n), max(length(note)) from {load.TABLE}").fetchone()
        conn.execute("select count(*) from pg_catalog.pg_class c join pg_catalog.pg_attribute a "
                     "on a.attrelid = c.oid").fetchone()
    return problems


def test_full_data_directory_is_a_clear_error_and_recovers(pg_major, image, resources,
                                                          write_result):
    clients = load.make_clients(4)
    pgdata = containers.data_layout(resources.client, image)[1]
    pg = start_with_load(resources, image, clients, environment={"POSTGRES_INITDB_WALDIR": WALDIR},
                         tmpfs={pgdata: "size=128m"})
    with pg.connect() as conn:
        conn.execute("create extension amcheck")
    run = load.Load(clients, seconds=600, expected={"53100"}).start()
    try:
        wait_for(lambda: run.rows_acknowledged() >= 100, 120, "100 acknowledged rows")
        filler = f"{pgdata}/filler"
        code, out = pg.exec(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"])
        assert code != 0 and "No space left on device" in out, out
        wait_for(lambda: run.error_count("53100") >= 10, 120, "10 disk-full errors")
        assert integrity_problems(pg) == []  # readable and consistent while full
        rows_while_full = run.rows_acknowledged()
        code, out = pg.exec(["rm", filler])
        assert code == 0, out
        wait_for(lambda: run.rows_acknowledged() >= rows_while_full + 100, 120,
                 "100 acknowledged rows after the space was freed")
    finally:
        run.stop()
    stats = run.join()
    assert stats.violations == [], stats.violations[:20]
    assert stats.unexpected == [], stats.unexpected[:20]
    assert set(stats.errors) == {"53100"}, stats.samples
    assert "No space left on device" in stats.samples["53100"], stats.samples
    with pg.connect() as conn:
        conn.execute("checkpoint")
    assert integrity_problems(pg) == []
    check_after_restart(pg, run, clients[0])  # no restart happened; the same checks apply
    log = pg.logs()
    assert "PANIC" not in log and "terminated by signal" not in log, log[-3000:]
    summary = load.summary(run, stats, f"disk-full pg{pg_major}")
    summary["disk_full_message"] = stats.samples["53100"]
    write_result(summary)

