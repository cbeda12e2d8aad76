"""Build one image per Postgres major from images/versions.yaml.

    python -m builder.build [--pg 17 18] [--repo pg-session-jwt] [--refresh-base]

For each major: make sure a Debian base exists (builder/base_image.py); build the shipped
image of images/Dockerfile and read the manifest it holds (runtime/manifest.py: package
versions and base); build it again from cache with its labels (builder.build.labels);
take the packaged server version from the manifest; tag `<repo>:<major>`,
`<repo>:<major>.<minor>` and, for the default major, `<repo>:latest`, removing the image the
tags pointed at before; print what changed since that previous build. Ends with a summary
table.
"""

import argparse
import datetime
import json
import re
import subprocess
import sys
import time

from builder import base_image, containers, docker_build, matrix
from builder.docker_client import connect
from builder.progress import say
from runtime.errors import UserError, failed
from runtime.manifest import MANIFEST_PATH

DOCKERFILE = "images/Dockerfile"
PACKAGES_LABEL = "io.pg-session-jwt.packages"
BASE_DIGEST_LABEL = "org.opencontainers.image.base.digest"
CONTROL_FILE = matrix.ROOT / "extension" / "pg_session_jwt.control"


def extension_version():
    """default_version from the control file, the only copy of the extension's version."""
    try:
        text = CONTROL_FILE.read_text()
    except OSError as exc:
        raise UserError(f"{CONTROL_FILE}: cannot read the extension's control file: {exc.strerror}") from None
    match = re.search(r"^default_version\s*=\s*'([^']+)'", text, re.M)
    if not match:
        raise UserError(f"{CONTROL_FILE}: no default_version line")
    return match[1]


