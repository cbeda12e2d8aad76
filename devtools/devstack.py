"""The local development stack in compose/: what `make run`, `make stop` and `make logs` do.

    python -m devtools.devstack up [--pg 17] [--replica | --ha]
                                              build what is missing, start, wait, print how to use
                                              it; --replica adds a hot standby of db; --ha runs
                                              three nodes under Patroni with etcd instead of db
    python -m devtools.devstack down           remove the stack's containers, volumes and network
    python -m devtools.devstack logs           follow the stack's logs

Settings come from the environment, all optional: PG_MAJOR (default: the matrix default),
PGJWT_PROJECT (compose project, default pg-session-jwt), PGJWT_DB_PORT, PGJWT_POOLER_PORT,
PGJWT_TOKENS_PORT, PGJWT_REPLICA_PORT, PGJWT_PG1_PORT, PGJWT_PG2_PORT, PGJWT_PG3_PORT (host
ports on 127.0.0.1, defaults 55432, 56432, 58080, 55433, 55441, 55442, 55443), PGJWT_POOL_SIZE,
PGJWT_IMAGE_REPO (repository of the db image, default pg-session-jwt),
PGJWT_POSTGRES_PASSWORD, PGJWT_APP_PASSWORD and PGJWT_REPLICATION_PASSWORD (development
defaults). The same names are what compose/docker-compose.yml reads, so plain compose and this
module agree.
"""

