"""A real container registry for the push tests: Debian's docker-registry in a container built
FROM the local Debian base (tests/support/registry/Dockerfile), published on a random
127.0.0.1 port, so the host needs no registry package. The `registry` fixture is in
tests/builder/test_push_registry.py.
"""

import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

from builder import base_image, docker_build, matrix
from runtime.errors import UserError

CONTEXT = Path(__file__).resolve().parent / "registry"
IMAGE = "pg-session-jwt-test-registry:latest"
SCOPE = "registry"


def build(client):
    """Build IMAGE from the default major's Debian base (bootstrapped if need be); quick when
    cached."""
    mx = matrix.load()
    base = base_image.ensure(client, mx.default.suite, mx.mirror)
    built, replaced = docker_build.build(client, context=CONTEXT, tag=IMAGE, scope=SCOPE, what=IMAGE,
                                         buildargs={"BASE_IMAGE": base})
    docker_build.tag_and_prune(client, built, [IMAGE], [replaced])
    return IMAGE


@contextmanager
def running(client, timeout=30):
    """host:port of a registry container of our own, answering /v2/; always removed."""
    container = client.containers.run(
        build(client), detach=True, ports={"5000/tcp": ("127.0.0.1", None)},
        name=f"pgjwt-registry-{uuid.uuid4().hex[:10]}", labels={"io.pg-session-jwt.test": "1"})
    try:
        deadline = time.monotonic() + timeout
        while True:
            container.reload()
            bound = container.attrs["NetworkSettings"]["Ports"].get("5000/tcp")
            if bound:
                address = f"127.0.0.1:{bound[0]['HostPort']}"
                try:
                    with urllib.request.urlopen(f"http://{address}/v2/", timeout=2):
                        break
                except OSError:
                    pass
            if container.status in ("exited", "dead") or time.monotonic() > deadline:
                raise UserError(f"the registry container did not answer within {timeout}s "
                                f"({container.status}):\n"
                                + container.logs().decode(errors="replace")[-2000:])
            time.sleep(0.2)
        yield address
    finally:
        container.remove(force=True, v=True)
