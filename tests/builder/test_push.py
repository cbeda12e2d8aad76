"""builder/push.py without a registry: REGISTRY values, and failures named before any push."""

import socket
import subprocess

import pytest

from builder import matrix, push
from runtime.errors import UserError


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:5000", ("127.0.0.1", 5000, "127.0.0.1:5000")),
    ("registry.example.com/team/pg", ("registry.example.com", None, "registry.example.com/team/pg")),
    ("localhost:5000/", ("localhost", 5000, "localhost:5000")),
    ("[::1]:5000/x", ("[::1]", 5000, "[::1]:5000/x")),
])
def test_registry_values(text, expected):
    assert push.parse_registry(text) == expected


@pytest.mark.parametrize("text,message", [
    ("", "expected host:port[/path]"),
    ("http://host:5000", "expected host:port[/path]"),
    ("host:99999", "port 99999"),
    ("team", "not a registry host to Docker"),
    ("host:5000/Upper", "expected host:port[/path]"),
])
def test_bad_registry_values_say_what_is_expected(text, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        push.parse_registry(text)


def test_unreachable_registry_names_the_address():
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(UserError, match=f"registry 127.0.0.1:{port} is unreachable"):
            push.check_reachable("127.0.0.1", port, timeout=2)


def test_main_refuses_a_bad_registry_before_docker(capsys):
    assert push.main(["--registry", "not a registry"]) == 2
    assert "REGISTRY='not a registry'" in capsys.readouterr().err


def make_dry_run(*args):
    result = subprocess.run(["make", "-n", "-C", str(matrix.ROOT), *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_push_passes_registry_and_major():
    out = make_dry_run("push", "REGISTRY=host:5000/team", "PG=17")
    assert '-m builder.push --registry "host:5000/team" --pg 17' in out
    assert "--pg" not in make_dry_run("push", "REGISTRY=host:5000")


def test_make_run_replica_passes_the_flag():
    assert "-m devtools.devstack up --replica" in make_dry_run("run", "REPLICA=1").replace("  ", " ")
    assert "--replica" not in make_dry_run("run")
