"""The client recipes of examples/, each run as a user runs it, against the dev stack of
every major: directly and through its pgbouncer (transaction mode, one server connection,
so consecutive requests share a backend).

Every recipe checks itself that alice's and bob's rows were kept apart and that a request
without a token saw nothing; this module also reads what it printed, and the server's
statement log (log_statement = all for `app`, parameters not logged) shows whether the
token was in the SQL text: never, except for the recipe that says its driver binds on the
client. One stack per major for the whole module (tests/support/stack.py).
"""

import json
import os
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from builder.matrix import ROOT
from devtools import devstack

pytestmark = [pytest.mark.container, pytest.mark.slow]

EXAMPLES = ROOT / "examples"
RECIPES = sorted(path.name for path in EXAMPLES.glob("*.py"))
SERVICES = ("db", "pooler")


def admin(stack):
    return psycopg.connect(stack.settings.url("db", "postgres", stack.settings.postgres_password),
                           autocommit=True, connect_timeout=10)


@pytest.fixture(scope="module")
def logged_stack(stack):
    """The stack, with every statement of `app` in the server log (parameters left out, so
    a token appears there only if a driver wrote it into the SQL text)."""
    with admin(stack) as conn:
        conn.execute("alter role app set log_statement = 'all'")
        conn.execute("alter role app set log_parameter_max_length = 0")
        # Server connections made before (pgbouncer's) would keep the old settings.
        conn.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                     "where usename = 'app'")
    return stack


def server_log(stack):
    """The db service's log up to now: a marker statement is written, then waited for."""
    marker = f"recipe-marker-{uuid.uuid4().hex}"
    with stack.connect("db", autocommit=True) as conn:
        conn.execute(f"select '{marker}'")
    command = devstack.compose_command(stack.compose, stack.settings.project, "logs",
                                       "--no-color", "db")
    deadline = time.monotonic() + 15
    while True:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        text = result.stdout + result.stderr
        if marker in text or time.monotonic() > deadline:
            assert marker in text, "the server log did not show the marker statement"
            return text
        time.sleep(0.2)


def run_recipe(stack, name, service, alice, bob):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": stack.settings.url(service),
           "ALICE_TOKEN": alice, "BOB_TOKEN": bob}
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                            text=True, timeout=180, env=env, cwd=ROOT)
    assert result.returncode == 0, f"{name} via {service}:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def flattened(value):
    if isinstance(value, dict):
        return [item for inner in value.values() for item in flattened(inner)]
    if isinstance(value, list):
        return [item for inner in value for item in flattened(inner)]
    return [value]


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_keeps_users_apart_and_the_token_out_of_the_sql_text(logged_stack, name,
                                                                      service):
    alice, bob = logged_stack.token("alice"), logged_stack.token("bob")
    out = run_recipe(logged_stack, name, service, alice, bob)
    saw = {"alice": set(), "bob": set(), "anonymous": set()}
    for key, value in out.items():
        for who in saw:
            if key.startswith(who) or key.startswith(("sync_" + who, "async_" + who,
                                                      "psycopg3_" + who)):
                saw[who] |= {v for v in flattened(value) if v in ("alice", "bob")}
    assert saw == {"alice": {"alice"}, "bob": {"bob"}, "anonymous": set()}, out
    log = server_log(logged_stack)
    assert "jwt_session_init" in log
    binds_on_client = out.get("token_in_sql_text", False)
    signature = alice.rsplit(".", 1)[1]
    assert (signature in log) == binds_on_client, (
        f"{name}: the token {'is not' if binds_on_client else 'is'} in the server's statement log")


def test_every_recipe_is_tested_and_documented():
    readme = (ROOT / "README.md").read_text()
    assert RECIPES, f"no recipes in {EXAMPLES}"
    for name in RECIPES:
        assert f"examples/{name}" in readme, f"README's 'From your application' misses {name}"


def test_the_drivers_the_recipes_use_are_pinned():
    pinned = {line.split("==")[0].split("[")[0].lower()
              for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    for module, package in (("asyncpg", "asyncpg"), ("sqlalchemy", "sqlalchemy"),
                            ("django", "django"), ("psycopg2", "psycopg2-binary"),
                            ("psycopg_pool", "psycopg-pool"), ("greenlet", "greenlet")):
        assert package in pinned, f"requirements-dev.txt: pin {package} (examples import {module})"
