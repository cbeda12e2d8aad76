"""The Docker connection, with an error that says how to fix a missing daemon."""

import os
import stat

from runtime.errors import UserError

FIX = ("Start the daemon (e.g. `systemctl start docker`) or point DOCKER_HOST at a running one, "
       "and check that this user may use it (`docker info`).")


def _unix_socket_path():
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host[len("unix://"):] if host.startswith("unix://") else None


def connect():
    """A docker SDK client that has answered a ping."""
    import docker  # imported here so that commands without Docker never need the SDK

    path = _unix_socket_path()
    if path is not None:
        try:
            is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
        except OSError:
            is_socket = False
        if not is_socket:
            raise UserError(f"cannot reach the Docker daemon: no socket at {path}. {FIX}")
    client = None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:
        if client is not None:
            client.close()
        raise UserError(f"cannot reach the Docker daemon ({type(exc).__name__}: {exc}). {FIX}") from None
    return client
