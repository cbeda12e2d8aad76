"""Behaviours of the official postgres image (docker-library/postgres) that this image keeps,
on every major: the data layout of each major (18+: PGDATA per major under one VOLUME, data at
the old place refused), and the entrypoint's details read side by side with upstream's —
sourced init scripts get `psql` and `docker_process_sql`, POSTGRES_HOST_AUTH_METHOD follows
password_encryption, POSTGRES_INITDB_ARGS is evaluated (quotes work), PGPASSWORD lets init
scripts log in when local connections need a password, NOTIFY_SOCKET is hidden from the
initialization server, and `-C` runs after initialization against the real configuration.
"""

import uuid

import pytest

from builder import containers, matrix
from builder.containers import DEFAULT_PASSWORD

pytestmark = pytest.mark.container

NOTIFY_SOCKET = "/var/run/postgresql/notify-test"


@pytest.fixture(scope="module")
def entry(pg_major):
    return matrix.load().entry(pg_major)


@pytest.fixture(scope="session")
def new_volume(docker_client):
    """make() → a fresh named volume, removed at session end (after the containers using it)."""
    made = []

    def make():
        made.append(docker_client.volumes.create(f"pgjwt-test-{uuid.uuid4().hex[:10]}",
                                                 labels={"io.pg-session-jwt.test": "1"}))
        return made[-1].name

    yield make
    for vol in made:
        vol.remove(force=True)


@pytest.fixture
def volume(new_volume):
    return new_volume()


def listing(docker_client, image, volume, root):
    """Every path in `volume` (mounted at `root`) with type, mode, owner, size and mtime."""
    code, out = containers.run_once(docker_client, image,
                                    ["find", root, "-printf", r"%P %y %m %u:%g %s %T@\n"],
                                    volumes={volume: {"bind": root, "mode": "ro"}})
    assert code == 0, out
    return sorted(out.splitlines())


# --- the data layout ------------------------------------------------------------------------

def test_layout_is_the_matrix_entrys(docker_client, image, entry):
    assert containers.data_layout(docker_client, image) == (entry.volume, entry.pgdata)


@pytest.mark.destructive
def test_one_volume_at_the_declared_path_keeps_the_data(docker_client, image, entry, volume,
                                                         start_container):
    """The official advice per major (`-v data:/var/lib/postgresql` from 18 on): the data goes
    into that volume, not into an anonymous one below it, and survives a new container."""
    mount = {volume: {"bind": entry.volume, "mode": "rw"}}
    first = start_container(image, volumes=mount)
    assert [m["Type"] for m in first.reload()["Mounts"]] == ["volume"]  # no anonymous volume
    with first.connect() as conn:
        conn.execute("create table kept (n int); insert into kept values (42)")
    containers.stop(first)
    second = start_container(image, volumes=mount, password=DEFAULT_PASSWORD)
    with second.connect() as conn:
        assert conn.execute("select n from kept").fetchone() == (42,)
        assert conn.execute("show data_directory").fetchone() == (entry.pgdata,)


@pytest.mark.destructive
def test_data_at_the_old_place_is_refused_from_18_on(docker_client, image, entry, volume,
                                                     start_container):
    if not entry.major_dir_layout:
        pytest.skip(f"PostgreSQL {entry.major} keeps the old layout: {matrix.OLD_PGDATA} is its PGDATA")
    old = {volume: {"bind": matrix.OLD_PGDATA, "mode": "rw"}}
    # A volume as an image with the old layout left it (this image with the old PGDATA).
    made = start_container(image, volumes=old, environment={"PGDATA": matrix.OLD_PGDATA})
    containers.stop(made)
    before = listing(docker_client, image, volume, matrix.OLD_PGDATA)
    refused = start_container(image, volumes=old, wait=False)
    assert refused.wait_exit() == 1
    logs = refused.logs()
    assert f"PostgreSQL {entry.major} database at {matrix.OLD_PGDATA}" in logs
    assert "pg_upgrade" in logs and "mount one volume at /var/lib/postgresql" in logs
    assert f"set PGDATA={matrix.OLD_PGDATA}" in logs
    assert listing(docker_client, image, volume, matrix.OLD_PGDATA) == before
    # What the message offers: the old directory, named as PGDATA, starts as it is.
    kept = start_container(image, volumes=old, environment={"PGDATA": matrix.OLD_PGDATA})
    with kept.connect() as conn:
        assert conn.execute("show data_directory").fetchone() == (matrix.OLD_PGDATA,)


@pytest.mark.destructive
def test_arbitrary_uid_with_the_default_pgdata(docker_client, image, entry, volume,
                                               start_container):
    """From 18 on PGDATA is below the volume, so `--user` needs nothing else (the uid creates
    its own directory); before, PGDATA is the volume's root, which that uid does not own, and
    the refusal says what to do."""
    mount = {volume: {"bind": entry.volume, "mode": "rw"}}
    pg = start_container(image, user="4321:0", volumes=mount, wait=entry.major_dir_layout)
    if entry.major_dir_layout:
        with pg.connect() as conn:
            assert conn.execute("show data_directory").fetchone() == (entry.pgdata,)
        assert pg.exec(["stat", "-c", "%u", entry.pgdata])[1].strip() == "4321"
    else:
        assert pg.wait_exit() == 1
        assert "but this container runs as uid 4321" in pg.logs()
        assert f"PGDATA={entry.pgdata}/pgdata" in pg.logs()


# --- the entrypoint, function by function -------------------------------------------------

