"""The build matrix: loads and checks images/versions.yaml, the one list of majors.

Everything that needs to know which majors exist (build, tests, compose, docs)
asks this module.
"""

from dataclasses import dataclass
from pathlib import Path

from runtime.errors import UserError
from runtime.yamlfile import compose_file, line_of

ROOT = Path(__file__).resolve().parent.parent
VERSIONS_FILE = ROOT / "images" / "versions.yaml"
DEFAULT_REPO = "pg-session-jwt"

# The official image moved its data in 18: PGDATA=/var/lib/postgresql/<major>/docker under
# VOLUME /var/lib/postgresql (pg_ctlcluster's layout), so that one mount holds every major's
# directory and `pg_upgrade --link` works across them without crossing a mount point.
# https://github.com/docker-library/postgres/pull/1259
MAJOR_DIR_LAYOUT_FROM = 18
# Where data lived before that, and where majors below the cutoff keep it.
OLD_PGDATA = "/var/lib/postgresql/data"
DATA_ROOT = "/var/lib/postgresql"


@dataclass(frozen=True)
class Major:
    """One supported Postgres major and how to build its image."""

    major: int
    suite: str
    packages: tuple
    is_default: bool

    @property
    def major_dir_layout(self):
        """Whether this major uses the official image's 18+ layout (see MAJOR_DIR_LAYOUT_FROM)."""
        return self.major >= MAJOR_DIR_LAYOUT_FROM

    @property
    def pgdata(self):
        """The image's default PGDATA."""
        return f"{DATA_ROOT}/{self.major}/docker" if self.major_dir_layout else OLD_PGDATA

    @property
    def volume(self):
        """The image's VOLUME: the directory a user mounts to keep the data."""
        return DATA_ROOT if self.major_dir_layout else OLD_PGDATA

    def tag(self, repo=DEFAULT_REPO):
        """The image tag users pin: `<repo>:<major>`."""
        return f"{repo}:{self.major}"

    def tags(self, server_version, repo=DEFAULT_REPO):
        """All tags of a built image: major, major.minor and `latest` for the default."""
        tags = [self.tag(repo), f"{repo}:{minor_version(server_version)}"]
        if self.is_default:
            tags.append(f"{repo}:latest")
        return tags


@dataclass(frozen=True)
class Matrix:
    """The parsed versions file."""

    majors: tuple
    mirror: str
    common_packages: tuple

    @property
    def default(self):
        return next(m for m in self.majors if m.is_default)

    def entry(self, major):
        """The entry of one major (an int or its text), or a UserError naming the known ones."""
        return self.select([major])[0]

    def select(self, wanted):
        """The entries for `wanted` majors (all when empty), or a UserError naming the known ones."""
        if not wanted:
            return list(self.majors)
        by_major = {m.major: m for m in self.majors}
        chosen = []
        for item in wanted:
            try:
                chosen.append(by_major[int(item)])
            except (KeyError, ValueError):
                known = ", ".join(str(m) for m in by_major)
                raise UserError(
                    f"unknown Postgres major {item!r}: known majors are {known} "
                    f"(add an entry to {VERSIONS_FILE.relative_to(ROOT)} to support another)"
                ) from None
        return chosen


def minor_version(server_version):
    """`17.6 (Debian 17.6-1)` or `17.6` → `17.6`."""
    return server_version.split()[0]


def load(path=VERSIONS_FILE):
    """Parse and validate the matrix file; errors name the file and line."""
    node, data = compose_file(path)

    def fail(message, *keys):
        raise UserError(f"{path}:{line_of(node, *keys)}: {message}")

    if not isinstance(data, dict):
        fail("expected a mapping with 'default', 'mirror', 'common_packages' and 'majors'")
    for key in ("default", "mirror", "common_packages", "majors"):
        if key not in data:
            fail(f"missing key {key!r}")
    majors = data["majors"]
    if not isinstance(majors, dict) or not majors:
        fail("'majors' must map each Postgres major to its suite and packages", "majors")
    common = data["common_packages"]
    if not isinstance(common, list) or not all(isinstance(p, str) for p in common):
        fail("'common_packages' must be a list of Debian package names", "common_packages")
    entries = []
    for major, spec in majors.items():
        if not isinstance(major, int) or isinstance(major, bool) or major < 10:
            fail(f"major {major!r} is not a Postgres major number", "majors", major)
        if not isinstance(spec, dict) or set(spec) != {"suite", "packages"}:
            fail(f"major {major}: expected exactly the keys 'suite' and 'packages'", "majors", major)
        if not isinstance(spec["suite"], str) or not spec["suite"].isalnum():
            fail(f"major {major}: 'suite' must be a Debian suite name", "majors", major, "suite")
        packages = spec["packages"]
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            fail(f"major {major}: 'packages' must be a list of package names",
                 "majors", major, "packages")
        entries.append(Major(major, spec["suite"], tuple(packages), major == data["default"]))
    if not any(m.is_default for m in entries):
        fail(f"default {data['default']!r} is not one of the majors", "default")
    return Matrix(tuple(entries), str(data["mirror"]), tuple(common))
