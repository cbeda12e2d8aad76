"""The compose dev stack as `make run` starts it: tokens, RLS direct and pooled, teardown.

One stack per major per module (the `stack` fixture, tests/support/stack.py).
"""

import json
import shutil
import subprocess
import time

import psycopg
import pytest

from devtools import devstack
from devtools.jwt import pgoptions_value

pytestmark = [pytest.mark.container, pytest.mark.slow]

def owners(conn, token, local):
    """Owners of the todos visible after jwt_session_init(token, local), in one transaction."""
    with conn.transaction():
        conn.execute("select auth.jwt_session_init(%s, %s)", (token, local))
        return {row[0] for row in conn.execute("select owner from todos")}


# The printed commands use the tokens minted when the stack came up; the pooler's one
# server connection accepts no token older than the last it verified (jti must increase),
# so these run before any test that uses a fresh token through the pooler.

def run_printed(exports, command):
    result = subprocess.run(["bash", "-c", "\n".join(["set -e", *exports, command])],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"})
    return result.returncode, result.stdout, result.stderr


def test_printed_commands_work(stack):
    for tool in ("psql", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing on this host: `make test` installs it first where it "
                        "can, else says how (`python3 -m builder.prerequisites test`)")
    lines = stack.printed.splitlines()
    exports = [line for line in lines if line.startswith("export ")]
    refresh = [line.strip() for line in lines if line.startswith("  export ")]
    commands = [line for line in lines if line.startswith("psql ")]
    assert [line.split("=")[0] for line in exports] == ["export ALICE_TOKEN", "export BOB_TOKEN"]
    assert [line.split("=")[0] for line in refresh] == ["export ALICE_TOKEN", "export BOB_TOKEN"]
    assert len(commands) == 3
    outputs = []
    for command in commands:
        code, out, err = run_printed(exports, command)
        assert code == 0, f"{command}\n{err}"
        outputs.append(out)
    alice, bob, admin = outputs
    assert "alice" in alice and "bob" not in alice
    assert "bob" in bob and "alice" not in bob
    assert "alice" in admin and "bob" in admin
    # What the output says: with a JWKS URL, tokens are presented again until they expire
    # (alice's, after bob's on the same pooled server connection), and fresh ones work too.
    code, _, err = run_printed(exports, commands[0])
    assert code == 0, err
    for command in commands[:2]:
        code, out, err = run_printed(refresh, command)
        assert code == 0, f"{command}\n{err}"


def test_pgoptions_with_the_key_is_refused_by_the_pooler(stack):
    options = pgoptions_value(devstack.fetch_jwk(stack.settings))
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        stack.connect("pooler", options=options).close()


def test_printed_connection_strings_and_pgoptions_are_true(stack):
    text = stack.printed
    assert f"direct: {stack.settings.url('db')}" in text
    assert f"pooler: {stack.settings.url('pooler')}" in text
    jwk = devstack.fetch_jwk(stack.settings)
    assert f"PGOPTIONS={pgoptions_value(jwk)}" in text.replace("'", "")
    # the commented-out PGOPTIONS works for a direct connection (app: transaction-scoped) ...
    with stack.connect("db", options=pgoptions_value(jwk), autocommit=True) as conn:
        conn.execute("select auth.init()")
        with conn.transaction():
            assert owners(conn, stack.token("carol"), True) == set()
            assert conn.execute("select auth.user_id()").fetchone()[0] == "carol"
    # ... and is not needed: db fetches the issuer's keys from its JWKS URL
    with stack.connect("db", autocommit=True) as conn:
        conn.execute("select auth.init()")
        assert conn.execute("select current_setting('pg_session_jwt.jwk', true)").fetchone()[0] \
            in (None, "")
        with conn.transaction():
            assert owners(conn, stack.token("dave"), True) == set()
            assert conn.execute("select auth.user_id()").fetchone()[0] == "dave"


def test_services_are_healthy(stack, docker_client):
    states = devstack.stack_state(devstack.project_containers(docker_client,
                                                              stack.settings.project))
    assert states == {service: "healthy" for service in devstack.SERVICES}


@pytest.mark.parametrize("service", ["db", "pooler"])
def test_each_user_sees_only_their_todos(stack, service):
    with stack.connect(service, autocommit=True) as conn:
        for user in ("alice", "bob"):
            with conn.transaction():
                conn.execute("select auth.jwt_session_init(%s, true)", (stack.token(user),))
                conn.execute("insert into todos (title) values (%s)", (f"{service} {user}",))
        assert owners(conn, stack.token("alice"), True) == {"alice"}
        assert owners(conn, stack.token("bob"), True) == {"bob"}


def test_app_cannot_write_a_row_for_someone_else(stack):
    with stack.connect("pooler", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            with conn.transaction():
                conn.execute("select auth.jwt_session_init(%s, true)", (stack.token("bob"),))
                conn.execute("insert into todos (owner, title) values ('alice', 'forged')")


def test_without_a_session_app_sees_nothing(stack):
    with stack.connect("pooler", autocommit=True) as conn:
        assert conn.execute("select count(*) from todos").fetchone()[0] == 0
        assert conn.execute("select auth.user_id()").fetchone()[0] is None


def test_transaction_scoped_session_ends_at_commit_on_the_shared_backend(stack):
    with stack.connect("pooler", autocommit=True) as first, \
            stack.connect("pooler", autocommit=True) as second:
        with first.transaction():
            first.execute("select auth.jwt_session_init(%s, true)", (stack.token("alice"),))
            pid, user = first.execute("select pg_backend_pid(), auth.user_id()").fetchone()
            assert user == "alice"
        for conn in (first, second):  # the same client, then another one
            with conn.transaction():
                row = conn.execute(
                    "select pg_backend_pid(), auth.user_id(),"
                    " coalesce(current_setting('pg_session_jwt.jwt', true), ''),"
                    " (select count(*) from todos)").fetchone()
            assert row == (pid, None, "", 0), "the pool has one server connection"


def test_tokens_service_serves_jwk_and_jwks(stack):
    jwk = json.loads(devstack.fetch_jwk(stack.settings))
    jwks = json.loads(devstack.http_get(stack.settings.tokens_url("/.well-known/jwks.json")))
    assert jwk in jwks["keys"] and not any("d" in key for key in jwks["keys"])
    first, second = (stack.token("alice") for _ in range(2))
    assert first != second


def test_rotation_end_to_end_through_the_pooler(stack):
    """The printed rotation command: db follows the issuer's new key without a restart."""
    [rotate] = [line.strip() for line in stack.printed.splitlines() if "/rotate" in line]
    before = stack.token("erin")
    with stack.connect("pooler", autocommit=True) as conn:
        assert owners(conn, before, True) == set()
        time.sleep(5.5)  # the stack's PG_SESSION_JWT_JWKS_REFRESH_MIN: one fetch per 5 s
        result = subprocess.run(["bash", "-c", rotate], capture_output=True, text=True, timeout=30)
        answer = json.loads(result.stdout)
        jwks = json.loads(devstack.http_get(stack.settings.tokens_url("/.well-known/jwks.json")))
        assert [key["kid"] for key in jwks["keys"]] == [answer["kid"]]
        after = stack.token("erin")
        with conn.transaction():  # the new kid makes db refresh at once
            conn.execute("select auth.jwt_session_init(%s, true)", (after,))
            assert conn.execute("select auth.user_id()").fetchone()[0] == "erin"
        with pytest.raises(psycopg.errors.CheckViolation, match="matches no key"):
            with conn.transaction():
                conn.execute("select auth.jwt_session_init(%s, true)", (before,))


def test_down_removes_containers_volumes_and_network(stack, docker_client):
    project = stack.settings.project
    devstack.down(stack.settings, stack.compose)
    label = {"label": f"com.docker.compose.project={project}"}
    assert docker_client.containers.list(all=True, filters=label) == []
    assert docker_client.volumes.list(filters=label) == []
    assert docker_client.networks.list(filters=label) == []
    assert not [v.name for v in docker_client.volumes.list() if v.name.startswith(project)]
    assert not [n.name for n in docker_client.networks.list() if n.name.startswith(project)]
