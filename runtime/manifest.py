"""What an image holds: the Debian package versions that matter and the base it was built from.

Run inside the image at build time (images/Dockerfile):

    python3 -m runtime.manifest --major 17 --base NAME --base-digest sha256:... --out FILE

and written to MANIFEST_PATH as JSON. The build (builder.build) reads it back, puts the same
facts in the image's labels and prints what changed since the previous build of that major.
"""

import argparse
import glob
import json
import subprocess
import sys

from runtime.errors import UserError, failed

MANIFEST_PATH = "/usr/share/pg-session-jwt/manifest.json"
# role -> how to find its package: a package name (with {major}), or a shared library whose
# owning package is asked of dpkg (libssl3 on bookworm, libssl3t64 from trixie on).
PACKAGES = {
    "postgresql": "postgresql-{major}",
    "plpython": "postgresql-plpython3-{major}",
    "python": "python3",
    "libcrypto": "/usr/lib/*/libcrypto.so.3",
    "libsodium": "/usr/lib/*/libsodium.so.2*",
}


def _dpkg(*args):
    result = subprocess.run(["dpkg-query", *args], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def package_of(pattern, major):
    """The installed package for one PACKAGES entry, or None when there is none."""
    if not pattern.startswith("/"):
        return pattern.format(major=major)
    paths = sorted(glob.glob(pattern))
    if not paths:
        return None
    owner = _dpkg("--search", paths[0])  # "libssl3t64:amd64: /usr/lib/x86_64-linux-gnu/libcrypto.so.3"
    return owner.split(":", 1)[0] if owner else None


def packages(major):
    """{role: {"package": name, "version": version}} of what is installed."""
    out = {}
    for role, pattern in PACKAGES.items():
        name = package_of(pattern, major)
        version = name and _dpkg("--showformat=${Version}", "--show", name)
        if version:
            out[role] = {"package": name, "version": version}
    return out


def manifest(major, base, base_digest):
    found = packages(major)
    missing = [role for role in ("postgresql", "plpython", "python", "libcrypto") if role not in found]
    if missing:
        raise UserError(f"the image lacks {', '.join(missing)}: check the package lists in "
                        "images/versions.yaml")
    return {"postgres_major": major, "base": {"name": base, "digest": base_digest}, "packages": found}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m runtime.manifest", description=__doc__.split("\n")[0])
    parser.add_argument("--major", type=int, required=True)
    parser.add_argument("--base", required=True, help="the base image's name")
    parser.add_argument("--base-digest", required=True, help="the base image's digest or id")
    parser.add_argument("--out", default=MANIFEST_PATH)
    args = parser.parse_args(argv)
    try:
        data = manifest(args.major, args.base, args.base_digest)
    except UserError as exc:
        return failed(exc)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
