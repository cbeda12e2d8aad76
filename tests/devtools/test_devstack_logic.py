"""devtools/devstack.py without Docker: settings, compose commands, checks, what `up` prints."""

import re
import shlex
import subprocess
import types

import pytest
import yaml

from builder import matrix
from devtools import devstack
from devtools.jwt import pgoptions_value
from runtime.errors import UserError

MX = matrix.load()


def settings(**env):
    return devstack.Settings.from_env(env, MX)


# --- settings ------------------------------------------------------------------------------

def test_defaults_come_from_the_matrix_and_stay_clear_of_5432():
    s = settings()
    assert s.major == MX.default.major
    assert s.project == "pg-session-jwt"
    assert s.ports == {"db": 55432, "pooler": 56432, "tokens": 58080, "replica": 55433,
                       "pg1": 55441, "pg2": 55442, "pg3": 55443}
    assert 5432 not in s.ports.values()
    assert s.data_volume == MX.default.volume


def test_major_from_pg_major_or_the_option():
    other = next(m.major for m in MX.majors if not m.is_default)
    assert settings(PG_MAJOR=str(other)).major == other
    assert devstack.Settings.from_env({"PG_MAJOR": "x"}, MX, pg=str(other)).major == other


def test_unknown_major_names_the_known_ones():
    with pytest.raises(UserError, match="unknown Postgres major '9'.*known majors"):
        settings(PG_MAJOR="9")


