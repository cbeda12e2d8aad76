"""The local development stack in compose/: what `make run`, `make stop` and `make logs` do.

    python -m devtools.devstack up [--pg 17] [--replica]
                                              build what is missing, start, wait, print how to use
                                              it; --replica adds a hot standby of db
    python -m devtools.devstack down           remove the stack's containers, volumes and network
    python -m devtools.devstack logs           follow the stack's logs

Settings come from the environment, all optional: PG_MAJOR (default: the matrix default),
PGJWT_PROJECT (compose project, default pg-session-jwt), PGJWT_DB_PORT, PGJWT_POOLER_PORT,
PGJWT_TOKENS_PORT, PGJWT_REPLICA_PORT (host ports on 127.0.0.1, defaults 55432, 56432, 58080,
55433), PGJWT_POOL_SIZE,
PGJWT_IMAGE_REPO (repository of the db image, default pg-session-jwt),
PGJWT_POSTGRES_PASSWORD and PGJWT_APP_PASSWORD (development defaults). The same names are
what compose/docker-compose.yml reads, so plain compose and this module agree.
"""

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import quote

from builder import docker_build, matrix, prerequisites
from builder.docker_client import connect
from builder.progress import say
from devtools.jwt import pgoptions_export
from runtime.errors import UserError, failed

COMPOSE_FILE = matrix.ROOT / "compose" / "docker-compose.yml"
SERVICES = ("db", "tokens", "pooler")
# In the compose profile of the same name: started only by `up --replica` (`make run REPLICA=1`).
REPLICA = "replica"
HELPER_SERVICES = ("tokens", "pooler")  # their images are built here; db's by builder/build.py
DB_NAME = "demo"
APP_USER = "app"
TOKEN_TTL = 3600
# service → (environment variable, default host port); defaults stay clear of 5432.
PORTS = {"db": ("PGJWT_DB_PORT", 55432), "pooler": ("PGJWT_POOLER_PORT", 56432),
         "tokens": ("PGJWT_TOKENS_PORT", 58080), REPLICA: ("PGJWT_REPLICA_PORT", 55433)}
SCOPE = "devstack"
# Where db fetches the issuer's keys (compose/docker-compose.yml), on the stack's network.
JWKS_URL = "http://tokens:8080/.well-known/jwks.json"


@dataclass(frozen=True)
class Settings:
    """Everything that varies between stacks: project name, major, ports, passwords."""

    entry: matrix.Major               # the major's matrix entry
    project: str = "pg-session-jwt"
    ports: dict = field(default_factory=lambda: {s: p for s, (_, p) in PORTS.items()})
    postgres_password: str = "postgres"
    app_password: str = "app"
    pool_size: int = 10
    image_repo: str = matrix.DEFAULT_REPO
    replica: bool = False

    @property
    def major(self):
        return self.entry.major

    @property
    def data_volume(self):
        """Where db's image declares its VOLUME (and so where the stack mounts db's data)."""
        return self.entry.volume

    @property
    def services(self):
        """The services this stack runs."""
        return SERVICES + ((REPLICA,) if self.replica else ())

    @property
    def active_ports(self):
        """{service: host port} of the services this stack runs."""
        return {s: p for s, p in self.ports.items() if s in self.services}

    @classmethod
    def from_env(cls, environ, mx, pg=None, replica=False):
        """Settings from `environ` (and --pg, --replica), checked, with errors that name the
        variable."""
        wanted = pg or environ.get("PG_MAJOR")
        entry = mx.entry(wanted) if wanted else mx.default
        ports = {}
        for service, (var, default) in PORTS.items():
            ports[service] = _int_setting(environ, var, default, 1, 65535)
        if len(set(ports.values())) != len(ports):
            raise UserError(f"host ports must differ: {ports}; set PGJWT_DB_PORT, "
                            "PGJWT_POOLER_PORT, PGJWT_TOKENS_PORT and PGJWT_REPLICA_PORT to "
                            "distinct values")
        project = environ.get("PGJWT_PROJECT", "pg-session-jwt")
        if not project or not all(c.isalnum() or c in "-_" for c in project) \
                or project != project.lower():
            raise UserError(f"PGJWT_PROJECT={project!r}: use lower-case letters, digits, - and _")
        return cls(entry=entry, project=project, ports=ports,
                   postgres_password=environ.get("PGJWT_POSTGRES_PASSWORD", "postgres"),
                   app_password=environ.get("PGJWT_APP_PASSWORD", "app"),
                   pool_size=_int_setting(environ, "PGJWT_POOL_SIZE", 10, 1, 10000),
                   image_repo=environ.get("PGJWT_IMAGE_REPO") or matrix.DEFAULT_REPO,
                   replica=replica)

    def compose_env(self, base_image=None, all_profiles=False):
        """The variables compose/docker-compose.yml interpolates, for this stack. The replica's
        profile is enabled when this stack has one, or for `all_profiles` (so that `down`
        removes a replica whatever `up` was given)."""
        env = {
            "COMPOSE_PROFILES": REPLICA if self.replica or all_profiles else "",
            "PGJWT_DATA_VOLUME": self.data_volume,
            "PG_MAJOR": str(self.major),
            "PGJWT_IMAGE_REPO": self.image_repo,
            "PGJWT_POSTGRES_PASSWORD": self.postgres_password,
            "PGJWT_APP_PASSWORD": self.app_password,
            "PGJWT_POOL_SIZE": str(self.pool_size),
        }
        env.update({var: str(self.ports[service]) for service, (var, _) in PORTS.items()})
        if base_image:
            env["PGJWT_BASE_IMAGE"] = base_image
        return env

    def url(self, service, user=APP_USER, password=None):
        """A libpq connection URL to `service` (db or pooler) on the host."""
        password = self.app_password if password is None else password
        return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
                f"@127.0.0.1:{self.ports[service]}/{DB_NAME}")

    def tokens_url(self, path=""):
        return f"http://127.0.0.1:{self.ports['tokens']}{path}"


