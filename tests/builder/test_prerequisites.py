"""builder/prerequisites.py: with each host tool taken off PATH, `make run` and `make test`'s
check names it, why, and the one apt-get command, before any work; where apt-get works as root,
it installs what is missing instead, with one line saying so.

PATH is a folder of this test's own with an executable per tool (each answers what the checks
ask: `docker version`, `docker compose version`, `docker search`, `docker image inspect`).
"""

import stat
import subprocess
import sys

import pytest

from builder import base_image, matrix, prerequisites
from builder.prerequisites import Host

# The Debian package that provides each command (the truth the check is held to).
PACKAGES = {"docker-compose": "docker-compose", "psql": "postgresql-client", "curl": "curl",
            "debootstrap": "debootstrap"}
MX = matrix.load()
SUITES = sorted({entry.suite for entry in MX.majors})


def executable(path, script):
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def docker_script(compose_v2=False, registry=False, bases=()):
    """A `docker` whose daemon answers, with or without the compose plugin, a reachable
    registry, and the local bases `bases` (suites)."""
    inspect = "\n".join(
        f'    *"{base_image.cached_ref(suite)}") '
        f'echo {base_image.recipe(suite, MX.mirror)}; exit 0 ;;' for suite in bases)
    return f"""case "$1" in
  version) exit 0 ;;
  compose) exit {0 if compose_v2 else 1} ;;
  search) exit {0 if registry else 1} ;;
  image) case "$*" in
{inspect}
    *) exit 1 ;;
  esac ;;
esac
exit 2
"""


@pytest.fixture
def bin_dir(tmp_path):
    """A PATH with every tool a fresh `make test` needs; no registry, no local base."""
    folder = tmp_path / "bin"
    folder.mkdir()
    executable(folder / "docker", docker_script())
    for command in PACKAGES:
        executable(folder / command, "exit 0\n")
    return folder


def host(folder, **kwargs):
    """A Host that sees only `folder` on PATH, root, a new enough Python and a ready .venv."""
    settings = {"path": str(folder), "euid": 0, "python": (3, 13), "ensurepip": True,
                "venv_ready": True, **kwargs}
    return Host(**settings)


def check(folder, target="test"):
    """`python -m builder.prerequisites TARGET` as make runs it, with only `folder` on PATH."""
    return subprocess.run([sys.executable, "-m", "builder.prerequisites", target],
                          cwd=matrix.ROOT, env={"PATH": str(folder)}, capture_output=True,
                          text=True, timeout=60)


def test_nothing_missing_says_nothing(bin_dir):
    result = check(bin_dir)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("command", sorted(PACKAGES))
@pytest.mark.parametrize("target", ["run", "test"])
def test_each_tool_off_path_is_named_with_its_package(bin_dir, command, target):
    (bin_dir / command).unlink()
    result = check(bin_dir, target)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: `make {target}` needs what this host lacks:"
    named = [line for line in lines if line.startswith("  - ")]
    name = "docker compose" if command == "docker-compose" else command
    assert len(named) == 1 and named[0].startswith(f"  - {name}: ")
    assert f"  sudo apt-get install --no-install-recommends {PACKAGES[command]}" in lines


def test_everything_missing_is_one_message_with_one_command(bin_dir):
    for command in PACKAGES:
        (bin_dir / command).unlink()
    result = check(bin_dir)
    assert result.returncode == 2
    assert result.stderr.count("error:") == 1
    for name in ("docker compose", "psql", "curl", "debootstrap"):
        assert f"  - {name}: " in result.stderr
    assert ("sudo apt-get install --no-install-recommends docker-compose postgresql-client "
            "curl debootstrap") in result.stderr


def test_without_docker_the_message_says_how_to_get_it(bin_dir):
    (bin_dir / "docker").unlink()
    message = prerequisites.ensure(host(bin_dir), "images")
    assert "  - Docker: " in message and "`docker version` must show a server" in message
    assert "apt-get" not in message  # make does not install Docker


def test_the_compose_plugin_counts_as_compose(bin_dir):
    (bin_dir / "docker-compose").unlink()
    executable(bin_dir / "docker", docker_script(compose_v2=True))
    assert prerequisites.ensure(host(bin_dir), "run") is None


@pytest.mark.parametrize("where", ["registry", "local bases"])
def test_debootstrap_is_needed_only_without_a_registry_or_local_bases(bin_dir, where):
    (bin_dir / "debootstrap").unlink()
    if where == "registry":
        executable(bin_dir / "docker", docker_script(registry=True))
    else:
        executable(bin_dir / "docker", docker_script(bases=SUITES))
    assert prerequisites.ensure(host(bin_dir, euid=1000), "test") is None