@pytest.mark.parametrize("env,message", [
    ({"PGJWT_DB_PORT": "abc"}, "PGJWT_DB_PORT='abc': expected a whole number from 1 to 65535"),
    ({"PGJWT_TOKENS_PORT": "70000"}, "PGJWT_TOKENS_PORT='70000'"),
    ({"PGJWT_POOL_SIZE": "0"}, "PGJWT_POOL_SIZE='0'"),
    ({"PGJWT_DB_PORT": "56432"}, "host ports must differ"),
    ({"PGJWT_PROJECT": "My Stack"}, "PGJWT_PROJECT='My Stack'"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(UserError, match=re.escape(message)):
        settings(**env)


def test_empty_variables_mean_the_default():
    assert settings(PGJWT_DB_PORT="").ports["db"] == 55432


def test_urls_quote_passwords():
    s = settings(PGJWT_APP_PASSWORD="p@ss word/:", PGJWT_POOLER_PORT="6000")
    assert s.url("pooler") == "postgresql://app:p%40ss%20word%2F%3A@127.0.0.1:6000/demo"
    assert s.url("db", "postgres", "x").startswith("postgresql://postgres:x@127.0.0.1:55432/")


# --- the compose file agrees with this module ------------------------------------------------

COMPOSE_TEXT = devstack.COMPOSE_FILE.read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
COMPOSE_CODE = "\n".join(line for line in COMPOSE_TEXT.splitlines()
                         if not line.lstrip().startswith("#"))
VARIABLES = dict(re.findall(r"\$\{(\w+):-([^}]*)\}", COMPOSE_CODE))


def test_compose_env_sets_every_variable_the_file_reads():
    env = settings().compose_env(base_image="pg-session-jwt-base:trixie")
    # PGJWT_TOKENS_ALG is for people who run compose by hand; `make run` keeps the default.
    assert set(VARIABLES) - set(env) == {"PGJWT_TOKENS_ALG"}
    assert env["PGJWT_BASE_IMAGE"] == "pg-session-jwt-base:trixie"
    assert not re.search(r"\$(?!\{\w+:-)", COMPOSE_CODE.replace("$$", "")), \
        "every variable in the compose file needs a default"


def test_compose_file_defaults_match_this_module():
    s = settings()
    for service, (var, _) in devstack.PORTS.items():
        assert VARIABLES[var] == str(s.ports[service]), var
    assert VARIABLES["PGJWT_APP_PASSWORD"] == s.app_password
    assert VARIABLES["PGJWT_POSTGRES_PASSWORD"] == s.postgres_password
    assert VARIABLES["PGJWT_REPLICATION_PASSWORD"] == s.replication_password
    assert VARIABLES["PGJWT_POOL_SIZE"] == str(s.pool_size)
    # `latest` is the default major's tag (builder/build.py), so no major is written here
    assert VARIABLES["PG_MAJOR"] == "latest"
    assert not re.search(r"pg-session-jwt:\d", COMPOSE_TEXT)


def test_compose_file_works_for_v1_and_v2():
    assert "version" not in COMPOSE  # compose spec: read by v1.27+ and v2
    assert set(COMPOSE["services"]) == {*devstack.SERVICES, devstack.REPLICA,
                                        *devstack.HA_SERVICES}
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):  # etcd publishes none
            assert port.startswith("127.0.0.1:"), (name, port)
        for dependency in service.get("depends_on", {}).values():
            assert dependency == {"condition": "service_healthy"}
    assert set(COMPOSE["services"]["db"]["depends_on"]) == {"tokens"}
    assert set(COMPOSE["services"]["pooler"]["depends_on"]) == {"db"}
    for name, service in COMPOSE["services"].items():
        if "build" in service:
            assert "-dev-" in service["image"], name
            # the image's own HEALTHCHECK for the Patroni nodes (FROM the db image)
            assert "healthcheck" in service or "DB_IMAGE" in service["build"]["args"], name


def test_db_fetches_the_keys_the_tokens_service_publishes():
    db, tokens = COMPOSE["services"]["db"], COMPOSE["services"]["tokens"]
    env = db["environment"]
    assert env["PG_SESSION_JWT_JWKS_URL"] == devstack.JWKS_URL
    assert devstack.JWKS_URL.startswith("http://tokens:8080/")  # the service's own port
    assert "PG_SESSION_JWT_JWK_FILE" not in env and "PG_SESSION_JWT_JWK" not in env
    assert env["PG_SESSION_JWT_JWKS_ALLOW_HTTP"] == "on"
    # the private key has a volume of its own that db never mounts
    assert not any(v.startswith(("tokens-key:", "issuer-jwk:")) for v in db["volumes"])
    assert any(v.startswith("tokens-key:") for v in tokens["volumes"])


# --- compose commands ----------------------------------------------------------------------

def fake_runner(outcomes):
    """A subprocess.run stand-in: `outcomes` maps the first word(s) to a returncode or OSError."""
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        outcome = outcomes[" ".join(cmd[:-1])]
        if isinstance(outcome, Exception):
            raise outcome
        return subprocess.CompletedProcess(cmd, outcome, "", "")

    run.calls = calls
    return run


def test_detect_compose_prefers_v2():
    run = fake_runner({"docker compose": 0, "docker-compose": 0})
    assert devstack.detect_compose(run) == ["docker", "compose"]
    assert run.calls == [["docker", "compose", "version"]]


@pytest.mark.parametrize("v2", [1, FileNotFoundError("docker")])
def test_detect_compose_falls_back_to_v1(v2):
    assert devstack.detect_compose(fake_runner({"docker compose": v2, "docker-compose": 0})) \
        == ["docker-compose"]


def test_detect_compose_without_either_says_what_to_install():
    run = fake_runner({"docker compose": 1, "docker-compose": FileNotFoundError("x")})
    with pytest.raises(UserError, match="apt-get install docker-compose"):
        devstack.detect_compose(run)


def test_compose_command_names_project_and_file():
    assert devstack.compose_command(["docker-compose"], "p1", "up", "-d") == [
        "docker-compose", "-p", "p1", "-f", str(devstack.COMPOSE_FILE), "up", "-d"]


# --- busy ports ----------------------------------------------------------------------------

def test_busy_ports_error_names_the_variable_and_a_way_out():
    busy = devstack.busy_ports({"db": 55432, "pooler": 56432, "tokens": 58080},
                               is_free=lambda port: port != 56432)
    assert busy == [("pooler", 56432)]
    message = str(devstack.busy_ports_error(busy))
    assert "56432 (pooler; set PGJWT_POOLER_PORT)" in message
    assert "PGJWT_POOLER_PORT=56433 make run" in message
    assert "\n" not in message


def test_port_is_free_sees_a_listener():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not devstack.port_is_free(sock.getsockname()[1])


# --- waiting -------------------------------------------------------------------------------

def container(service, status="running", health=None, log=b"last words\n"):
    state = {"Status": status}
    if health:
        state["Health"] = {"Status": health}
    return types.SimpleNamespace(
        attrs={"State": state}, labels={"com.docker.compose.service": service},
        status=status, logs=lambda tail: log)


class FakeClient:
    def __init__(self, *rounds):
        self.rounds = list(rounds)
        self.containers = self

    def list(self, all, filters):
        assert filters == {"label": "com.docker.compose.project=pg-session-jwt"}
        return self.rounds.pop(0) if len(self.rounds) > 1 else self.rounds[0]


def test_wait_healthy_waits_for_every_service():
    starting = [container("tokens", health="healthy"), container("db", health="starting")]
    ready = [container("tokens", health="healthy"), container("db", health="healthy"),
             container("pooler", health="healthy")]
    states = devstack.wait_healthy(FakeClient(starting, ready), settings(), timeout=5, poll=0)
    assert states == {"tokens": "healthy", "db": "healthy", "pooler": "healthy"}


@pytest.mark.parametrize("failing", [container("db", health="unhealthy"),
                                     container("db", status="exited")])
def test_wait_healthy_shows_the_failing_service_log(failing):
    client = FakeClient([container("tokens", health="healthy"), failing])
    with pytest.raises(UserError, match=r"service db is (unhealthy|exited).*\nlast words"):
        devstack.wait_healthy(client, settings(), timeout=5, poll=0)


def test_wait_healthy_gives_up_after_the_timeout():
    client = FakeClient([container("tokens", health="starting")])
    with pytest.raises(UserError, match="not healthy after 0s"):
        devstack.wait_healthy(client, settings(), timeout=0, poll=0)


# --- what `up` prints ----------------------------------------------------------------------

JWK = '{"crv":"Ed25519","kty":"OKP","x":"abc"}'
TOKENS = {"alice": "aaa.bbb.ccc", "bob": "ddd.eee.fff"}


def test_usage_text_lists_connections_tokens_and_commands():
    s = settings(PGJWT_DB_PORT="7001", PGJWT_POOLER_PORT="7002", PGJWT_TOKENS_PORT="7003")
    text = devstack.usage_text(s, JWK, TOKENS)
    assert "direct: postgresql://app:app@127.0.0.1:7001/demo" in text
    assert "pooler: postgresql://app:app@127.0.0.1:7002/demo" in text
    assert "export ALICE_TOKEN=aaa.bbb.ccc" in text.splitlines()
    assert "export BOB_TOKEN=ddd.eee.fff" in text.splitlines()
    assert "http://127.0.0.1:7003/token?sub=" in text
    assert "DEVELOPMENT ONLY" in text
    commands = [line for line in text.splitlines() if line.startswith("psql ")]
    assert commands == devstack.demo_commands(s)


def test_pgoptions_is_shown_commented_out_because_the_stack_does_not_need_it():
    lines = devstack.usage_text(settings(), JWK, TOKENS).splitlines()
    [line] = [line for line in lines if "PGOPTIONS=" in line]
    assert line.startswith("  # export PGOPTIONS=")
    assert shlex.split(line.strip()[2:]) == ["export", f"PGOPTIONS={pgoptions_value(JWK)}"]
    assert not any(line.startswith("export PGOPTIONS") for line in lines)


def test_demo_commands_are_one_transaction_each_through_the_pooler():
    s = settings(PGJWT_APP_PASSWORD="it's")
    alice, bob, admin = devstack.demo_commands(s)
    for command, var in ((alice, "ALICE_TOKEN"), (bob, "BOB_TOKEN")):
        words = shlex.split(command)
        assert words[:2] == ["psql", s.url("pooler")]
        assert words[2] == "-c" and len(words) == 4  # one -c: one transaction via pgbouncer
        assert f"auth.jwt_session_init('${var}', true)" in words[3]
    assert shlex.split(admin)[1] == s.url("db", "postgres", s.postgres_password)


def test_main_reports_bad_settings_on_one_line(monkeypatch, capsys):
    monkeypatch.setenv("PGJWT_DB_PORT", "nope")
    assert devstack.main(["down"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: PGJWT_DB_PORT='nope'") and err.count("\n") == 1


def test_interpolate_reads_variables_with_their_defaults():
    assert devstack.interpolate("${A:-x}:${B:-y}", {"A": "1"}) == "1:y"
    assert devstack.interpolate("${A:-x}", {"A": ""}) == "x"  # compose: `:-` also for empty


def test_helper_builds_come_from_the_compose_file():
    env = settings().compose_env(base_image="pg-session-jwt-base:trixie")
    builds = devstack.helper_builds(COMPOSE, env, settings().services)
    assert [b[0] for b in builds] == ["pg-session-jwt-dev-tokens:latest",
                                      "pg-session-jwt-dev-pooler:latest"]
    for _, context, dockerfile, args in builds:
        assert (context / dockerfile).is_file()
        assert args == {"BASE_IMAGE": "pg-session-jwt-base:trixie"}
    # the tokens image copies the token tool, so its context is the repository
    assert builds[0][1] == matrix.ROOT


def test_ha_helper_builds_put_patroni_on_this_stacks_db_image_once():
    ha = devstack.Settings.from_env({"PG_MAJOR": "15", "PGJWT_IMAGE_REPO": "mine"}, MX, ha=True)
    builds = devstack.helper_builds(COMPOSE, ha.compose_env(base_image="base"), ha.services)
    tags = [b[0] for b in builds]
    assert tags == ["pg-session-jwt-dev-tokens:latest", "pg-session-jwt-dev-etcd:latest",
                    "mine-dev-patroni:15", "pg-session-jwt-dev-haproxy:latest",
                    "pg-session-jwt-dev-pooler:latest"]
    patroni = builds[2]
    assert patroni[3] == {"DB_IMAGE": "mine:15"}
    assert patroni[1] == matrix.ROOT / "deploy" / "patroni"  # what users take, not a copy


def test_helper_builds_refuse_unexpected_build_arguments():
    doc = yaml.safe_load(COMPOSE_TEXT)
    doc["services"]["pooler"]["build"]["args"]["EXTRA"] = "x"
    with pytest.raises(UserError, match="pooler: expected one build argument"):
        devstack.helper_builds(doc, {}, ["pooler"])


# --- the replica ------------------------------------------------------------------------------

def test_replica_is_a_profile_that_up_enables_and_down_always_removes():
    replica = COMPOSE["services"][devstack.REPLICA]
    assert replica["profiles"] == [devstack.REPLICA]
    assert all(devstack.REPLICA not in s.get("profiles", []) for n, s in COMPOSE["services"].items()
               if n != devstack.REPLICA)
    assert settings().compose_env()["COMPOSE_PROFILES"] == ""
    assert settings().compose_env(all_profiles=True)["COMPOSE_PROFILES"] == "replica,ha"
    with_replica = devstack.Settings.from_env({}, MX, replica=True)
    assert with_replica.compose_env()["COMPOSE_PROFILES"] == devstack.REPLICA
    assert with_replica.services == (*devstack.SERVICES, devstack.REPLICA)
    assert devstack.REPLICA not in settings().active_ports


def test_replica_shares_db_image_environment_and_key_but_not_its_data():
    db, replica = COMPOSE["services"]["db"], COMPOSE["services"][devstack.REPLICA]
    assert replica["image"] == db["image"]
    assert replica["environment"] == db["environment"]
    assert replica["depends_on"] == {"db": {"condition": "service_healthy"}}
    data = [v for v in replica["volumes"] if v.startswith("replica-data:")]
    assert data and not any(v.startswith("db-data:") for v in replica["volumes"])
    # the same mount point as db's data: the image's VOLUME for the major
    assert data[0].split(":", 1)[1] == next(v for v in db["volumes"]
                                            if v.startswith("db-data:")).split(":", 1)[1]


@pytest.mark.parametrize("entry", MX.majors, ids=lambda m: f"pg{m.major}")
def test_data_volume_follows_the_major(entry):
    s = devstack.Settings.from_env({"PG_MAJOR": str(entry.major)}, MX)
    assert s.compose_env()["PGJWT_DATA_VOLUME"] == entry.volume


def test_printed_text_names_the_replica_only_when_it_runs():
    tokens = {"alice": "a.b.c", "bob": "d.e.f"}
    assert "replica:" not in devstack.usage_text(settings(), "{}", tokens)
    with_replica = devstack.Settings.from_env({"PGJWT_REPLICA_PORT": "6001"}, MX, replica=True)
    text = devstack.usage_text(with_replica, "{}", tokens)
    assert "  replica: postgresql://app:app@127.0.0.1:6001/demo" in text


# --- the HA profile (Patroni) ------------------------------------------------------------------

HA_SETTINGS = devstack.Settings.from_env({}, MX, ha=True)


def test_ha_runs_patroni_nodes_instead_of_db_and_takes_its_ports():
    s = HA_SETTINGS
    assert s.services == devstack.HA_SERVICES
    assert "db" not in s.services and "pooler" not in s.services
    assert s.compose_env()["COMPOSE_PROFILES"] == devstack.HA
    # haproxy (the leader) publishes db's port, ha-pooler the pooler's: the same URLs
    assert set(s.active_ports) == {"db", "pooler", "tokens", *devstack.HA_NODES}
    for name, publisher in devstack.HA_PUBLISHERS.items():
        ports = COMPOSE["services"][publisher]["ports"]
        assert ports == [f"127.0.0.1:${{{devstack.PORTS[name][0]}:-{s.ports[name]}}}:"
                         f"{ports[0].rsplit(':', 1)[1]}"]
    for node in devstack.HA_NODES:
        assert COMPOSE["services"][node]["ports"] == [
            f"127.0.0.1:${{{devstack.PORTS[node][0]}:-{s.ports[node]}}}:5432"]
    assert set(settings().active_ports) == {"db", "pooler", "tokens"}


def test_ha_and_replica_together_is_refused():
    with pytest.raises(UserError, match="REPLICA=1.*HA=1"):
        devstack.Settings.from_env({}, MX, replica=True, ha=True)


def test_ha_services_are_in_the_ha_profile_only():
    profiles = {name: s.get("profiles") for name, s in COMPOSE["services"].items()}
    assert profiles == {**{n: None for n in devstack.SERVICES}, devstack.REPLICA: ["replica"],
                        **{n: [devstack.HA] for n in devstack.HA_SERVICES if n != "tokens"}}


def test_ha_nodes_share_db_identity_setup_and_keep_their_own_data():
    db = COMPOSE["services"]["db"]
    identity = {k: v for k, v in db["environment"].items() if k.startswith("PG_SESSION_JWT_")}
    assert identity["PG_SESSION_JWT_JWKS_URL"] == devstack.JWKS_URL
    volumes = set()
    for node in devstack.HA_NODES:
        service = COMPOSE["services"][node]
        env = service["environment"]
        assert {k: v for k, v in env.items() if k.startswith("PG_SESSION_JWT_")} == identity
        assert env["POSTGRES_DB"] == db["environment"]["POSTGRES_DB"] == devstack.DB_NAME
        assert env["APP_PASSWORD"] == db["environment"]["APP_PASSWORD"]
        assert service["hostname"] == node  # PATRONI_NAME and the addresses default to it
        assert "PATRONI_NAME" not in env
        data = [v for v in service["volumes"] if v.startswith(f"{node}-data:")]
        assert len(data) == 1 and data[0].endswith("${PGJWT_DATA_VOLUME:-/var/lib/postgresql/data}")
        volumes.update(service["volumes"])
        # the demo schema, not db's pg_hba edit (Patroni writes pg_hba.conf)
        assert any("10-demo-schema.sh" in v for v in service["volumes"])
        assert not any("20-replication.sh" in v or v.startswith("./initdb:")
                       for v in service["volumes"])
        assert set(service["depends_on"]) == {"tokens", "etcd"}
    assert len([v for v in volumes if "-data:" in v]) == len(devstack.HA_NODES)


def test_haproxy_routes_to_each_node_by_patronis_primary_check():
    cfg = (matrix.ROOT / "compose" / "ha" / "haproxy" / "haproxy.cfg").read_text()
    assert re.findall(r"^\s+server (\w+) (\w+):5432$", cfg, re.M) == [
        (n, n) for n in devstack.HA_NODES]
    assert "uri /primary" in cfg and "check port 8008" in cfg
    assert "on-marked-down shutdown-sessions" in cfg
    pooler = COMPOSE["services"][devstack.HA_POOLER]
    assert pooler["environment"]["DB_HOST"] == "haproxy"
    assert pooler["image"] == COMPOSE["services"]["pooler"]["image"]


def member(name, role, state="streaming", lag=0):
    m = {"Member": name, "Role": role, "State": state, "TL": 1}
    if role != "Leader":
        m["Lag in MB"] = lag
    return m


@pytest.mark.parametrize("members,ready", [
    ([member("pg1", "Leader", "running"), member("pg2", "Sync Standby"),
      member("pg3", "Replica")], True),
    # Patroni 3.0 calls a streaming replica `running`
    ([member("pg1", "Replica", "running"), member("pg2", "Leader", "running"),
      member("pg3", "Sync Standby", "running")], True),
    ([member("pg1", "Leader", "running"), member("pg2", "Replica"),
      member("pg3", "Replica")], False),                       # no synchronous standby yet
    ([member("pg1", "Leader", "running"), member("pg2", "Sync Standby")], False),  # pg3 missing
    ([member("pg1", "Leader", "running"), member("pg2", "Sync Standby"),
      member("pg3", "Replica", "creating replica", None)], False),
    ([member("pg1", "Leader", "running"), member("pg2", "Sync Standby", lag=3),
      member("pg3", "Replica")], False),
    ([member("pg1", "Replica"), member("pg2", "Sync Standby"), member("pg3", "Replica")], False),
    # Patroni 4.1: receive and replay lag in bytes instead of `Lag in MB`
    ([member("pg1", "Leader", "running"),
      {"Member": "pg2", "Role": "Sync Standby", "State": "streaming", "Receive Lag": 0,
       "Replay Lag": 0},
      {"Member": "pg3", "Role": "Replica", "State": "streaming", "Receive Lag": 0,
       "Replay Lag": 0}], True),
    ([member("pg1", "Leader", "running"),
      {"Member": "pg2", "Role": "Sync Standby", "State": "streaming", "Receive Lag": 0,
       "Replay Lag": 8192},
      member("pg3", "Replica")], False),
    (None, False),
])
def test_cluster_ready_needs_a_leader_and_every_replica_streaming(members, ready):
    assert devstack.cluster_ready(members) is ready
    assert devstack.leader(members) == (next((m["Member"] for m in members or ()
                                              if m["Role"] == "Leader"), None))


def test_printed_text_of_the_ha_stack_names_nodes_and_patronictl():
    tokens = {"alice": "a.b.c", "bob": "d.e.f"}
    containers = {n: f"proj-{n}-1" for n in devstack.HA_NODES}
    text = devstack.usage_text(HA_SETTINGS, "{}", tokens, containers)
    assert "  direct: postgresql://app:app@127.0.0.1:55432/demo   (HAProxy: the Patroni leader)" \
        in text
    for node, port in (("pg1", 55441), ("pg2", 55442), ("pg3", 55443)):
        assert f"  {node}:    postgresql://app:app@127.0.0.1:{port}/demo   (proj-{node}-1)" in text
    assert "  docker exec proj-pg1-1 patronictl list" in text
    assert "patronictl" not in devstack.usage_text(settings(), "{}", tokens)
