"""The dev stack in tests: one per major per module, as `make run` starts it.

Each stack gets its own compose project name and random host ports and is started by
devtools/devstack.py's `up` (the code behind `make run`), with pgbouncer held to one server
connection so that consecutive transactions share a backend. The compose logs are kept under
tests/logs/ when a test failed; `down -v` always runs. The `stack` fixture (tests/conftest.py)
yields a `Stack`.
"""

import io
import subprocess
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from builder import matrix
from devtools import devstack
from tests.support import LOG_DIR
from tests.support.ports import free_ports


@dataclass
class Stack:
    settings: devstack.Settings
    compose: list
    printed: str

    def token(self, sub):
        """A fresh token from the stack's issuer (its jti is newer than any before it)."""
        with urllib.request.urlopen(self.settings.tokens_url(f"/token?sub={sub}"),
                                    timeout=10) as resp:
            return resp.read().decode().strip()

    def admin(self, service="db"):
        """An autocommit connection to `service` as the superuser postgres."""
        s = self.settings
        return psycopg.connect(s.url(service, "postgres", s.postgres_password), autocommit=True,
                               connect_timeout=10)

    def connect(self, service, **kwargs):
        """A psycopg connection as `app`; prepare_threshold=None: no server-side prepared
        statements, which a transaction pooler cannot keep per client."""
        return psycopg.connect(self.settings.url(service), connect_timeout=10,
                               prepare_threshold=None, **kwargs)


@contextmanager
def running_stack(pg_major, image, docker_client, request, replica=False, ha=False,
                  pool_size=1):
    """A started dev stack of `image` (a Stack), removed on exit; `replica` adds the standby,
    `ha` makes it the Patroni stack."""
    ports = dict(zip((var for var, _ in devstack.PORTS.values()),
                     map(str, free_ports(len(devstack.PORTS))), strict=True))
    env = {"PG_MAJOR": str(pg_major), "PGJWT_PROJECT": f"pgjwt-test-{uuid.uuid4().hex[:10]}",
           **ports, "PGJWT_POOL_SIZE": str(pool_size),
           "PGJWT_IMAGE_REPO": image.rpartition(":")[0]}
    mx = matrix.load()
    settings = devstack.Settings.from_env(env, mx, replica=replica, ha=ha)
    compose = devstack.detect_compose()
    failed_before = request.session.testsfailed
    started = False
    try:
        printed = devstack.up(settings, mx, docker_client, compose, out=io.StringIO())
        started = True
        yield Stack(settings, compose, printed)
    finally:
        if not started or request.session.testsfailed > failed_before:
            save_logs(settings, compose)
        devstack.down(settings, compose)


def save_logs(settings, compose):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(devstack.compose_command(compose, settings.project, "logs",
                                                     "--no-color"),
                            capture_output=True, text=True)
    (LOG_DIR / f"{settings.project}.log").write_text(result.stdout + result.stderr)