def _int_setting(environ, var, default, low, high):
    text = environ.get(var)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise UserError(f"{var}={text!r}: expected a whole number from {low} to {high}")
    return value


# --- compose ---------------------------------------------------------------------------

def detect_compose(run=subprocess.run):
    """The compose command: `docker compose` (v2) when present, else `docker-compose` (v1)
    (builder.prerequisites, which `make run` and `make test` check before anything else)."""
    def works(cmd):
        try:
            return run(cmd, capture_output=True, text=True).returncode == 0
        except OSError:  # the executable does not exist
            return False

    compose = prerequisites.compose_command(works)
    if compose is None:
        raise UserError("neither `docker compose` (v2) nor `docker-compose` (v1) works: install one "
                        "(`apt-get install docker-compose`, or Docker's compose plugin)")
    return compose


def compose_command(compose, project, *args):
    """The full command line for `compose ... args` on this project and compose file."""
    return [*compose, "-p", project, "-f", str(COMPOSE_FILE), *args]


def run_compose(compose, settings, *args, base_image=None, check=True, all_profiles=False):
    """Run compose with this stack's settings in its environment; output goes to the terminal."""
    env = {**os.environ, **settings.compose_env(base_image, all_profiles)}
    result = subprocess.run(compose_command(compose, settings.project, *args), env=env)
    if check and result.returncode != 0:
        raise UserError(f"`{' '.join([*compose, *args])}` failed (exit {result.returncode}); "
                        "see its output above, and `make logs`")
    return result.returncode


def helper_builds(compose_doc, base_image):
    """(tag, context, dockerfile, buildargs) of the helper images, read from the compose file's
    `build:` sections (the one description of them), with BASE_IMAGE set to `base_image`."""
    builds = []
    for name in HELPER_SERVICES:
        service = compose_doc["services"][name]
        spec = service["build"]
        if set(spec.get("args", {})) != {"BASE_IMAGE"}:
            raise UserError(f"{COMPOSE_FILE}: service {name}: expected BASE_IMAGE as the only "
                            "build argument")
        builds.append((service["image"], (COMPOSE_FILE.parent / spec["context"]).resolve(),
                       spec.get("dockerfile", "Dockerfile"), {"BASE_IMAGE": base_image}))
    return builds


def build_helpers(client, base_image):
    """Build the tokens and pooler images with the docker SDK (quick when cached): no
    dependence on compose's builder, which in v2 needs buildx."""
    import yaml

    for tag, context, dockerfile, buildargs in helper_builds(
            yaml.safe_load(COMPOSE_FILE.read_text()), base_image):
        say(SCOPE, f"building {tag} from {base_image}")
        built, replaced = docker_build.build(client, context=context, dockerfile=dockerfile, tag=tag,
                                             scope=SCOPE, what=tag, buildargs=buildargs)
        docker_build.tag_and_prune(client, built, [tag], [replaced])


# --- host checks and waiting -------------------------------------------------------------

