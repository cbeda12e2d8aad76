"""Fixtures of the stress tests: the load scale, the pooler image, and per-test docker
resources (containers, a private network, volumes) that are always removed, containers
first, with their logs kept under tests/logs/ when the test failed."""

import json
import os
import uuid

import pytest

from builder import containers, matrix
from tests.support import LOG_DIR, load

LABELS = {"io.pg-session-jwt.test": "1"}


@pytest.fixture(scope="session")
def stress_scale():
    """(clients, seconds) from PG_SESSION_JWT_STRESS_SCALE: ci = 16 x 10 s, full = 64 x 60 s."""
    return load.scale(os.environ)


@pytest.fixture(scope="session")
def pooler_image(docker_client):
    """The dev stack's pgbouncer image (compose/pooler), built the way `make run` builds it."""
    import yaml

    from builder import base_image
    from devtools import devstack

    mx = matrix.load()
    devstack.build_helpers(docker_client, devstack.Settings.from_env({}, mx),
                           base_image.ensure(docker_client, mx.default.suite, mx.mirror))
    return yaml.safe_load(devstack.COMPOSE_FILE.read_text())["services"]["pooler"]["image"]


class Resources:
    """What one test started; `cleanup()` removes containers, then networks and volumes."""

    def __init__(self, client):
        self.client = client
        self.containers, self.networks, self.volumes = [], [], []

    def start(self, image, **kwargs):
        pg = containers.start(self.client, image, **kwargs)
        self.containers.append(pg)
        return pg

    def pooler(self, image, db, network, **kwargs):
        pooler = containers.start_pooler(self.client, image, db, network, **kwargs)
        self.containers.append(pooler)
        return pooler

    def network(self):
        net = self.client.networks.create(f"pgjwt-{uuid.uuid4().hex[:10]}", driver="bridge",
                                          labels=LABELS)
        self.networks.append(net)
        return net.name

    def volume(self, image):
        """A new named volume, as a mount at the VOLUME `image` declares."""
        vol = self.client.volumes.create(f"pgjwt-{uuid.uuid4().hex[:10]}", labels=LABELS)
        self.volumes.append(vol)
        return {vol.name: {"bind": containers.data_layout(self.client, image)[0], "mode": "rw"}}

    def cleanup(self, keep_logs):
        for pg in self.containers:
            containers.stop(pg, log_dir=LOG_DIR if keep_logs else None)
        for thing in self.networks + self.volumes:
            try:
                thing.remove()
            except Exception as exc:  # report, but let the other removals happen
                print(f"could not remove {thing.name}: {exc}")


@pytest.fixture
def resources(docker_client, request):
    res = Resources(docker_client)
    failed_before = request.session.testsfailed
    yield res
    res.cleanup(keep_logs=request.session.testsfailed > failed_before)


@pytest.fixture
def write_result(request):
    """Print a run's summary and keep it as tests/logs/stress-<test>.json."""
    def _write(summary):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        name = request.node.name.replace("[", "-").replace("]", "")
        path = LOG_DIR / f"stress-{name}.json"
        path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        print(f"\n{name}: {json.dumps(summary, sort_keys=True)}")
        return path
    return _write

