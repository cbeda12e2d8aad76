"""The image as an operator's operand, the way CloudNativePG (and Patroni-style setups) run it:
no entrypoint, their own uid (CNPG's default postgresUID 26, and 999), `initdb` and
`postgres` from PATH, their own configuration carrying the key, the extension created with
`CREATE EXTENSION ... CASCADE`, and a standby made with pg_basebackup streaming from the
primary through a slot. Every major, both uids.
"""

import re
import time
import uuid

import pytest

from builder import containers
from devtools.jwt import mint, public_jwk

pytestmark = [pytest.mark.container, pytest.mark.slow]

# CloudNativePG's own layout: a volume at /var/lib/postgresql/data, PGDATA below it.
VOLUME = "/var/lib/postgresql/data"
DATA = f"{VOLUME}/pgdata"
# What CloudNativePG's instance manager runs from PATH (its docs' image requirements).
TOOLS = ("initdb", "postgres", "pg_ctl", "pg_controldata", "pg_basebackup", "du")

# An operator's bootstrap: its own initdb, hba and configuration, the key among the server
# parameters (CNPG writes `postgresql.parameters` into a file the configuration includes).
PRIMARY = r"""
set -Eeuo pipefail
initdb -D "$DATA" --username=postgres --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --encoding=UTF8 --auth-local=trust --auth-host=scram-sha-256
printf '%s\n' "listen_addresses = '*'" "pg_session_jwt.jwk = '$JWK'" >> "$DATA/postgresql.conf"
printf '%s\n' 'host all all all scram-sha-256' 'host replication all all scram-sha-256' \
    >> "$DATA/pg_hba.conf"
exec postgres -D "$DATA"
"""

STANDBY = r"""
set -Eeuo pipefail
PGPASSWORD=$POSTGRES_PASSWORD pg_basebackup --host="$PRIMARY_HOST" --username=postgres \
    --pgdata="$DATA" --wal-method=stream --write-recovery-conf --create-slot --slot="$SLOT" \
    --checkpoint=fast
exec postgres -D "$DATA"
"""


@pytest.fixture(scope="module", params=[26, 999], ids=["uid26", "uid999"])
def uid(request):
    return request.param


def run_as_operator(start_container, image, uid, script, environment, network):
    return start_container(
        image, entrypoint=["bash", "-c", script], command=None, user=f"{uid}:{uid}",
        environment={"DATA": DATA, **environment}, network=network,
        tmpfs={VOLUME: f"uid={uid},gid={uid},mode=0700"})


@pytest.fixture(scope="module")
def network(docker_client):
    net = docker_client.networks.create(f"pgjwt-{uuid.uuid4().hex[:10]}", driver="bridge",
                                        labels={"io.pg-session-jwt.test": "1"})
    yield net.name
    try:
        net.remove()
    except Exception:  # containers still attached are removed by their own fixture first
        pass


@pytest.fixture(scope="module")
def cluster(network, image, uid, keys, start_container):
    """{primary, standby, key}: the extension created on the primary, replayed on the standby."""
    key = keys["EdDSA"]
    primary = run_as_operator(start_container, image, uid, PRIMARY,
                              {"JWK": public_jwk(key)}, network)
    with primary.connect() as conn:
        conn.execute("create extension pg_session_jwt cascade")
    standby = run_as_operator(start_container, image, uid, STANDBY,
                              {"PRIMARY_HOST": primary.container.name, "SLOT": f"standby_{uid}"},
                              network)
    wait_replayed(primary, standby)
    return {"primary": primary, "standby": standby, "key": key}


def wait_replayed(primary, standby, timeout=60):
    with primary.connect() as conn:
        lsn = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with standby.connect() as conn:
        while time.monotonic() < deadline:
            if conn.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]).fetchone()[0]:
                return
            time.sleep(0.2)
    pytest.fail(f"the standby did not replay up to {lsn} within {timeout}s:\n{standby.logs()[-2000:]}")


def test_required_tools_are_on_path_and_the_locale_is_set(docker_client, image, uid, pg_major):
    script = ("for t in " + " ".join(TOOLS) + "; do command -v \"$t\" || exit 1; done; "
              "echo \"LANG=$LANG\"; locale -a; id -un")
    code, out = containers.run_once(docker_client, image, ["bash", "-c", script],
                                    user=f"{uid}:{uid}")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"/usr/lib/postgresql/{pg_major}/bin/initdb"
    assert "LANG=en_US.utf8" in lines and "en_US.utf8" in lines
    assert lines[-1] in ("cnpg", "postgres")  # a passwd entry: initdb needs one


def test_tag_carries_major_and_minor(docker_client, image, pg_major):
    repo = image.rpartition(":")[0]
    minors = [t for t in docker_client.images.get(image).tags
              if re.fullmatch(rf"{re.escape(repo)}:{pg_major}\.\d+", t)]
    assert len(minors) == 1, docker_client.images.get(image).tags


def test_servers_run_as_the_operators_uid(cluster, uid):
    for pg in (cluster["primary"], cluster["standby"]):
        status = pg.exec(["cat", "/proc/1/status"], user=str(uid))[1]
        assert next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:] \
            == [str(uid)] * 4


def test_standby_streams_through_its_slot(cluster, uid):
    with cluster["primary"].connect() as conn:
        rows = conn.execute("select slot_name, active from pg_replication_slots").fetchall()
        assert rows == [(f"standby_{uid}", True)]
        assert conn.execute("select state from pg_stat_replication").fetchall() == [("streaming",)]
    with cluster["standby"].connect() as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)


@pytest.mark.parametrize("role", ["primary", "standby"])
def test_key_from_the_server_configuration_verifies_tokens(cluster, role):
    pg = cluster[role]
    with pg.connect() as conn:
        assert conn.execute("select extversion is not null from pg_extension "
                            "where extname = 'pg_session_jwt'").fetchone() == (True,)
        conn.execute("select auth.init()")
        conn.execute("select auth.jwt_session_init(%s)", [mint(cluster["key"], sub="alice")])
        assert conn.execute("select auth.user_id()").fetchone() == ("alice",)
        # The key is the server's: a session cannot swap it.
        conn.execute("set pg_session_jwt.jwk = '{}'")
        conn.execute("select auth.jwt_session_init(%s)", [mint(cluster["key"], sub="bob")])
        assert conn.execute("select auth.user_id()").fetchone() == ("bob",)
