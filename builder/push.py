"""Push the built images to a container registry: what `make push REGISTRY=...` does.

    python -m builder.push --registry host:port[/path] [--pg 17 18] [--repo pg-session-jwt]

For every selected major (all in images/versions.yaml by default) it pushes every tag the
build gave that image — `<major>`, `<major>.<minor>` and, for the default major, `latest` —
as `<registry>/<repo>:<tag>`, and prints each pushed reference with its digest. The
registry-qualified tags it adds locally for the push are removed again afterwards.
"""

import argparse
import re
import socket
import sys

from builder import matrix
from builder.docker_client import connect
from builder.progress import say
from runtime.errors import UserError, failed

# host[:port][/path], as Docker reads a reference's registry part plus a repository path.
REGISTRY = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>\d{1,5}))?"
                      r"(?P<path>(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)$")


def parse_registry(text):
    """(host, port or None, "host:port/path" prefix) of a REGISTRY value, or a UserError."""
    text = (text or "").strip().rstrip("/")
    match = REGISTRY.match(text)
    if not text or not match:
        raise UserError(f"REGISTRY={text!r}: expected host:port[/path], e.g. "
                        "make push REGISTRY=registry.example.com:5000/team")
    host, port = match["host"], match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise UserError(f"REGISTRY={text!r}: port {port} is not between 1 and 65535")
    if "." not in host and ":" not in host and port is None and host != "localhost":
        # Docker would read a bare word as a Docker Hub user, not as a registry.
        raise UserError(f"REGISTRY={text!r}: {host!r} is not a registry host to Docker; give "
                        "a host with a dot or a port (registry.example.com, myhost:5000)")
    return host, (int(port) if port else None), text


def check_reachable(host, port, timeout=5):
    """Fail early, naming the address, when nothing listens at the registry's address."""
    port = port or 443
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout):
            return
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise UserError(f"registry {host}:{port} is unreachable ({reason}): start the registry or "
                    "correct REGISTRY=host:port[/path]")


def local_tags(client, entry, repo):
    """Every `<repo>:<tag>` of the built image of `entry`, or a UserError saying how to build it."""
    import docker

    try:
        image = client.images.get(entry.tag(repo))
    except docker.errors.ImageNotFound:
        raise UserError(f"{entry.tag(repo)} is not built: run `make image PG={entry.major}` "
                        "(or `make images`) first") from None
    tags = sorted(t for t in image.tags if t.rpartition(":")[0] == repo)
    return image, tags


def push_one(client, image, local_tag, prefix):
    """Tag `local_tag` as `<prefix>/<local_tag>`, push it, untag it; returns (reference, digest)."""
    name, _, tag = local_tag.rpartition(":")
    remote = f"{prefix}/{name}"
    image.tag(remote, tag)
    try:
        digest = None
        for chunk in client.images.push(remote, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise UserError(f"pushing {remote}:{tag} failed: {chunk['error'].strip()}")
            aux = chunk.get("aux") or {}
            digest = aux.get("Digest", digest)
        if digest is None:
            raise UserError(f"pushing {remote}:{tag}: the registry reported no digest")
        return f"{remote}:{tag}", digest
    finally:
        client.images.remove(f"{remote}:{tag}", noprune=True)


def push(client, entries, repo, registry):
    """Push every tag of every entry; returns [(reference, digest)] in push order."""
    host, port, prefix = parse_registry(registry)
    found = [(entry, *local_tags(client, entry, repo)) for entry in entries]
    check_reachable(host, port)
    pushed = []
    for entry, image, tags in found:
        for local_tag in tags:
            say(f"pg{entry.major}", f"pushing {local_tag} to {prefix}")
            pushed.append(push_one(client, image, local_tag, prefix))
    return pushed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m builder.push", description=__doc__.split("\n")[0])
    parser.add_argument("--registry", required=True, metavar="HOST:PORT[/PATH]",
                        help="registry (and optional repository path) to push to")
    parser.add_argument("--pg", nargs="*", default=[], metavar="MAJOR",
                        help="majors to push (default: all in images/versions.yaml)")
    parser.add_argument("--repo", default=matrix.DEFAULT_REPO, help="local image repository name")
    args = parser.parse_args(argv)
    try:
        parse_registry(args.registry)  # before touching Docker: a typo needs no daemon
        entries = matrix.load().select(args.pg)
        pushed = push(connect(), entries, args.repo, args.registry)
    except UserError as exc:
        return failed(exc)
    for reference, digest in pushed:
        print(f"{reference}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