def git_revision():
    """(commit, commit time) of HEAD: the image's revision and creation labels. The commit's
    time rather than the clock's, so that building the same tree again hits the cache for the
    labels too and makes no new image."""
    result = subprocess.run(["git", "log", "-1", "--format=%H %cI"], cwd=matrix.ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        return "unknown", "unknown"
    commit, when = result.stdout.split()
    created = datetime.datetime.fromisoformat(when).astimezone(datetime.UTC)
    return commit, created.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_args(entry, mx, base, base_digest):
    """Build arguments for images/Dockerfile."""
    return {
        "BASE_IMAGE": base,
        "BASE_DIGEST": base_digest,
        "PG_MAJOR": str(entry.major),
        "PACKAGES": " ".join(mx.common_packages + entry.packages),
        "PGDATA": entry.pgdata,
        "PG_VOLUME": entry.volume,
        # Checked by the entrypoint only where the layout moved: data found there is refused.
        "LEGACY_PGDATA": matrix.OLD_PGDATA if entry.major_dir_layout else "",
    }


def labels(entry, manifest):
    """The image's labels: OCI's (base image included) and ours, from the matrix entry, the
    extension's version, git and the manifest read from the image."""
    revision, created = git_revision()
    return {
        "org.opencontainers.image.title": f"pg-session-jwt {entry.major}",
        "org.opencontainers.image.description":
            f"PostgreSQL {entry.major} (Debian {entry.suite}) with the pg_session_jwt extension",
        "org.opencontainers.image.version": extension_version(),
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": "https://github.com/pg-session-jwt/pg-session-jwt",
        "org.opencontainers.image.licenses": "PostgreSQL",
        "org.opencontainers.image.base.name": manifest["base"]["name"],
        BASE_DIGEST_LABEL: manifest["base"]["digest"],
        "io.pg-session-jwt.postgres.major": str(entry.major),
        "io.pg-session-jwt.extension.version": extension_version(),
        PACKAGES_LABEL: package_versions(manifest),
    }


def explain_failure(entry, failure):
    """A UserError for a failed build; for an apt failure it names the packages and the suite."""
    apt_errors = [line.strip() for line in failure.log_lines[-60:] if line.strip().startswith("E: ")]
    if not apt_errors:
        return failure
    missing = sorted(set(re.findall(r"Unable to locate package (\S+)", "\n".join(apt_errors))))
    if missing:
        what = (f"packages not found: {', '.join(missing)}; "
                f"check the names for {entry.major} in images/versions.yaml")
    else:
        what = "check that the mirror in images/versions.yaml is reachable"
    return UserError(f"PostgreSQL {entry.major}: apt failed in Debian {entry.suite} ({what}):\n  "
                     + "\n  ".join(dict.fromkeys(apt_errors)))


def server_version(manifest):
    """The packaged server's version (`17.12`): the upstream part of the Debian version of
    postgresql-<major> in the image's manifest (`17.12-0+deb13u1`)."""
    return manifest["packages"]["postgresql"]["version"].split(":")[-1].split("-")[0]


def base_digest(client, base):
    """The base image's registry digest when it was pulled, else its local id."""
    image = client.images.get(base)
    return (image.attrs.get("RepoDigests") or [image.id])[0].rpartition("@")[-1]


def read_manifest(client, image):
    """The manifest runtime/manifest.py wrote into `image`."""
    code, out = containers.run_once(client, image, ["cat", MANIFEST_PATH])
    if code != 0:
        raise UserError(f"{image}: cannot read {MANIFEST_PATH}: {out.strip()[-300:]}")
    return json.loads(out)


def package_versions(manifest):
    """The manifest's packages as one label value: `name=version` pairs, by role."""
    return " ".join(f"{p['package']}={p['version']}" for _, p in sorted(manifest["packages"].items()))


def changes(before, after):
    """What differs between two images' labels (None: no previous image), as lines for a person."""
    if before is None:
        return ["first build of this tag"]
    old = dict(item.split("=", 1) for item in before.get(PACKAGES_LABEL, "").split() if "=" in item)
    new = dict(item.split("=", 1) for item in after.get(PACKAGES_LABEL, "").split() if "=" in item)
    lines = [f"{name} {old.get(name, '(none)')} -> {new.get(name, '(none)')}"
             for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
    if before.get(BASE_DIGEST_LABEL) != after.get(BASE_DIGEST_LABEL):
        lines.append(f"base {before.get(BASE_DIGEST_LABEL) or '(unknown)'} -> {after.get(BASE_DIGEST_LABEL)}")
    return lines or ["same packages and base as the previous build"]


def build_one(client, entry, mx, repo, refresh_base):
    """Build, inspect and tag one major; returns a summary row."""
    scope = f"pg{entry.major}"
    started = time.monotonic()
    base = base_image.ensure(client, entry.suite, mx.mirror, refresh=refresh_base)
    previous = docker_build.image_id(client, entry.tag(repo))
    previous_labels = client.images.get(previous).labels if previous else None
    args = build_args(entry, mx, base, base_digest(client, base))
    say(scope, f"docker build from {base}")
    try:
        # First what ships (untagged), to read its manifest; then, from cache, the labelled image.
        shipped, _ = docker_build.build(client, context=matrix.ROOT, dockerfile=DOCKERFILE, tag=None,
                                        scope=scope, what=f"PostgreSQL {entry.major}", buildargs=args)
        manifest = read_manifest(client, shipped)
        image_id, replaced = docker_build.build(
            client, context=matrix.ROOT, dockerfile=DOCKERFILE, tag=entry.tag(repo), scope=scope,
            what=f"PostgreSQL {entry.major}", buildargs=args, labels=labels(entry, manifest))
    except docker_build.BuildFailed as failure:
        raise explain_failure(entry, failure) from None
    version = server_version(manifest)
    docker_build.tag_and_prune(client, image_id, entry.tags(version, repo), [replaced])
    image = client.images.get(image_id)
    for line in changes(previous_labels, image.labels):
        say(scope, f"since the previous build: {line}")
    seconds = time.monotonic() - started
    say(scope, f"done in {seconds:.0f}s: {', '.join(entry.tags(version, repo))}")
    return {"tag": entry.tag(repo), "server": version,
            "size_mb": image.attrs["Size"] / 1e6, "seconds": seconds}


def summary(rows):
    lines = [f"{'tag':<24} {'server':>8} {'size':>9} {'build':>7}"]
    lines += [f"{r['tag']:<24} {r['server']:>8} {r['size_mb']:>6.0f} MB {r['seconds']:>6.0f}s"
              for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m builder.build",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--pg", nargs="*", default=[], metavar="MAJOR",
                        help="majors to build (default: all in images/versions.yaml)")
    parser.add_argument("--repo", default=matrix.DEFAULT_REPO, help="image repository name")
    parser.add_argument("--refresh-base", action="store_true",
                        help="bootstrap the Debian base again instead of reusing the cached one")
    args = parser.parse_args(argv)
    try:
        mx = matrix.load()
        entries = mx.select(args.pg)
        client = connect()
        rows = [build_one(client, e, mx, args.repo, args.refresh_base) for e in entries]
    except UserError as exc:
        return failed(exc)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
