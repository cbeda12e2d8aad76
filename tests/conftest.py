"""Test harness: the matrix from images/versions.yaml, containers per major, keys per session.

Tests that take a `pg_major` (directly or through `pg`, `host`, `image`) run once per
major in the matrix, narrowed with `--pg-major 17`. `pg` is one running container per
major per module: random host port, real readiness, log kept under tests/logs/ when a
test in the module failed, always removed.
"""

import pytest

from builder import containers, matrix
from devtools.jwt import ALGORITHMS, generate_key
from tests.support import LOG_DIR


def pytest_addoption(parser):
    parser.addoption("--pg-major", action="append", default=[], metavar="MAJOR",
                     help="run container tests only for this major (repeatable)")
    parser.addoption("--image-repo", default=matrix.DEFAULT_REPO,
                     help="repository of the images under test (default pg-session-jwt)")


def selected_majors(config):
    return [entry.major for entry in matrix.load().select(config.getoption("--pg-major"))]


def pytest_generate_tests(metafunc):
    if "pg_major" in metafunc.fixturenames:
        majors = selected_majors(metafunc.config)
        metafunc.parametrize("pg_major", majors, ids=[f"pg{m}" for m in majors], scope="module")


@pytest.fixture(scope="session")
def docker_client():
    from builder.docker_client import connect

    return connect()


@pytest.fixture(scope="module")
def image(pg_major, docker_client, request):
    """The tag of the image under test for this major; it must have been built."""
    import docker

    tag = f"{request.config.getoption('--image-repo')}:{pg_major}"
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {tag} is missing: build it with `make image PG={pg_major}`")
    return tag


@pytest.fixture(scope="module")
def start_container(docker_client, request):
    """Start containers for this module (keyword arguments of builder.containers.start);
    each is removed at module end, its log kept when a test in the module failed."""
    started = []
    failed_before = request.session.testsfailed

    def _start(image, **kwargs):
        pg = containers.start(docker_client, image, **kwargs)
        started.append(pg)
        return pg

    yield _start
    failed = request.session.testsfailed > failed_before
    for pg in started:
        containers.stop(pg, log_dir=LOG_DIR if failed else None)


@pytest.fixture(scope="module")
def pg(image, start_container):
    """One running container of the image under test for this module."""
    return start_container(image)


@pytest.fixture(scope="module")
def host(pg):
    """A testinfra host inside the running container."""
    import testinfra

    return testinfra.get_host(f"docker://{pg.id}")


@pytest.fixture(scope="session")
def keys():
    """Fresh signing keys for this test session, by algorithm."""
    return {alg: generate_key(alg) for alg in ("EdDSA", "ES256", "RS256")}


@pytest.fixture(scope="session")
def signing_keys():
    """A fresh private JWK for every algorithm the extension verifies."""
    return {alg: generate_key(alg) for alg in ALGORITHMS}


@pytest.fixture(scope="module")
def stack(pg_major, image, docker_client, request):
    """The dev stack of the image under test, one per major per module (tests/support/stack.py)."""
    from tests.support.stack import running_stack

    with running_stack(pg_major, image, docker_client, request) as started:
        yield started
