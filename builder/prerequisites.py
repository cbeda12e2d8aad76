"""What `make` needs on this host, checked all at once before any work, installed when it can be.

    python -m builder.prerequisites TARGET [--pg MAJOR]     TARGET: venv, images, image, run, test

`TOOLS` is the one list: each thing a make target needs from the host, why, and the Debian
package that provides it. The Makefile calls this first for `make run`, `make test`,
`make images` and `make image` (and .ci/run through them). When something a package
provides is missing and this user may use apt (root, or passwordless sudo), it is installed,
with one line saying what and for which need. Otherwise, or for what make does not install (Docker,
Python), one message lists everything missing and the one command that installs it, and the
target stops before it has done anything.

Runs with the host's python3 before .venv exists: standard library only (builder.matrix,
which needs PyYAML, only when it can be imported), and no syntax newer than the Pythons it
must be able to refuse.
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from builder import base_image
from runtime.errors import UserError, failed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_READY = os.path.join(ROOT, ".venv", ".installed")  # what the Makefile touches last
MIN_PYTHON = (3, 11)
# Targets that build images, and so may need a Debian base bootstrapped.
BUILDS = frozenset({"images", "image", "run", "test"})
TARGETS = ("venv",) + tuple(sorted(BUILDS))


@dataclass
class Host:
    """What the checks look at; tests build one with a PATH of their own."""

    path: str = field(default_factory=lambda: os.environ.get("PATH", os.defpath))
    euid: int = field(default_factory=os.geteuid)
    python: tuple = tuple(sys.version_info[:2])
    ensurepip: bool = None  # None: look, again after an install; tests give the answer
    venv_ready: bool = field(default_factory=lambda: os.path.exists(VENV_READY))
    pg: str = None  # --pg: the one major `make image` / `make run` builds
    memo: dict = field(default_factory=dict, repr=False)  # answers that installing cannot change

    def has_ensurepip(self):
        """Whether `python -m venv` can put pip into .venv (Debian: python3.X-venv)."""
        if self.ensurepip is not None:
            return self.ensurepip
        importlib.invalidate_caches()  # a package just installed adds the module
        return importlib.util.find_spec("ensurepip") is not None

    def which(self, name):
        return shutil.which(name, path=self.path)

    def runs(self, *cmd):
        """Whether `cmd` exits 0 (False when it is not on PATH or takes over a minute)."""
        if self.which(cmd[0]) is None:
            return False
        try:
            return subprocess.run(list(cmd), capture_output=True, timeout=60,
                                  env={**os.environ, "PATH": self.path}).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def output(self, *cmd):
        """Standard output of `cmd` when it exits 0, else None."""
        if self.which(cmd[0]) is None:
            return None
        try:
            result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60,
                                    env={**os.environ, "PATH": self.path})
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None


def compose_command(runs):
    """The compose command that works: `docker compose` (v2), else `docker-compose` (v1), else
    None; `runs(cmd)` says whether a command exits 0."""
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if runs([*candidate, "version"]):
            return candidate
    return None


def suites(host, target):
    """(the Debian suites whose bases `target` builds from, the mirror), or None when the
    matrix cannot be read here (no PyYAML in this Python before .venv exists, or a matrix
    error, which the build itself reports)."""
    try:
        from builder import matrix
        mx = matrix.load()
        chosen = mx.entry(host.pg) if target in ("run", "image") and host.pg else None
    except (ImportError, UserError):
        return None
    if target == "run":
        # the chosen major's image, and the helper images from the default suite
        return sorted({(chosen or mx.default).suite, mx.default.suite}), mx.mirror
    if chosen is not None:
        return [chosen.suite], mx.mirror
    return sorted({entry.suite for entry in mx.majors}), mx.mirror


def has_base(host, suite, mirror):
    """Whether the daemon already has a base for `suite` that base_image.ensure() would use."""
    if host.runs("docker", "image", "inspect", base_image.official_ref(suite)):
        return True
    label = host.output("docker", "image", "inspect", "--format",
                        f'{{{{index .Config.Labels "{base_image.RECIPE_LABEL}"}}}}',
                        base_image.cached_ref(suite))
    return label == base_image.recipe(suite, mirror)


def must_bootstrap(host, target):
    """Whether `target` will bootstrap a Debian base with debootstrap: some suite has no local
    base and the daemon reaches no registry to pull debian:<suite>-slim from. (`docker search`
    asks Docker Hub without downloading anything; a daemon that only reaches a mirror is taken
    for one without a registry, and gets debootstrap.)"""
    if target not in BUILDS:
        return False
    if target not in host.memo:
        host.memo[target] = _must_bootstrap(host, target)
    return host.memo[target]


def _must_bootstrap(host, target):
    found = suites(host, target)
    if found is not None and all(has_base(host, suite, found[1]) for suite in found[0]):
        return False
    return not host.runs("docker", "search", "--limit", "1", "debian")


@dataclass(frozen=True)
class Tool:
    """One thing the host must have, for the make `targets` (or where `wanted(host, target)`
    says so): `package` installs it; without one, make does not install it and `fix` says
    what to do."""

    name: str
    why: str
    present: object                 # present(host) -> bool
    package: object = None          # the Debian package, or a function of the host
    targets: frozenset = frozenset()
    wanted: object = None           # wanted(host, target) -> bool, instead of `targets`
    fix: str = ""

    def needed(self, host, target):
        if self.wanted is not None:
            return self.wanted(host, target)
        return target in self.targets

    def package_for(self, host):
        return self.package(host) if callable(self.package) else self.package


TOOLS = (
    Tool("Python 3.11+", "runs everything here",
         lambda host: host.python >= MIN_PYTHON, targets=frozenset(TARGETS),
         fix="install Python 3.11 or newer and run make with PYTHON=python3.x"),
    Tool("venv", "Python's venv module with pip, which creates .venv", lambda host: host.has_ensurepip(),
         package=lambda host: "python{}.{}-venv".format(*host.python),
         # `python -m venv` runs ensurepip each time make (re)creates .venv.
         wanted=lambda host, target: target == "venv" or not host.venv_ready),
    Tool("Docker", "builds and runs the images",
         lambda host: host.runs("docker", "version", "--format", "{{.Server.Version}}"),
         targets=BUILDS,
         fix="install Docker and start its daemon; `docker version` must show a server, "
             "for this user (the docker group) or as root"),
    Tool("docker compose", "starts the dev stack (`docker compose` or docker-compose 1.29)",
         lambda host: compose_command(lambda cmd: host.runs(*cmd)) is not None, package="docker-compose",
         targets=frozenset({"run", "test"})),
    Tool("psql", "the commands `make run` prints, which the dev-stack test runs",
         lambda host: host.which("psql") is not None, package="postgresql-client",
         targets=frozenset({"run", "test"})),
    Tool("curl", "the token commands `make run` prints, which the dev-stack test runs",
         lambda host: host.which("curl") is not None, package="curl",
         targets=frozenset({"run", "test"})),
    Tool("debootstrap", "bootstraps the Debian base images: no registry here provides "
         "debian:<suite>-slim", lambda host: host.which("debootstrap") is not None,
         package="debootstrap", wanted=must_bootstrap),
    Tool("root", "debootstrap must run as root to bootstrap the Debian base images",
         lambda host: host.euid == 0, wanted=must_bootstrap,
         fix="run make as root (`sudo make ...`) once: the bases are cached afterwards"),
)


def missing(host, target):
    """The tools `target` needs that `host` lacks, in TOOLS order."""
    return [tool for tool in TOOLS if tool.needed(host, target) and not tool.present(host)]


def apt_command(host):
    """apt-get as root for this user (through `sudo -n` with passwordless sudo), or None when
    it cannot: no apt-get (not Debian or Ubuntu), or neither root nor passwordless sudo."""
    apt = host.which("apt-get")
    if apt is None:
        return None
    if host.euid == 0:
        return [apt]
    if host.runs("sudo", "-n", "true"):
        # sudo resets the environment; a variable given on its command line is kept.
        return [host.which("sudo"), "-n", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    return None


def install_command(packages):
    return "sudo apt-get install --no-install-recommends " + " ".join(packages)


def message(target, lacking, host):
    """The one message for what is missing: every item, why, and the command that installs it."""
    lines = [f"`make {target}` needs what this host lacks:"]
    lines += [f"  - {tool.name}: {tool.why}" for tool in lacking]
    packages = [tool.package_for(host) for tool in lacking if tool.package]
    if packages:
        lines.append(f"Install them with (Debian or Ubuntu; elsewhere, the same tools from the "
                     f"system's packages):\n  {install_command(packages)}")
        lines.append("(make installs them itself where apt-get works as root or with "
                     "passwordless sudo.)")
    lines += [f"{tool.name}: {tool.fix}" for tool in lacking if not tool.package]
    return "\n".join(lines)


def install(host, apt, packages):
    """`apt` update and install `packages`: None when both succeeded, else apt-get's last
    lines (its output is kept back unless it fails)."""
    env = {**os.environ, "PATH": host.path, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["update", "-qq"],
                 ["install", "-y", "-qq", "--no-install-recommends", *packages]):
        result = subprocess.run([*apt, *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            tail = "\n".join(result.stdout.splitlines()[-15:])
            return f"`apt-get {args[0]}` failed (exit {result.returncode}):\n{tail}"
    return None


def ensure(host, target, out=None):
    """Install what `target` lacks when this user can (saying so on `out`, default standard
    error); the message for what is still missing, or None when nothing is."""
    out = out or sys.stderr
    lacking = missing(host, target)
    installable = [tool for tool in lacking if tool.package]
    apt = apt_command(host) if installable else None
    if apt is not None:
        packages = [tool.package_for(host) for tool in installable]
        names = ", ".join(tool.name for tool in installable)
        print(f"prerequisites: `make {target}` needs {names}: installing {' '.join(packages)} "
              "with apt-get", file=out, flush=True)
        problem = install(host, apt, packages)
        if problem:
            return message(target, lacking, host) + "\n" + problem
        lacking = missing(host, target)
    return message(target, lacking, host) if lacking else None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m builder.prerequisites",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--pg", metavar="MAJOR", help="the one major that `make image` or "
                        "`make run` builds")
    args = parser.parse_args(argv)
    # `make run` also takes the major from PG_MAJOR, as devtools/devstack.py does.
    problem = ensure(Host(pg=args.pg or os.environ.get("PG_MAJOR") or None), args.target)
    if problem:
        return failed(problem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
