"""The one place that starts PostgreSQL containers (tests, benchmarks, `make run`).

`start()` runs an image on a random host port, waits for real readiness (a TCP login
to the final server, which the entrypoint's initialisation server never offers), and
returns a PgContainer. `stop()` saves the container's log and always removes it.
"""

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from devtools.jwt import pgoptions_value
from runtime.errors import UserError

DEFAULT_PASSWORD = "pg-session-jwt-test"


def data_layout(client, image):
    """(VOLUME, PGDATA) that `image` declares: one directory before 18; from 18 on PGDATA is
    /var/lib/postgresql/<major>/docker below VOLUME /var/lib/postgresql (builder/matrix.py).
    Mount a volume at the first to keep the data."""
    config = client.images.get(image).attrs["Config"]
    volumes = list(config.get("Volumes") or {})
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    if len(volumes) != 1 or "PGDATA" not in env:
        raise UserError(f"{image} declares volumes {volumes} and PGDATA {env.get('PGDATA')!r}; "
                        "expected one VOLUME and PGDATA (is it an image of this project?)")
    return volumes[0], env["PGDATA"]


@dataclass
class PgContainer:
    """A running PostgreSQL container and how to reach it."""

    container: object
    image: str
    host_port: int = 0
    password: str = DEFAULT_PASSWORD
    user: str = "postgres"
    dbname: str = "postgres"
    extra: dict = field(default_factory=dict)

    @property
    def id(self):
        return self.container.id

    def dsn(self, user=None, password=None, dbname=None):
        return (f"host=127.0.0.1 port={self.host_port} user={user or self.user} "
                f"password={password or self.password} dbname={dbname or self.dbname}")

    def connect(self, jwk=None, user=None, password=None, dbname=None, autocommit=True,
                options=None, **kwargs):
        """A psycopg connection; `jwk` goes into the startup packet as pg_session_jwt.jwk."""
        import psycopg

        opts = []
        if jwk is not None:
            opts.append(pgoptions_value(jwk))
        if options:
            opts.append(options)
        if opts:
            kwargs["options"] = " ".join(opts)
        return psycopg.connect(self.dsn(user, password, dbname), autocommit=autocommit,
                               connect_timeout=10, **kwargs)

    def exec(self, cmd, user="postgres"):
        """Run `cmd` (a list) in the container; returns (exit code, combined output text)."""
        code, out = self.container.exec_run(cmd, user=user)
        return code, out.decode(errors="replace")

    def logs(self):
        return self.container.logs().decode(errors="replace")

    def reload(self):
        self.container.reload()
        return self.container.attrs

    def wait_exit(self, timeout=60):
        """Block until the container exits (a refused start); returns its exit code."""
        return self.container.wait(timeout=timeout)["StatusCode"]


def wait_ready(pg, timeout=120, interval=0.2, port="5432/tcp", **connect_kwargs):
    """Block until a TCP login and `select 1` succeed; raise with the log if it never does.

    `interval` is the pause between attempts (the benchmarks time start-up, so poll finer);
    `port` is the container port to log in through, `connect_kwargs` go to pg.connect()."""
    import psycopg

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        pg.container.reload()
        if pg.container.status in ("exited", "dead"):
            raise UserError(f"container {pg.image} exited during start-up:\n{pg.logs()[-3000:]}")
        ports = pg.container.attrs["NetworkSettings"]["Ports"].get(port)
        if ports:
            pg.host_port = int(ports[0]["HostPort"])
            try:
                with pg.connect(**connect_kwargs) as conn:
                    conn.execute("select 1")
                return pg
            except psycopg.OperationalError as exc:
                last = exc
        time.sleep(interval)
    raise UserError(f"{pg.image} not ready after {timeout}s ({last}):\n{pg.logs()[-3000:]}")


def start(client, image, environment=None, command=None, volumes=None, user=None,
          password=DEFAULT_PASSWORD, wait=True, timeout=120, **run_kwargs):
    """Run `image` with a random host port for 5432 and (by default) wait until it is ready."""
    env = {"POSTGRES_PASSWORD": password} if password else {}
    env.update(environment or {})
    container = client.containers.run(
        image, command=command, detach=True, environment=env, volumes=volumes or {},
        ports={"5432/tcp": ("127.0.0.1", None)}, user=user,
        name=f"pgjwt-{uuid.uuid4().hex[:10]}", labels={"io.pg-session-jwt.test": "1"},
        **run_kwargs)
    pg = PgContainer(container, image, password=password or DEFAULT_PASSWORD,
                     user=env.get("POSTGRES_USER", "postgres"),
                     dbname=env.get("POSTGRES_DB", env.get("POSTGRES_USER", "postgres")))
    if wait:
        try:
            wait_ready(pg, timeout)
        except BaseException:
            stop(pg)
            raise
    return pg


def run_once(client, image, command, volumes=None, entrypoint="", timeout=60, **run_kwargs):
    """Run `command` in `image` to completion, bypassing its entrypoint unless `entrypoint` is
    given; returns (exit code, combined output text) and always removes the container."""
    container = client.containers.run(
        image, command=command, entrypoint=entrypoint, detach=True, volumes=volumes or {},
        name=f"pgjwt-{uuid.uuid4().hex[:10]}", labels={"io.pg-session-jwt.test": "1"}, **run_kwargs)
    try:
        code = container.wait(timeout=timeout)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True, v=True)


def stop(pg, log_dir=None, timeout=10):
    """Save the log to `log_dir` (when given) and remove the container, whatever state it is in."""
    try:
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / f"{pg.container.name}.log").write_text(pg.logs())
    except Exception:  # the log is a courtesy; removal below must still happen
        pass
    try:
        pg.container.stop(timeout=timeout)
    except Exception:
        pass
    try:
        pg.container.remove(force=True, v=True)
    except Exception:
        pass


def start_pooler(client, image, db, network, app_password, pool_size=10, timeout=60):
    """Run the pooler image (compose/pooler: pgbouncer, transaction mode) in front of `db`,
    both on the docker network `network`, with a random host port; returned as a PgContainer
    once a login through it reaches the database. Remove it with stop()."""
    container = client.containers.run(
        image, detach=True, network=network,
        environment={"DB_HOST": db.container.name, "DB_PORT": "5432", "POOL_SIZE": str(pool_size),
                     "POSTGRES_PASSWORD": db.password, "APP_PASSWORD": app_password},
        ports={"6432/tcp": ("127.0.0.1", None)},
        name=f"pgjwt-{uuid.uuid4().hex[:10]}", labels={"io.pg-session-jwt.test": "1"})
    pooler = PgContainer(container, image, password=db.password, dbname=db.dbname)
    try:
        # pgbouncer in transaction mode cannot keep server-side prepared statements.
        return wait_ready(pooler, timeout, port="6432/tcp", prepare_threshold=None)
    except BaseException:
        stop(pooler)
        raise
