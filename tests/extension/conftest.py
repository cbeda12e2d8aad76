"""Fixtures of the extension's tests: a fresh backend for the unit tests of `pl`, and the
identity provider the container tests talk to."""

import uuid

import pytest
from pg_session_jwt import pl
from pg_session_jwt.session import Backend

from tests.support.issuer import Issuer
from tests.support.jws import FakePlpy


@pytest.fixture(scope="session")
def key(keys):
    """The signing key most extension tests use (EdDSA, fresh per test session)."""
    return keys["EdDSA"]


@pytest.fixture
def backend(monkeypatch):
    """A new server process for `pl` (its `state`), whose connection-start settings are the
    latest FakePlpy's, in transaction 1 until the test sets `backend["xact"]` to another
    stamp (what a COMMIT or ROLLBACK does to it)."""
    monkeypatch.setattr(pl, "state", Backend())
    monkeypatch.setattr(pl, "connection_start_values",
                        lambda: FakePlpy.latest.connection_start_values())
    stamp = {"xact": 1}
    monkeypatch.setattr(pl, "transaction_stamp", lambda: stamp["xact"])
    return stamp


@pytest.fixture(scope="module")
def network(docker_client):
    """A network for this module; tests list it before start_container, so that their
    containers are removed before it is."""
    net = docker_client.networks.create(f"pgjwt-net-{uuid.uuid4().hex[:10]}",
                                        labels={"io.pg-session-jwt.test": "1"})
    yield net.name
    net.remove()


@pytest.fixture(scope="module")
def issuers(docker_client, image, network, tmp_path_factory):
    made = []

    def make(tls=True):
        issuer = Issuer(docker_client, image, network, tmp_path_factory.mktemp("issuer"), tls)
        made.append(issuer)
        return issuer

    yield make
    for issuer in made:
        issuer.remove()