def test_a_stale_cached_base_still_needs_debootstrap(bin_dir):
    (bin_dir / "debootstrap").unlink()
    executable(bin_dir / "docker", docker_script(bases=SUITES[1:]))
    assert "  - debootstrap: " in prerequisites.ensure(host(bin_dir), "test")


def test_bootstrapping_as_another_user_asks_for_root(bin_dir):
    message = prerequisites.ensure(host(bin_dir, euid=1000), "images")
    assert "  - root: " in message and "sudo make" in message
    assert prerequisites.ensure(host(bin_dir, euid=1000), "venv") is None


def test_old_python_and_no_venv_module(bin_dir):
    message = prerequisites.ensure(host(bin_dir, python=(3, 10), ensurepip=False,
                                        venv_ready=False), "venv")
    assert "  - Python 3.11+: " in message and "  - venv: " in message
    assert "sudo apt-get install --no-install-recommends python3.10-venv" in message


def fake_apt(folder, log):
    """An apt-get that logs its arguments and, on install, puts each package's command on PATH."""
    provides = " ".join(f'{package}) echo "exit 0" > "{folder}/{command}"; '
                        f'command -p chmod +x "{folder}/{command}" ;;'
                        for command, package in PACKAGES.items())
    executable(folder / "apt-get", f"""echo "$DEBIAN_FRONTEND $*" >> "{log}"
if [ "$1" = install ]; then
  for package in "$@"; do case "$package" in {provides} esac; done
fi
""")


def test_root_with_apt_installs_what_is_missing_in_one_line(bin_dir, tmp_path, capfd):
    for command in ("psql", "curl", "debootstrap"):
        (bin_dir / command).unlink()
    log = tmp_path / "apt.log"
    fake_apt(bin_dir, log)
    assert prerequisites.ensure(host(bin_dir), "test") is None
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0] == ("prerequisites: `make test` needs psql, curl, debootstrap: installing "
                      "postgresql-client curl debootstrap with apt-get")
    assert log.read_text().splitlines() == [
        "noninteractive update -qq",
        "noninteractive install -y -qq --no-install-recommends postgresql-client curl debootstrap"]
    assert all((bin_dir / command).exists() for command in PACKAGES)


def test_passwordless_sudo_installs_through_sudo(bin_dir, tmp_path):
    (bin_dir / "curl").unlink()
    log = tmp_path / "sudo.log"
    # sudo -n VAR=value apt-get ARGS: as sudo runs it, with VAR set.
    executable(bin_dir / "sudo", f'echo "$*" >> "{log}"\n[ "$2" = true ] && exit 0\n'
                                 f'export "$2"; shift 3; exec "{bin_dir}/apt-get" "$@"\n')
    fake_apt(bin_dir, tmp_path / "apt.log")
    executable(bin_dir / "docker", docker_script(registry=True))  # no bootstrap, so no root
    assert prerequisites.ensure(host(bin_dir, euid=1000), "run") is None
    assert log.read_text().splitlines()[1:] == [
        "-n DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "-n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl"]


def test_without_root_or_sudo_nothing_is_installed(bin_dir, tmp_path):
    (bin_dir / "psql").unlink()
    log = tmp_path / "apt.log"
    fake_apt(bin_dir, log)
    executable(bin_dir / "docker", docker_script(registry=True))
    message = prerequisites.ensure(host(bin_dir, euid=1000), "run")
    assert "  - psql: " in message and not log.exists()


def test_a_failed_apt_get_keeps_the_message_with_its_output(bin_dir):
    (bin_dir / "curl").unlink()
    executable(bin_dir / "apt-get", '[ "$1" = update ] && exit 0\n'
               'echo "E: Unable to locate package $5"; exit 100\n')
    message = prerequisites.ensure(host(bin_dir), "test")
    assert "  - curl: " in message
    assert message.endswith("`apt-get install` failed (exit 100):\nE: Unable to locate package curl")


@pytest.mark.parametrize("target", ["run", "test"])
def test_make_checks_before_anything_else(target):
    first = subprocess.run(["make", "-n", "--no-print-directory", target], cwd=matrix.ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()[0]
    assert first.split() == ["python3", "-m", "builder.prerequisites", target]


def test_make_run_needs_the_bases_of_its_major_and_of_the_helpers(bin_dir):
    (bin_dir / "debootstrap").unlink()
    executable(bin_dir / "docker", docker_script(bases=[MX.default.suite]))
    assert prerequisites.ensure(host(bin_dir), "run") is None
    other = next(entry for entry in MX.majors if entry.suite != MX.default.suite)
    message = prerequisites.ensure(host(bin_dir, pg=str(other.major)), "run")
    assert "  - debootstrap: " in message
    assert prerequisites.ensure(host(bin_dir, pg=str(MX.default.major)), "image") is None