import argparse
import json
import os
import re
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
# The compose profile `ha` (`up --ha`, `make run HA=1`): these services instead of db and
# pooler. HA_NODES run PostgreSQL under Patroni; haproxy takes db's host port (it routes to
# the current leader) and HA_POOLER, pgbouncer in front of it, the pooler's.
HA = "ha"
HA_NODES = ("pg1", "pg2", "pg3")
HA_POOLER = "ha-pooler"
HA_SERVICES = ("tokens", "etcd", *HA_NODES, "haproxy", HA_POOLER)
HA_PUBLISHERS = {"db": "haproxy", "pooler": HA_POOLER}
# Build arguments a helper image may take: the local Debian base, or this stack's db image
# (the Patroni nodes are built FROM it). Helper images are the services with a `build:`
# section; db's image is built by builder/build.py.
HELPER_BUILD_ARGS = {"BASE_IMAGE", "DB_IMAGE"}
DB_NAME = "demo"
APP_USER = "app"
TOKEN_TTL = 3600
# service → (environment variable, default host port); defaults stay clear of 5432.
PORTS = {"db": ("PGJWT_DB_PORT", 55432), "pooler": ("PGJWT_POOLER_PORT", 56432),
         "tokens": ("PGJWT_TOKENS_PORT", 58080), REPLICA: ("PGJWT_REPLICA_PORT", 55433),
         **{node: (f"PGJWT_{node.upper()}_PORT", 55440 + i)
            for i, node in enumerate(HA_NODES, start=1)}}
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
    ha: bool = False
    replication_password: str = "replicator"

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
        if self.ha:
            return HA_SERVICES
        return SERVICES + ((REPLICA,) if self.replica else ())

    def publisher(self, name):
        """The service that publishes the host port of `name` (a key of PORTS)."""
        return HA_PUBLISHERS.get(name, name) if self.ha else name

    @property
    def active_ports(self):
        """{name: host port} (names as in PORTS) of the services this stack runs."""
        return {s: p for s, p in self.ports.items() if self.publisher(s) in self.services}

    @classmethod
    def from_env(cls, environ, mx, pg=None, replica=False, ha=False):
        """Settings from `environ` (and --pg, --replica, --ha), checked, with errors that name
        the variable."""
        if replica and ha:
            raise UserError("choose one of REPLICA=1 (a standby of db) and HA=1 (three nodes "
                            "under Patroni, which already replicate): not both")
        wanted = pg or environ.get("PG_MAJOR")
        entry = mx.entry(wanted) if wanted else mx.default
        ports = {}
        for service, (var, default) in PORTS.items():
            ports[service] = _int_setting(environ, var, default, 1, 65535)
        if len(set(ports.values())) != len(ports):
            raise UserError(f"host ports must differ: {ports}; set "
                            f"{', '.join(var for var, _ in PORTS.values())} to distinct values")
        project = environ.get("PGJWT_PROJECT", "pg-session-jwt")
        if not project or not all(c.isalnum() or c in "-_" for c in project) \
                or project != project.lower():
            raise UserError(f"PGJWT_PROJECT={project!r}: use lower-case letters, digits, - and _")
        return cls(entry=entry, project=project, ports=ports,
                   postgres_password=environ.get("PGJWT_POSTGRES_PASSWORD", "postgres"),
                   app_password=environ.get("PGJWT_APP_PASSWORD", "app"),
                   pool_size=_int_setting(environ, "PGJWT_POOL_SIZE", 10, 1, 10000),
                   image_repo=environ.get("PGJWT_IMAGE_REPO") or matrix.DEFAULT_REPO,
                   replica=replica, ha=ha,
                   replication_password=environ.get("PGJWT_REPLICATION_PASSWORD", "replicator"))

    @property
    def profiles(self):
        """The compose profiles this stack enables."""
        return [name for name, on in ((REPLICA, self.replica), (HA, self.ha)) if on]

    def compose_env(self, base_image=None, all_profiles=False):
        """The variables compose/docker-compose.yml interpolates, for this stack. Its profiles
        are enabled, or all of them for `all_profiles` (so that `down` removes a replica or
        the HA nodes whatever `up` was given)."""
        env = {
            "COMPOSE_PROFILES": ",".join([REPLICA, HA] if all_profiles else self.profiles),
            "PGJWT_DATA_VOLUME": self.data_volume,
            "PG_MAJOR": str(self.major),
            "PGJWT_IMAGE_REPO": self.image_repo,
            "PGJWT_POSTGRES_PASSWORD": self.postgres_password,
            "PGJWT_APP_PASSWORD": self.app_password,
            "PGJWT_REPLICATION_PASSWORD": self.replication_password,
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


def interpolate(text, env):
    """`text` with each `${VAR:-default}` replaced as compose does (VAR from `env`, else the
    default); the compose file uses no other form (tests/devtools/test_devstack_logic.py)."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], text)


def helper_builds(compose_doc, env, services):
    """(tag, context, dockerfile, buildargs) of the images of `services` that have a `build:`
    section, read from the compose file (the one description of them) and interpolated with
    `env` (compose_env: BASE_IMAGE is the local Debian base, DB_IMAGE this stack's db image);
    each tag once, as services share images (ha-pooler the pooler's, pg2 and pg3 pg1's)."""
    builds, seen = [], set()
    for name in services:
        service = compose_doc["services"][name]
        spec = service.get("build")
        if spec is None:
            continue
        args = spec.get("args", {})
        if len(args) != 1 or not set(args) <= HELPER_BUILD_ARGS:
            raise UserError(f"{COMPOSE_FILE}: service {name}: expected one build argument, "
                            f"{' or '.join(sorted(HELPER_BUILD_ARGS))}, not {sorted(args)}")
        tag = interpolate(service["image"], env)
        if tag in seen:
            continue
        seen.add(tag)
        builds.append((tag, (COMPOSE_FILE.parent / spec["context"]).resolve(),
                       spec.get("dockerfile", "Dockerfile"),
                       {k: interpolate(v, env) for k, v in args.items()}))
    return builds


def build_helpers(client, settings, base_image):
    """Build the helper images this stack runs (tokens, pooler; etcd, haproxy and the Patroni
    node with --ha) with the docker SDK (quick when cached): no dependence on compose's
    builder, which in v2 needs buildx."""
    import yaml

    env = settings.compose_env(base_image)
    for tag, context, dockerfile, buildargs in helper_builds(
            yaml.safe_load(COMPOSE_FILE.read_text()), env, settings.services):
        say(SCOPE, f"building {tag} from {next(iter(buildargs.values()))}")
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


# --- the Patroni cluster (--ha) -------------------------------------------------------------

def service_container(client, settings, service):
    """The running container of `service` in this stack, or None."""
    for container in project_containers(client, settings.project):
        if container.labels.get("com.docker.compose.service") == service \
                and container.status == "running":
            return container
    return None


PATRONICTL_LIST = ["patronictl", "list", "--format", "json"]


def patroni_members(client, settings):
    """`patronictl list` as seen from the first running node: a list of dicts (Member, Role,
    State, TL, "Lag in MB", ...), or None when no node answers."""
    for node in HA_NODES:
        container = service_container(client, settings, node)
        if container is None:
            continue
        result = container.exec_run(PATRONICTL_LIST, user="postgres")
        if result.exit_code == 0:
            try:
                return json.loads(result.output.decode())
            except ValueError:
                continue
    return None


# Patroni's names for a running replica's state: 3.0 says `running`, 4.x `streaming`.
REPLICA_STATES = ("running", "streaming")
# How far a replica is behind: `Lag in MB` up to 4.0, `Receive Lag` and `Replay Lag` (bytes)
# from 4.1 on.
LAG_COLUMNS = ("Lag in MB", "Receive Lag", "Replay Lag")


def replica_lag(member):
    """The largest lag `patronictl list` gives for `member`, or None when it gives none (a
    replica still being created, a leader)."""
    lags = [member[c] for c in LAG_COLUMNS if isinstance(member.get(c), int)]
    return max(lags) if lags else None


def cluster_ready(members, nodes=HA_NODES):
    """Whether `members` shows one leader and every other node of `nodes` replicating with no
    lag, at least one of them a synchronous standby."""
    if not members:
        return False
    by_name = {m.get("Member"): m for m in members}
    if set(by_name) != set(nodes):
        return False
    leaders = [m for m in members if m.get("Role") == "Leader" and m.get("State") == "running"]
    replicas = [m for m in members if m.get("Role") != "Leader"]
    return (len(leaders) == 1
            and all(m.get("State") in REPLICA_STATES and replica_lag(m) == 0
                    for m in replicas)
            and any(m.get("Role") == "Sync Standby" for m in replicas))


def leader(members):
    """The name of the running leader in `members`, or None."""
    for m in members or ():
        if m.get("Role") == "Leader" and m.get("State") == "running":
            return m.get("Member")
    return None


def wait_cluster(client, settings, timeout=180, poll=1.0):
    """Block until Patroni shows a leader and the other nodes streaming from it, one as the
    synchronous standby; UserError with what it shows if not."""
    deadline = time.monotonic() + timeout
    members = None
    while time.monotonic() < deadline:
        members = patroni_members(client, settings)
        if cluster_ready(members):
            return members
        failure = failed_service(project_containers(client, settings.project))
        if failure:
            raise failure
        time.sleep(poll)
    raise UserError(f"the Patroni cluster was not ready after {timeout}s (patronictl list: "
                    f"{members}); see `make logs`")


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


def ha_text(settings, containers):
    """The HA stack's part of what `up` prints: the nodes and how to watch and fail over."""
    first = containers.get(HA_NODES[0], f"<the {HA_NODES[0]} container>")
    return [
        "",
        "High availability: three PostgreSQL nodes under Patroni, with etcd. `direct` and",
        "`pooler` reach the current leader (HAProxy asks each node's Patroni REST API for",
        "/primary); every node has the same issuer's keys, roles and Row Level Security.",
        *[f"  {node}:    {settings.url(node)}   ({containers.get(node, node)})"
          for node in HA_NODES],
        "The cluster (leader, synchronous standby, replica, lag):",
        f"  docker exec {first} patronictl list",
        "Fail over: kill the leader's container; within about 30 s (Patroni's ttl) the",
        "synchronous standby is promoted and the pooler reaches it; `docker start` the old one",
        "and Patroni brings it back as a replica (pg_rewind):",
        "  docker kill <the leader's container, from patronictl list>",
    ]


def usage_text(settings, jwk_json, tokens, containers=None):
    """What `up` prints once the stack is healthy; every command in it is run by a test.
    `containers` names the HA nodes' containers ({node: container name})."""
    commands = demo_commands(settings)
    leader_note = "   (HAProxy: the Patroni leader)" if settings.ha else ""
    return "\n".join([
        f"pg-session-jwt development stack is up: PostgreSQL {settings.major}, "
        f"compose project {settings.project}.",
        "",
        f"Connection strings (role {APP_USER}: Row Level Security applies to it):",
        f"  direct: {settings.url('db')}{leader_note}",
        f"  pooler: {settings.url('pooler')}   (pgbouncer, transaction mode)",
        *([f"  replica: {settings.url(REPLICA)}   (hot standby of db: read-only, same key; "
           "RLS gives the same rows for the same token)"] if settings.replica else []),
        f"  admin:  {settings.url('db', 'postgres', settings.postgres_password)}"
        "   (superuser: bypasses RLS)",
        *(ha_text(settings, containers or {}) if settings.ha else []),
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
    build_helpers(client, settings, base)
    say(SCOPE, f"starting compose project {settings.project}")
    # The services by name: with --ha, db and pooler (in no profile) stay down.
    if run_compose(compose, settings, "up", "-d", "--no-build", *settings.services,
                   base_image=base, check=False) != 0:
        # compose names the dependant that waited in vain; the log of the one that failed
        # says why.
        raise failed_service(project_containers(client, settings.project)) or UserError(
            f"`{' '.join(compose)} up` failed; see its output above, and `make logs`")
    say(SCOPE, "waiting until every service is healthy")
    wait_healthy(client, settings, timeout=timeout)
    containers = {}
    if settings.ha:
        say(SCOPE, "waiting for Patroni: a leader, the other nodes streaming from it")
        wait_cluster(client, settings, timeout=timeout)
        containers = {node: service_container(client, settings, node).name for node in HA_NODES}
    text = usage_text(settings, fetch_jwk(settings),
                      {sub: fetch_token(settings, sub) for sub in ("alice", "bob")}, containers)
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
    parser.add_argument("--ha", action="store_true",
                        help="three PostgreSQL nodes under Patroni with etcd, HAProxy and the "
                        "pooler in front of the leader, instead of db (up only)")
    parser.add_argument("--pg", metavar="MAJOR", help="Postgres major (default: PG_MAJOR or the "
                        "default in images/versions.yaml)")
    args = parser.parse_args(argv)
    try:
        mx = matrix.load()
        settings = Settings.from_env(os.environ, mx, args.pg, replica=args.replica, ha=args.ha)
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
