"""The dev stack's streaming replica (`make run REPLICA=1`): the `replica` compose profile
copies db with pg_basebackup, streams through a replication slot as a hot standby, and —
since the extension writes nothing — gives the same identity and the same rows through Row
Level Security for the same token as the primary. One stack per major, random host ports,
logs kept when a test failed, `down -v` always.
"""

import os
import subprocess
import time

import psycopg
import pytest

from devtools import devstack
from tests.support.stack import running_stack

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(pg_major, image, docker_client, request):
    """This module's own stack, with the replica."""
    with running_stack(pg_major, image, docker_client, request, replica=True) as started:
        yield started


def wait_replayed(stack, timeout=60):
    """Block until the standby has replayed everything the primary has written so far."""
    with stack.admin("db") as conn:
        lsn = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with stack.admin(devstack.REPLICA) as conn:
        while time.monotonic() < deadline:
            if conn.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]).fetchone()[0]:
                return
            time.sleep(0.2)
    pytest.fail(f"the replica did not replay up to {lsn} within {timeout}s")


def as_user(stack, service, token, sql):
    """Rows of `sql` run as `app` after jwt_session_init(token, true) on `service`, in one
    transaction (`app` is held to transaction-scoped sessions)."""
    with stack.connect(service) as conn, conn.transaction():
        conn.execute("select auth.jwt_session_init(%s, true)", [token])
        return conn.execute(sql).fetchall()


def test_printed_text_gives_the_replicas_connection_string(stack):
    assert f"  replica: {stack.settings.url(devstack.REPLICA)}" in stack.printed


def test_replica_is_a_hot_standby_streaming_through_a_slot(stack):
    with stack.admin("db") as conn:
        assert conn.execute("select slot_name, active from pg_replication_slots").fetchall() \
            == [("replica", True)]
        assert conn.execute("select state from pg_stat_replication").fetchall() == [("streaming",)]
    with stack.admin(devstack.REPLICA) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)
        # the same server-wide key as db, from the same environment
        assert conn.execute("select count(*) from pg_extension "
                            "where extname = 'pg_session_jwt'").fetchone() == (1,)


def test_same_token_same_identity_and_rows_on_primary_and_standby(stack):
    for sub, titles in (("alice", ["a1", "a2"]), ("bob", ["b1"])):
        with stack.connect("db") as conn, conn.transaction():
            conn.execute("select auth.jwt_session_init(%s, true)", [stack.token(sub)])
            for title in titles:
                conn.execute("insert into todos (title) values (%s)", [title])
    wait_replayed(stack)
    sql = "select auth.user_id(), owner, title from todos order by title"
    for sub, titles in (("alice", ["a1", "a2"]), ("bob", ["b1"])):
        token = stack.token(sub)
        primary = as_user(stack, "db", token, sql)
        standby = as_user(stack, devstack.REPLICA, token, sql)
        assert primary == standby == [(sub, sub, t) for t in titles]
    # Without a session the standby shows nothing, as the primary does.
    with stack.connect(devstack.REPLICA, autocommit=True) as conn:
        assert conn.execute("select count(*) from todos").fetchone() == (0,)


def test_standby_refuses_writes_and_forged_tokens(stack):
    token = stack.token("mallory")
    with stack.connect(devstack.REPLICA) as conn, conn.transaction():
        conn.execute("select auth.jwt_session_init(%s, true)", [token])
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("insert into todos (title) values ('x')")
    header, payload, signature = stack.token("alice").split(".")
    forged = ".".join([header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA"
                                                           else "BBBB")])
    with stack.connect(devstack.REPLICA, autocommit=True) as conn:
        with pytest.raises(psycopg.Error):
            conn.execute("select auth.jwt_session_init(%s, true)", [forged])


@pytest.mark.destructive
def test_a_new_replica_takes_over_the_slot_and_catches_up(stack, docker_client):
    """The replica's container and volume removed, db kept (its slot stays): the next start
    copies db again through the same slot, and streams. Runs last: it replaces the replica."""
    s = stack.settings
    remove = devstack.compose_command(stack.compose, s.project, "rm", "-s", "-f", devstack.REPLICA)
    subprocess.run(remove, env={**os.environ, **s.compose_env(all_profiles=True)}, check=True,
                   capture_output=True)
    docker_client.volumes.get(f"{s.project}_replica-data").remove()
    with stack.admin("db") as conn:
        assert conn.execute("select active from pg_replication_slots "
                            "where slot_name = 'replica'").fetchone() == (False,)
    devstack.run_compose(stack.compose, s, "up", "-d", "--no-build", devstack.REPLICA)
    devstack.wait_healthy(docker_client, s, timeout=120)
    wait_replayed(stack)
    with stack.admin("db") as conn:
        assert conn.execute("select slot_name, active from pg_replication_slots").fetchall() \
            == [("replica", True)]
    token = stack.token("alice")
    sql = "select owner, title from todos order by title"
    assert as_user(stack, devstack.REPLICA, token, sql) == [("alice", "a1"), ("alice", "a2")]
