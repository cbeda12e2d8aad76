"""Fixtures of the extension's container tests that talk to an identity provider."""

import uuid

import pytest

from tests.support.issuer import Issuer


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