# Sourced (no execute bit): uses the `psql` array and docker_process_sql as upstream's init
# scripts may, and records what the initialization server's environment held.
SOURCED = r"""
"${psql[@]}" -c 'create table fidelity (k text primary key, v text)'
pid=$(head -n 1 "$PGDATA/postmaster.pid")
notify=$(tr '\0' '\n' < "/proc/$pid/environ" | sed -n 's/^NOTIFY_SOCKET=//p')
docker_process_sql --set v="[$notify]" <<< "insert into fidelity values ('temp_notify', :'v')"
"""


@pytest.fixture(scope="module")
def initialized(image, start_container, tmp_path_factory):
    initdb = tmp_path_factory.mktemp("initdb")
    initdb.chmod(0o755)
    (initdb / "10-sourced.sh").write_text(SOURCED)
    (initdb / "10-sourced.sh").chmod(0o644)
    env = {
        # Quoted values: only an evaluated POSTGRES_INITDB_ARGS passes them to initdb unquoted.
        # Local logins need a password, so the init scripts' psql needs PGPASSWORD.
        "POSTGRES_INITDB_ARGS": '--auth-local="scram-sha-256" --data-checksums',
        "NOTIFY_SOCKET": NOTIFY_SOCKET,
    }
    return start_container(image, environment=env, command=["-c", "password_encryption=md5"],
                           volumes={str(initdb): {"bind": "/docker-entrypoint-initdb.d",
                                                  "mode": "ro"}})


def hba_rules(pg):
    code, out = pg.exec(["bash", "-c", 'grep -v "^#" "$PGDATA/pg_hba.conf" | grep .'])
    assert code == 0, out
    return [line.split() for line in out.splitlines()]


def test_sourced_scripts_get_the_psql_array_and_docker_process_sql(initialized):
    with initialized.connect() as conn:
        assert conn.execute("select count(*) from fidelity").fetchone() == (1,)


def test_initdb_args_are_evaluated_so_quotes_work(initialized):
    with initialized.connect() as conn:
        assert conn.execute("show data_checksums").fetchone() == ("on",)
    rules = hba_rules(initialized)
    assert [r[-1] for r in rules if r[0] == "local"] == ["scram-sha-256"] * 2


def test_host_auth_method_follows_password_encryption(initialized):
    rules = hba_rules(initialized)
    assert rules[-1] == ["host", "all", "all", "all", "md5"]
    with initialized.connect() as conn:
        assert conn.execute("show password_encryption").fetchone() == ("md5",)


def test_notify_socket_is_hidden_from_the_initialization_server_only(initialized):
    with initialized.connect() as conn:
        assert conn.execute("select v from fidelity where k = 'temp_notify'").fetchone() == ("[]",)
    code, out = initialized.exec(["bash", "-c", "tr '\\0' '\\n' < /proc/1/environ"])
    assert code == 0 and f"NOTIFY_SOCKET={NOTIFY_SOCKET}" in out.splitlines(), out
    # The init scripts' password is not left in the server's environment.
    assert not any(line.startswith("PGPASSWORD=") for line in out.splitlines())


def test_dash_capital_c_runs_after_initialization_with_the_real_configuration(
        docker_client, image):
    code, out = containers.run_once(
        docker_client, image, ["-C", "work_mem", "-c", "work_mem=3MB"], entrypoint=None,
        environment={"POSTGRES_PASSWORD": DEFAULT_PASSWORD}, timeout=120)
    lines = out.strip().splitlines()
    assert code == 0, out
    assert "pg-session-jwt: initialization complete" in out
    assert lines[-1] == "3072"  # postgres -C prints work_mem in kB


@pytest.mark.destructive
def test_ensure_initdb_initializes_once_and_enforce_initdb_refuses_existing_data(
        docker_client, image, entry, volume, start_container):
    mount = {volume: {"bind": entry.volume, "mode": "rw"}}
    env = {"POSTGRES_PASSWORD": DEFAULT_PASSWORD, "POSTGRES_DB": "appdb"}

    def run(script):
        return containers.run_once(docker_client, image, [script], entrypoint=None,
                                   volumes=mount, environment=env, timeout=120)

    code, out = run("docker-ensure-initdb.sh")
    assert code == 0 and "initialization complete" in out, out
    assert "starting the server" not in out
    code, out = run("docker-ensure-initdb.sh")
    assert code == 0 and "already holds a database: nothing to initialize" in out, out
    before = listing(docker_client, image, volume, entry.volume)
    code, out = run("docker-enforce-initdb.sh")
    assert code == 1 and "docker-enforce-initdb.sh initializes only an empty data directory" in out
    assert listing(docker_client, image, volume, entry.volume) == before
    pg = start_container(image, volumes=mount)  # the server starts on what ensure made
    assert "skipping initialization" in pg.logs()
    with pg.connect(dbname="appdb") as conn:
        assert conn.execute("select count(*) from pg_extension "
                            "where extname = 'pg_session_jwt'").fetchone() == (1,)


def test_enforce_initdb_initializes_an_empty_volume(docker_client, image, entry, volume):
    code, out = containers.run_once(
        docker_client, image, ["docker-enforce-initdb.sh"], entrypoint=None,
        volumes={volume: {"bind": entry.volume, "mode": "rw"}},
        environment={"POSTGRES_PASSWORD": DEFAULT_PASSWORD}, timeout=120)
    assert code == 0 and "initialization complete" in out, out


def test_help_and_version_still_skip_initialization(docker_client, image, pg_major):
    code, out = containers.run_once(docker_client, image, ["--version"], entrypoint=None)
    assert code == 0 and f"(PostgreSQL) {pg_major}." in out
    assert "initdb" not in out and "initialization" not in out
