"""Base images per Debian suite, with or without a container registry.

`debian:<suite>-slim` is used when it is present or can be pulled. Otherwise the suite
is bootstrapped from the Debian archive (debootstrap --variant=minbase → docker import),
made like the slim image (no docs; apt sources for the suite, its updates and its
security archive), and cached as `pg-session-jwt-base:<suite>`. The cached image carries
a label with a digest of how it was made; a build reuses it only while that still
matches, or until a refresh is asked for.
"""

import fnmatch
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from builder.progress import say
from runtime.errors import UserError

CACHE_REPO = "pg-session-jwt-base"
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")

# What debian:*-slim leaves out, as dpkg path filters: later package installs skip these
# paths too. (path-include wins over an earlier path-exclude.)
SLIM_FILTERS = (
    ("exclude", "/usr/share/doc/*"),
    ("include", "/usr/share/doc/*/copyright"),
    ("exclude", "/usr/share/man/*"),
    ("exclude", "/usr/share/info/*"),
    ("exclude", "/usr/share/locale/*"),
    ("include", "/usr/share/locale/locale.alias"),
)


RECIPE_LABEL = "io.pg-session-jwt.base.recipe"


def apt_sources(suite, mirror):
    """The base's /etc/apt/sources.list: the suite, its -updates and its security archive,
    which Debian publishes beside the mirror (…/debian → …/debian-security)."""
    return (f"deb {mirror} {suite} main\n"
            f"deb {mirror} {suite}-updates main\n"
            f"deb {mirror}-security {suite}-security main\n")


def recipe(suite, mirror):
    """A digest of everything that makes a bootstrapped base, to tell a stale cache."""
    text = repr((suite, mirror, apt_sources(suite, mirror), SLIM_FILTERS, "minbase"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def official_ref(suite):
    return f"debian:{suite}-slim"


def cached_ref(suite):
    return f"{CACHE_REPO}:{suite}"


def _exists(client, ref):
    import docker

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def _pull(client, ref):
    try:
        client.images.pull(ref)
        return True
    except Exception:  # no registry, no network or no such tag: bootstrap instead
        return False


def ensure(client, suite, mirror, refresh=False):
    """The local image reference to build `suite` images from, bootstrapping if needed."""
    scope = f"base {suite}"
    if not refresh:
        if _exists(client, official_ref(suite)):
            say(scope, f"using local image {official_ref(suite)}")
            return official_ref(suite)
        if _exists(client, cached_ref(suite)):
            labels = client.images.get(cached_ref(suite)).labels or {}
            if labels.get(RECIPE_LABEL) == recipe(suite, mirror):
                say(scope, f"using local image {cached_ref(suite)}")
                return cached_ref(suite)
            say(scope, f"{cached_ref(suite)} was made another way (older tooling or mirror); "
                       "bootstrapping again")
            bootstrap(client, suite, mirror)
            return cached_ref(suite)
        if _pull(client, official_ref(suite)):
            say(scope, f"pulled {official_ref(suite)}")
            return official_ref(suite)
        say(scope, f"{official_ref(suite)} cannot be pulled; bootstrapping from {mirror}")
    else:
        say(scope, f"refresh requested; bootstrapping from {mirror}")
    bootstrap(client, suite, mirror)
    return cached_ref(suite)


def debootstrap_command(suite, target, mirror):
    """The debootstrap call for `suite`; suites newer than this debootstrap use the sid script."""
    script = DEBOOTSTRAP_SCRIPTS / suite
    if not script.exists():
        script = DEBOOTSTRAP_SCRIPTS / "sid"
    return ["debootstrap", "--variant=minbase", "--components=main", suite,
            str(target), mirror, str(script)]


def slim(root):
    """Make a bootstrapped tree like debian:*-slim: no docs, man pages or translations
    (now or in later installs), and none of the .debs and lists debootstrap leaves."""
    root = Path(root)
    config = root / "etc/dpkg/dpkg.cfg.d/docker-slim"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("".join(f"path-{verb} {pattern}\n" for verb, pattern in SLIM_FILTERS))

    def dropped(path):  # dpkg's rule: the last filter that matches decides (fnmatch '*' spans '/')
        verdict = False
        for verb, pattern in SLIM_FILTERS:
            if fnmatch.fnmatch(path, pattern):
                verdict = verb == "exclude"
        return verdict

    tops = {root / pattern.lstrip("/").split("*")[0] for verb, pattern in SLIM_FILTERS}
    tops |= {root / "var/cache/apt/archives", root / "var/lib/apt/lists"}
    for top in tops:
        for path in sorted(top.rglob("*"), reverse=True):  # children before their folders
            rel = "/" + str(path.relative_to(root))
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            elif dropped(rel) or "/var/" in rel and path.is_file():
                path.unlink()


def bootstrap(client, suite, mirror):
    """debootstrap `suite` into a temporary folder and import it as cached_ref(suite)."""
    scope = f"base {suite}"
    if shutil.which("debootstrap") is None:
        raise UserError(
            f"no {official_ref(suite)} image and no registry to pull it from, so the base must be "
            "bootstrapped from the Debian archive, but debootstrap is not installed: "
            "run `sudo apt-get install debootstrap` (or load a debian image with `docker load`)")
    with tempfile.TemporaryDirectory(prefix=f"pgjwt-{suite}-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        say(scope, "debootstrap (about a minute)")
        result = subprocess.run(debootstrap_command(suite, root, mirror),
                                capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise UserError(
                f"debootstrap of {suite} from {mirror} failed (exit {result.returncode}); "
                f"check the mirror in images/versions.yaml and that you are root:\n{tail}")
        slim(root)
        (root / "etc/apt/sources.list").write_text(apt_sources(suite, mirror))
        say(scope, f"importing as {cached_ref(suite)}")
        tar = subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-c", "."],
                             capture_output=True, check=True).stdout
        client.api.import_image_from_data(
            tar, repository=CACHE_REPO, tag=suite,
            changes=['CMD ["bash"]', "ENV LANG=C.UTF-8",
                     f"LABEL {RECIPE_LABEL}={recipe(suite, mirror)}"])
    return cached_ref(suite)