def port_is_free(port, host="127.0.0.1"):
    """Whether a listener could bind `port`: SO_REUSEADDR as docker-proxy sets it, so that
    connections in TIME_WAIT from a previous stack do not count as busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def busy_ports(ports, is_free=port_is_free):
    """The (service, port) pairs whose host port is taken."""
    return [(service, port) for service, port in ports.items() if not is_free(port)]


def busy_ports_error(busy):
    parts = [f"{port} ({service}; set {PORTS[service][0]})" for service, port in busy]
    return UserError(f"host port{'s' if len(busy) > 1 else ''} already in use on 127.0.0.1: "
                     f"{', '.join(parts)}. Stop what listens there or choose free ports, "
                     f"e.g. `{PORTS[busy[0][0]][0]}={busy[0][1] + 1} make run`")


def project_containers(client, project):
    return client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project}"})


def container_state(container):
    """`healthy`, `starting`, `unhealthy`, `running` (no healthcheck) or the exit status."""
    state = container.attrs["State"]
    if state["Status"] != "running":
        return state["Status"]
    return state.get("Health", {}).get("Status", "running")


def stack_state(containers):
    """{service: state} for the stack's containers."""
    return {c.labels.get("com.docker.compose.service"): container_state(c) for c in containers}


def failed_service(containers):
    """A UserError with the log of the first container that exited or is unhealthy, or None."""
    for container in containers:
        state = container_state(container)
        if state in ("exited", "dead", "unhealthy"):
            service = container.labels.get("com.docker.compose.service")
            return UserError(f"service {service} is {state} (`make logs` shows more; `make stop` "
                             f"removes the stack and its data); its last log lines:\n"
                             f"{_tail(container)}")
    return None


def wait_healthy(client, settings, timeout=240, poll=1.0):
    """Block until every service is healthy; UserError with the failing service's log if not."""
    deadline = time.monotonic() + timeout
    states = {}
    while time.monotonic() < deadline:
        containers = project_containers(client, settings.project)
        states = stack_state(containers)
        if all(states.get(s) in ("healthy", "running") for s in settings.services):
            return states
        failure = failed_service(containers)
        if failure:
            raise failure
        time.sleep(poll)
    raise UserError(f"the stack was not healthy after {timeout}s ({states}); see `make logs`")


def _tail(container, lines=30):
    return container.logs(tail=lines).decode(errors="replace").rstrip()


# --- the token issuer --------------------------------------------------------------------

def http_get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        raise UserError(f"GET {url}: HTTP {exc.code}: {exc.read().decode().strip()}") from None
    except OSError as exc:
        raise UserError(f"GET {url}: {exc}; is the tokens service up? (`make logs`)") from None


def fetch_token(settings, sub, ttl=TOKEN_TTL):
    return http_get(settings.tokens_url(f"/token?sub={quote(sub)}&ttl={ttl}"))


def fetch_jwk(settings):
    return json.dumps(json.loads(http_get(settings.tokens_url("/jwk"))), separators=(",", ":"),
                      sort_keys=True)


# --- what `up` prints --------------------------------------------------------------------

def demo_commands(settings):
    """The three psql commands that show RLS isolation; they read $ALICE_TOKEN and $BOB_TOKEN.

    Through pgbouncer in transaction mode each command is one transaction (one -c with
    several statements) and the session is transaction-scoped (second argument true).
    """
    pooler = shlex.quote(settings.url("pooler"))
    admin = shlex.quote(settings.url("db", "postgres", settings.postgres_password))

    def as_user(var, title):
        return (f'psql {pooler} -c "'
                f"select auth.jwt_session_init('${var}', true); "
                f"insert into todos (title) values ('{title}'); "
                f'select owner, title from todos order by id"')

    return [
        as_user("ALICE_TOKEN", "buy oat milk"),
        as_user("BOB_TOKEN", "fix the bike"),
        f'psql {admin} -c "select owner, title from todos order by id"',
    ]


