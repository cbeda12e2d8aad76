"""`make push` (builder/push.py) against a real registry: Debian's docker-registry (the
distribution project) in a container built from the local Debian base, published on a random
127.0.0.1 port (tests/support/registry.py). Every tag of the major is pushed, pulled back, and
the digests compared with the registry's own answer; failures (registry down, image not built)
name the fix.
"""

import urllib.error
import urllib.request

import pytest

from builder import matrix, push
from tests.support.ports import free_ports
from tests.support.registry import running

pytestmark = [pytest.mark.container, pytest.mark.slow]

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])


@pytest.fixture(scope="session")
def registry(docker_client):
    """host:port of a registry container of our own (tests/support/registry.py), removed at
    session end."""
    with running(docker_client) as address:
        yield address


def registry_digest(registry, name, tag):
    """The digest the registry itself reports for name:tag."""
    request = urllib.request.Request(f"http://{registry}/v2/{name}/manifests/{tag}",
                                     method="HEAD", headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.headers["Docker-Content-Digest"]


def test_every_tag_is_pushed_and_pulls_back_with_the_same_digest(docker_client, image, pg_major,
                                                                   registry):
    repo = image.rpartition(":")[0]
    local = docker_client.images.get(image)
    tags = sorted(t for t in local.tags if t.rpartition(":")[0] == repo)
    assert f"{repo}:{pg_major}" in tags and len(tags) >= 2  # <major> and <major>.<minor>
    prefix = f"{registry}/team"
    pushed = push.push(docker_client, [matrix.load().entry(pg_major)], repo, prefix)
    assert [ref for ref, _ in pushed] == [f"{prefix}/{t}" for t in tags]
    assert len({digest for _, digest in pushed}) == 1  # one image, one manifest
    # The registry-qualified tags made for the push are gone again.
    assert not any(t.startswith(registry) for t in docker_client.images.get(image).tags)
    for ref, digest in pushed:
        name, _, tag = ref[len(registry) + 1:].rpartition(":")
        assert registry_digest(registry, name, tag) == digest
        pulled = docker_client.images.pull(ref)
        try:
            assert pulled.id == local.id
            assert f"{registry}/{name}@{digest}" in pulled.attrs["RepoDigests"]
        finally:
            docker_client.images.remove(ref, noprune=True)


def test_unreachable_registry_is_named_before_anything_is_pushed(image, pg_major, capsys):
    port, = free_ports(1)
    code = push.main(["--registry", f"127.0.0.1:{port}", "--pg", str(pg_major),
                      "--repo", image.rpartition(":")[0]])
    assert code == 2
    err = capsys.readouterr().err
    assert f"registry 127.0.0.1:{port} is unreachable" in err and "REGISTRY=" in err


def test_image_not_built_says_how_to_build_it(pg_major, registry, capsys):
    code = push.main(["--registry", registry, "--pg", str(pg_major),
                      "--repo", "pgjwt-never-built"])
    assert code == 2
    assert f"pgjwt-never-built:{pg_major} is not built: run `make image PG={pg_major}`" \
        in capsys.readouterr().err


def test_registry_rejects_nothing_silently(registry):
    """The fixture's registry is real: an unknown manifest is a 404, not an empty answer."""
    with pytest.raises(urllib.error.HTTPError) as info:
        registry_digest(registry, "team/none", "1")
    info.value.close()
    assert info.value.code == 404
