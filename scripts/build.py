"""Build one image per Postgres major from images/versions.yaml.

    python -m scripts.build [--pg 17 18] [--repo pg-session-jwt] [--refresh-base]

For each major: make sure a Debian base exists (scripts/base_image.py), build
images/Dockerfile with that major's build arguments and OCI labels, read the packaged
server version from the image, tag `<repo>:<major>`, `<repo>:<major>.<minor>` and, for
the default major, `<repo>:latest`. Ends with a summary table.
"""

import argparse
import datetime
import re
import subprocess
import sys
import time

from scripts import base_image, matrix
from scripts.docker_client import connect
from scripts.errors import UserError
from scripts.progress import say

DOCKERFILE = "images/Dockerfile"
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
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=matrix.ROOT,
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def build_args(entry, mx, base, ext_version):
    """Build arguments for images/Dockerfile; the OCI labels are made from them there."""
    return {
        "BASE_IMAGE": base,
        "PG_MAJOR": str(entry.major),
        "SUITE": entry.suite,
        "PACKAGES": " ".join(mx.common_packages + entry.packages),
        "PGDATA": entry.pgdata,
        "PG_VOLUME": entry.volume,
        # Checked by the entrypoint only where the layout moved: data found there is refused.
        "LEGACY_PGDATA": matrix.OLD_PGDATA if entry.major_dir_layout else "",
        "EXT_VERSION": ext_version,
        "REVISION": git_revision(),
        "CREATED": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def explain_failure(entry, log_lines, message):
    """A UserError for a failed build; for an apt failure it names the packages and the suite."""
    lines = [ANSI.sub("", line) for line in log_lines[-60:]]
    apt_errors = [line.strip() for line in lines if line.strip().startswith("E: ")]
    tail = "\n".join(lines[-25:])
    if apt_errors:
        missing = sorted(set(re.findall(r"Unable to locate package (\S+)", "\n".join(apt_errors))))
        if missing:
            what = (f"packages not found: {', '.join(missing)}; "
                    f"check the names for {entry.major} in images/versions.yaml")
        else:
            what = "check that the mirror in images/versions.yaml is reachable"
        return UserError(
            f"PostgreSQL {entry.major}: apt failed in Debian {entry.suite} ({what}):\n  "
            + "\n  ".join(dict.fromkeys(apt_errors)))
    return UserError(f"PostgreSQL {entry.major}: docker build failed: {message}\n"
                     f"--- last build lines ---\n{tail}")


def server_version_of(client, tag):
    """`postgres --version` of the image `tag`, from a container removed with its anonymous
    data volume (the SDK's remove=True would leave the VOLUME behind)."""
    container = client.containers.run(tag, ["postgres", "--version"], entrypoint=[], detach=True)
    try:
        container.wait()
        return container.logs().decode().strip()
    finally:
        container.remove(v=True, force=True)


def build_one(client, entry, mx, repo, refresh_base):
    """Build, inspect and tag one major; returns a summary row."""
    scope = f"pg{entry.major}"
    started = time.monotonic()
    base = base_image.ensure(client, entry.suite, mx.mirror, refresh=refresh_base)
    ext_version = extension_version()
    say(scope, f"docker build from {base}")
    log = []
    image_id = None
    stream = client.api.build(
        path=str(matrix.ROOT), dockerfile=DOCKERFILE, tag=entry.tag(repo), rm=True,
        forcerm=True, decode=True, buildargs=build_args(entry, mx, base, ext_version))
    for chunk in stream:
        if "stream" in chunk:
            for line in chunk["stream"].splitlines():
                log.append(line)
                if line.startswith("Step "):
                    say(scope, line.split(" : ", 1)[-1][:100] if " : " in line else line)
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        if "error" in chunk:
            raise explain_failure(entry, log, chunk["error"].strip())
    if image_id is None:
        raise explain_failure(entry, log, "no image produced")
    version = server_version_of(client, entry.tag(repo))
    server_version = version.split(") ", 1)[-1]  # "postgres (PostgreSQL) 17.6 (Debian ...)"
    image = client.images.get(entry.tag(repo))
    for tag in entry.tags(server_version, repo):
        name, _, tagname = tag.rpartition(":")
        image.tag(name, tagname)
    seconds = time.monotonic() - started
    say(scope, f"done in {seconds:.0f}s: {', '.join(entry.tags(server_version, repo))}")
    return {"tag": entry.tag(repo), "server": matrix.minor_version(server_version),
            "size_mb": image.attrs["Size"] / 1e6, "seconds": seconds}


def summary(rows):
    lines = [f"{'tag':<24} {'server':>8} {'size':>9} {'build':>7}"]
    lines += [f"{r['tag']:<24} {r['server']:>8} {r['size_mb']:>6.0f} MB {r['seconds']:>6.0f}s"
              for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.build",
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
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