def usage_text(settings, jwk_json, tokens):
    """What `up` prints once the stack is healthy; every command in it is run by a test."""
    commands = demo_commands(settings)
    return "\n".join([
        f"pg-session-jwt development stack is up: PostgreSQL {settings.major}, "
        f"compose project {settings.project}.",
        "",
        f"Connection strings (role {APP_USER}: Row Level Security applies to it):",
        f"  direct: {settings.url('db')}",
        f"  pooler: {settings.url('pooler')}   (pgbouncer, transaction mode)",
        *([f"  replica: {settings.url(REPLICA)}   (hot standby of db: read-only, same key; "
           "RLS gives the same rows for the same token)"] if settings.replica else []),
        f"  admin:  {settings.url('db', 'postgres', settings.postgres_password)}"
        "   (superuser: bypasses RLS)",
        "",
        f"Tokens for alice and bob, valid for {TOKEN_TTL // 60} minutes; get more with "
        f"curl '{settings.tokens_url('/token?sub=carol')}'.",
        "The issuer is for DEVELOPMENT ONLY: it signs a token for anyone who asks.",
        f"export ALICE_TOKEN={shlex.quote(tokens['alice'])}",
        f"export BOB_TOKEN={shlex.quote(tokens['bob'])}",
        "",
        "PGOPTIONS is not needed here: db fetches the issuer's keys itself, from its JWKS URL",
        f"({JWKS_URL}). That is also the only way through pgbouncer, which",
        "refuses a key in `options` (unsupported startup parameter). For a direct connection to a",
        "server without that URL, give the key per connection:",
        f"  # {pgoptions_export(jwk_json)}",
        "",
        "Row Level Security: alice adds a todo and sees only hers, bob only his, the admin both:",
        *commands,
        "Note: psql -c cannot pass the token as a bind parameter (psql 16+ can, with \\bind), so",
        "these commands put it in the query text, which pg_stat_activity shows to every session of",
        f"role {APP_USER} while it is the connection's last query: fine for a local demo; applications",
        "pass tokens as bind parameters (README: Deploying behind a pooler or gateway).",
        f"{APP_USER} is held to transaction-scoped sessions (pg_session_jwt.session_scope), hence the",
        "`true` in auth.jwt_session_init(token, true).",
        "Tokens may be presented again until they expire (with a JWKS URL, require_jti is off);",
        "fresh ones:",
        f"  export ALICE_TOKEN=$(curl -s '{settings.tokens_url('/token?sub=alice')}')",
        f"  export BOB_TOKEN=$(curl -s '{settings.tokens_url('/token?sub=bob')}')",
        "",
        "Key rotation: the issuer signs with a new key, db follows without a restart, and tokens",
        "of the retired key are refused once db has refreshed (add ?grace=10m to keep it longer):",
        f"  curl -s -X POST '{settings.tokens_url('/rotate')}'",
        "",
        "make logs follows the logs; make stop removes the stack and its data.",
    ])


# --- commands ----------------------------------------------------------------------------

def ensure_db_image(client, mx, entry, repo=matrix.DEFAULT_REPO):
    """Build <repo>:<major> of the matrix `entry` with builder/build.py when it is not there yet."""
    import docker

    from builder import build

    try:
        client.images.get(entry.tag(repo))
        return
    except docker.errors.ImageNotFound:
        pass
    say(SCOPE, f"{entry.tag(repo)} is missing; building it (a few minutes, once)")
    build.build_one(client, entry, mx, repo, refresh_base=False)


def up(settings, mx, client, compose, out=sys.stdout, timeout=240):
    """Start the stack (building what is missing), wait until healthy, print how to use it."""
    from builder import base_image

    running = [c for c in project_containers(client, settings.project) if c.status == "running"]
    if not running:
        busy = busy_ports(settings.active_ports)
        if busy:
            raise busy_ports_error(busy)
    ensure_db_image(client, mx, settings.entry, settings.image_repo)
    base = base_image.ensure(client, mx.default.suite, mx.mirror)
    build_helpers(client, base)
    say(SCOPE, f"starting compose project {settings.project}")
    if run_compose(compose, settings, "up", "-d", "--no-build", base_image=base,
                   check=False) != 0:
        # compose names the dependant that waited in vain; the log of the one that failed
        # says why.
        raise failed_service(project_containers(client, settings.project)) or UserError(
            f"`{' '.join(compose)} up` failed; see its output above, and `make logs`")
    say(SCOPE, "waiting until every service is healthy")
    wait_healthy(client, settings, timeout=timeout)
    text = usage_text(settings, fetch_jwk(settings),
                      {sub: fetch_token(settings, sub) for sub in ("alice", "bob")})
    print(text, file=out, flush=True)
    return text


def down(settings, compose):
    say(SCOPE, f"removing compose project {settings.project} with its volumes")
    run_compose(compose, settings, "down", "-v", "--remove-orphans", all_profiles=True)


def logs(settings, compose):
    try:
        run_compose(compose, settings, "logs", "-f", "--tail", "100", check=False,
                    all_profiles=True)
    except KeyboardInterrupt:
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m devtools.devstack",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "down", "logs"))
    parser.add_argument("--replica", action="store_true",
                        help="also start `replica`, a hot standby streaming from db (up only)")
    parser.add_argument("--pg", metavar="MAJOR", help="Postgres major (default: PG_MAJOR or the "
                        "default in images/versions.yaml)")
    args = parser.parse_args(argv)
    try:
        mx = matrix.load()
        settings = Settings.from_env(os.environ, mx, args.pg, replica=args.replica)
        client = connect()  # first, for its plain message when there is no Docker
        if args.command == "up":
            up(settings, mx, client, detect_compose())
        elif args.command == "down":
            down(settings, detect_compose())
        else:
            logs(settings, detect_compose())
    except UserError as exc:
        return failed(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
