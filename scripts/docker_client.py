"""The Docker connection, with an error that says how to fix a missing daemon."""

from scripts.errors import UserError


def connect():
    """A docker SDK client that has answered a ping."""
    import docker  # imported here so that commands without Docker never need the SDK

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:
        raise UserError(
            f"cannot reach the Docker daemon ({type(exc).__name__}: {exc}). "
            "Start it (e.g. `systemctl start docker`) or point DOCKER_HOST at a running one, "
            "and check that this user may use it (`docker info`).") from None
    return client
