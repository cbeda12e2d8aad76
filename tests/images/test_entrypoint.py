"""The image's entrypoint and run-time behaviour, on every major.

One configured container (`main`) carries most checks: secrets from *_FILE, PGDATA below the
volume with a separate WAL directory, init scripts of every kind, a settings YAML, the
server-wide key from the environment and `-c` pass-through. Its named volume is then reused:
the clean stop, refused starts on an existing database (data directory unchanged), and the
restart that keeps data. Tests run in file order and the later ones stop `main`, so keep
checks of the running `main` above `test_clean_stop`. Refused starts on empty volumes and
the arbitrary-uid container get containers of their own.
"""

import gzip
import json
import lzma
import time
import uuid

import psycopg
import pytest

from builder import containers, matrix
from builder.containers import DEFAULT_PASSWORD
from devtools.jwt import generate_key, mint, public_jwk

pytestmark = pytest.mark.container

DATA = "/var/lib/postgresql/data"
PGDATA = f"{DATA}/pgdata"
WALDIR = f"{DATA}/wal"
AUDIENCE, ISSUER = "app", "https://issuer.test"
INIT_FILES = ["00-schema.sql", "01-exec.sh", "02-sourced.sh", "03-pause.sh", "04-gz.sql.gz",
              "05-xz.sql.xz", "06-zst.sql.zst"]
PAUSE_MARK = "/var/run/postgresql/init-paused"


def insert(name):
    return f"insert into init_log (name) values ('{name}');\n"


@pytest.fixture(scope="session")
def volumes(docker_client):
    """make() → a fresh named volume, removed at session end (after the containers using it)."""
    made = []

    def make():
        volume = docker_client.volumes.create(f"pgjwt-test-{uuid.uuid4().hex[:10]}",
                                              labels={"io.pg-session-jwt.test": "1"})
        made.append(volume)
        return volume.name

    yield make
    for volume in made:
        volume.remove(force=True)


def snapshot(docker_client, image, volume):
    """Every path under the volume with type, mode, owner, size and mtime. Mounted where the
    image declares its VOLUME, as Docker fills an empty volume from the image on first use."""
    code, out = containers.run_once(
        docker_client, image, ["find", DATA, "-printf", r"%P %y %m %u:%g %s %T@\n"],
        volumes={volume: {"bind": DATA, "mode": "ro"}})
    assert code == 0, out
    return sorted(out.splitlines())


@pytest.fixture(scope="module")
def files(tmp_path_factory, docker_client, image):
    """Host directories to mount: secrets, /docker-entrypoint-initdb.d, the settings YAML."""
    root = tmp_path_factory.mktemp("entrypoint")
    secrets = root / "secrets"
    initdb = root / "initdb"
    for folder in (secrets, initdb):
        folder.mkdir()
        folder.chmod(0o755)
    server_key, other_key = generate_key("EdDSA"), generate_key("ES256")
    (secrets / "user").write_text("alice\n")
    (secrets / "password").write_text(DEFAULT_PASSWORD + "\n")
    (secrets / "db").write_text("appdb")
    (secrets / "initdb_args").write_text("--wal-segsize=32")
    (secrets / "jwk").write_text(json.dumps(json.loads(public_jwk(server_key)), indent=2))
    (secrets / "private_jwk").write_text(server_key.export_private())

    (initdb / "00-schema.sql").write_text("create table init_log (n serial, name text);\n"
                                          + insert("00-schema.sql"))
    (initdb / "01-exec.sh").write_text(
        "#!/bin/bash\nset -e\npsql -v ON_ERROR_STOP=1 --username \"$POSTGRES_USER\" "
        f"--dbname \"$POSTGRES_DB\" -c \"{insert('01-exec.sh').strip()}\"\n")
    # docker_process_sql exists only when the file is sourced by the entrypoint.
    (initdb / "02-sourced.sh").write_text(f"docker_process_sql <<< \"{insert('02-sourced.sh')}\"\n")
    # Holds initialization until the test has probed the healthcheck (or for 15 s at most).
    (initdb / "03-pause.sh").write_text(
        f"touch {PAUSE_MARK}\nfor _ in $(seq 150); do [ -e {PAUSE_MARK} ] || break; sleep 0.1; done\n"
        f"rm -f {PAUSE_MARK}\n")
    (initdb / "04-gz.sql.gz").write_bytes(gzip.compress(insert("04-gz.sql.gz").encode()))
    (initdb / "05-xz.sql.xz").write_bytes(lzma.compress(insert("05-xz.sql.xz").encode()))
    (initdb / "06-zst.sql").write_text(insert("06-zst.sql.zst"))
    (initdb / "07-ignored.txt").write_text("this is not SQL\n")
    for f in initdb.iterdir():
        f.chmod(0o755 if f.name == "01-exec.sh" else 0o644)
    code, out = containers.run_once(docker_client, image, ["zstd", "-q", "--rm", "/i/06-zst.sql"],
                                    volumes={str(initdb): {"bind": "/i", "mode": "rw"}})
    assert code == 0, out

    # One override per major of the matrix, each with its own value, so the test sees that
    # the running major's override was picked.
    overrides = "".join(f"  {m.major}:\n    lock_timeout: {m.major}s\n" for m in matrix.load().majors)
    (root / "postgresql.yaml").write_text(
        "settings:\n  statement_timeout: 42s\n  pg_session_jwt.leeway: 5\n  app.tenant: acme\n"
        "overrides:\n" + overrides)
    (root / "postgresql.yaml").chmod(0o644)
    return {"root": root, "secrets": str(secrets), "initdb": str(initdb),
            "yaml": str(root / "postgresql.yaml"), "server_key": server_key, "other_key": other_key}


def main_environment(files):
    return {
        "PGDATA": PGDATA,
        "POSTGRES_USER_FILE": "/run/secrets/user",
        "POSTGRES_PASSWORD_FILE": "/run/secrets/password",
        "POSTGRES_DB_FILE": "/run/secrets/db",
        "POSTGRES_INITDB_ARGS_FILE": "/run/secrets/initdb_args",
        "POSTGRES_INITDB_WALDIR": WALDIR,
        "PG_SESSION_JWT_JWK_FILE": "/run/secrets/jwk",
        "PG_SESSION_JWT_AUDIENCE": AUDIENCE,
        "PG_SESSION_JWT_ISSUER": ISSUER,
    }


def main_volumes(files, volume):
    return {volume: {"bind": DATA, "mode": "rw"},
            files["secrets"]: {"bind": "/run/secrets", "mode": "ro"},
            files["initdb"]: {"bind": "/docker-entrypoint-initdb.d", "mode": "ro"},
            files["yaml"]: {"bind": "/etc/postgresql/postgresql.yaml", "mode": "ro"}}


def probe_during_init(pg, timeout=60):
    """Wait for 03-pause.sh, probe health while the initialization server runs, release it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pg.reload()
        if pg.container.status == "exited":
            break
        if pg.exec(["test", "-e", PAUSE_MARK])[0] == 0:
            probe = {"healthcheck": pg.exec(["healthcheck.sh"])[0],
                     "socket": pg.exec(["pg_isready", "-q", "-U", "alice", "-d", "appdb"])[0],
                     "status": pg.reload()["State"].get("Health", {}).get("Status")}
            pg.exec(["rm", "-f", PAUSE_MARK])
            return probe
        time.sleep(0.1)
    pytest.fail(f"03-pause.sh never ran:\n{pg.logs()[-3000:]}")


@pytest.fixture(scope="module")
def main(image, start_container, files, volumes):
    volume = volumes()
    pg = start_container(image, environment=main_environment(files), password=None,
                         volumes=main_volumes(files, volume), command=["-c", "work_mem=7MB"],
                         wait=False)
    pg.user, pg.dbname, pg.password = "alice", "appdb", DEFAULT_PASSWORD
    pg.extra["probe"] = probe_during_init(pg)
    containers.wait_ready(pg)
    pg.extra["volume"] = volume
    return pg


def scalar(pg, sql, *args, **connect):
    with pg.connect(**connect) as conn:
        return conn.execute(sql, args).fetchone()[0]


# --- the image -----------------------------------------------------------------------------

def test_image_declares_port_volume_stop_signal_and_healthcheck(docker_client, image, pg_major):
    config = docker_client.images.get(image).attrs["Config"]
    assert "5432/tcp" in config["ExposedPorts"]
    assert list(config["Volumes"]) == [matrix.load().entry(pg_major).volume]
    assert config["StopSignal"] == "SIGINT"
    assert config["Healthcheck"]["Test"] == ["CMD", "healthcheck.sh"]
    assert config["Entrypoint"] == ["docker-entrypoint.sh"] and config["Cmd"] == ["postgres"]


# --- the configured container, running -----------------------------------------------------

def test_file_secrets_make_the_superuser_and_database(main):
    with main.connect() as conn:
        row = conn.execute("select current_user, current_database(), rolsuper from pg_roles "
                           "where rolname = current_user").fetchone()
    assert row == ("alice", "appdb", True)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        main.connect(password="wrong").close()


def test_initdb_args_file_and_waldir(main):
    assert scalar(main, "show wal_segment_size") == "32MB"
    code, out = main.exec(["readlink", f"{PGDATA}/pg_wal"])
    assert (code, out.strip()) == (0, WALDIR)


def test_databases_are_utf8_with_the_english_locale(main):
    with main.connect() as conn:
        rows = conn.execute("select datname, pg_encoding_to_char(encoding), datcollate "
                            "from pg_database order by datname").fetchall()
    assert [r[0] for r in rows] == ["appdb", "postgres", "template0", "template1"]
    assert {r[1] for r in rows} == {"UTF8"}
    assert {r[2].lower().replace("-", "") for r in rows} == {"en_us.utf8"}
    assert "en_US.utf8" in main.exec(["locale", "-a"])[1].split()


def test_extension_is_in_every_database(main):
    query = "select string_agg(extname, ',' order by extname) from pg_extension"
    for db in ("template1", "postgres", "appdb"):
        assert scalar(main, query, dbname=db) == "pg_session_jwt,plpgsql,plpython3u", db
    with main.connect() as conn:
        conn.execute("create database later")
    assert scalar(main, query, dbname="later") == "pg_session_jwt,plpgsql,plpython3u"


def test_init_scripts_of_every_kind_run_in_order(main):
    with main.connect() as conn:
        names = [r[0] for r in conn.execute("select name from init_log order by n")]
    assert names == [f for f in INIT_FILES if f != "03-pause.sh"]
    assert "ignoring /docker-entrypoint-initdb.d/07-ignored.txt" in main.logs()


def test_not_healthy_while_initializing(main):
    probe = main.extra["probe"]
    assert probe["socket"] == 0, "the initialization server should answer on the socket"
    assert probe["healthcheck"] != 0
    assert probe["status"] == "starting"


def test_becomes_healthy(main):
    deadline = time.monotonic() + 30
    while (status := main.reload()["State"]["Health"]["Status"]) != "healthy":
        assert status == "starting" and time.monotonic() < deadline, main.reload()["State"]["Health"]
        time.sleep(0.5)


def test_postgres_is_pid_1_and_not_root(main):
    code, status = main.exec(["cat", "/proc/1/status"])
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["999"] * 4
    assert main.exec(["cat", "/proc/1/cmdline"])[1].split("\0")[0] == "postgres"


def test_command_line_settings_pass_through(main):
    assert scalar(main, "show work_mem") == "7MB"


def test_settings_yaml_is_rendered_at_start(main, pg_major):
    assert scalar(main, "show statement_timeout") == "42s"
    assert scalar(main, "show lock_timeout") == f"{pg_major}s"
    assert scalar(main, "select current_setting('app.tenant')") == "acme"
    assert scalar(main, "select current_setting('pg_session_jwt.leeway')") == "5"
    assert scalar(main, "select sourcefile from pg_settings where name = 'statement_timeout'") \
        == "/var/run/postgresql/pg-session-jwt.conf"


def test_server_wide_key_audience_and_issuer_from_the_environment(main, files):
    with main.connect() as conn:
        jwk, aud, iss = conn.execute(
            "select current_setting('pg_session_jwt.jwk'), current_setting('pg_session_jwt.audience'),"
            " current_setting('pg_session_jwt.issuer')").fetchone()
    assert json.loads(jwk) == json.loads(public_jwk(files["server_key"]))
    assert (aud, iss) == (AUDIENCE, ISSUER)


def verified_user(pg, token, **connect):
    with pg.connect(**connect) as conn:
        conn.execute("select auth.init()")
        conn.execute("select auth.jwt_session_init(%s)", (token,))
        return conn.execute("select auth.user_id()").fetchone()[0]


def test_tokens_verify_with_the_server_wide_key(main, files):
    token = mint(files["server_key"], {"aud": AUDIENCE, "iss": ISSUER}, sub="user-1")
    assert verified_user(main, token) == "user-1"
    forged = mint(files["other_key"], {"aud": AUDIENCE, "iss": ISSUER}, sub="user-1")
    with pytest.raises(psycopg.Error):
        verified_user(main, forged)


def test_key_in_the_startup_packet_wins(main, files):
    other = public_jwk(files["other_key"])
    claims = {"aud": AUDIENCE, "iss": ISSUER}
    assert scalar(main, "select current_setting('pg_session_jwt.jwk')", jwk=other) == other
    assert verified_user(main, mint(files["other_key"], claims, sub="user-2"), jwk=other) == "user-2"
    with pytest.raises(psycopg.Error):
        verified_user(main, mint(files["server_key"], claims, sub="user-2"), jwk=other)


# --- the configured container's volume, after it stops -------------------------------------

@pytest.fixture(scope="module")
def stopped(main, docker_client, image):
    """Stop `main` (docker stop) and report how; its volume stays for the tests below."""
    with main.connect() as conn:
        conn.execute("create table kept (v text); insert into kept values ('still here')")
    started = time.monotonic()
    main.container.stop(timeout=30)
    seconds = time.monotonic() - started
    return {"seconds": seconds, "exit": main.wait_exit(), "logs": main.logs(),
            "volume": main.extra["volume"],
            "snapshot": snapshot(docker_client, image, main.extra["volume"])}


@pytest.mark.slow
@pytest.mark.destructive
def test_clean_stop_within_seconds(stopped):
    assert stopped["exit"] == 0, stopped["logs"][-2000:]
    assert stopped["seconds"] < 5
    assert "received fast shutdown request" in stopped["logs"]
    assert stopped["logs"].rstrip().endswith("database system is shut down")


REFUSED_ON_EXISTING = {
    "jwk-not-json": ({"PG_SESSION_JWT_JWK": "{\"kty\": \"OKP\","}, None,
                     "error: PG_SESSION_JWT_JWK: pg_session_jwt.jwk is unusable: not valid JSON"),
    "jwk-symmetric": ({"PG_SESSION_JWT_JWK": "{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}"}, None,
                      "error: PG_SESSION_JWT_JWK: pg_session_jwt.jwk is unusable: symmetric keys"),
    "jwk-file-private": ({"PG_SESSION_JWT_JWK_FILE": "/run/secrets/private_jwk"}, None,
                         "error: PG_SESSION_JWT_JWK_FILE: pg_session_jwt.jwk is unusable: "
                         "the key has private key members"),
    "issuer-two-lines": ({"PG_SESSION_JWT_ISSUER": "a\nb"}, None,
                         "error: PG_SESSION_JWT_ISSUER: must be one line"),
    "yaml-syntax": ({}, "settings:\n  work_mem: 8MB\n bad: [\n",
                    "error: /etc/postgresql/postgresql.yaml:3: invalid YAML"),
    "yaml-unknown-name": ({}, "settings:\n  work_mem: 8MB\n  shared_bufers: 1GB\n",
                          "error: /etc/postgresql/postgresql.yaml:3: unknown setting 'shared_bufers'"),
}


@pytest.mark.destructive
@pytest.mark.parametrize("case", REFUSED_ON_EXISTING)
def test_bad_runtime_config_is_refused_and_data_unchanged(case, stopped, files, image, start_container,
                                                          docker_client):
    env, yaml_text, message = REFUSED_ON_EXISTING[case]
    mounts = main_volumes(files, stopped["volume"])
    if yaml_text is not None:
        bad = files["root"] / f"{case}.yaml"
        bad.write_text(yaml_text)
        bad.chmod(0o644)
        mounts[str(bad)] = mounts.pop(files["yaml"])
    environment = main_environment(files)
    if "PG_SESSION_JWT_JWK" in env:
        del environment["PG_SESSION_JWT_JWK_FILE"]
    pg = start_container(image, environment={**environment, **env}, password=None,
                         volumes=mounts, wait=False)
    assert pg.wait_exit() != 0
    logs = pg.logs()
    assert message in logs
    assert "nothing in" in logs and "was changed" in logs
    assert snapshot(docker_client, image, stopped["volume"]) == stopped["snapshot"]


@pytest.mark.slow
@pytest.mark.destructive
def test_restart_keeps_data_skips_init_and_rotates_the_key(stopped, files, image, start_container):
    rotated = generate_key("EdDSA")
    env = {"PGDATA": PGDATA, "PG_SESSION_JWT_JWK": public_jwk(rotated)}  # no password needed now
    mounts = main_volumes(files, stopped["volume"])
    started = time.monotonic()
    pg = start_container(image, environment=env, password=None, volumes=mounts, wait=False)
    pg.user, pg.dbname, pg.password = "alice", "appdb", DEFAULT_PASSWORD
    containers.wait_ready(pg)
    print(f"restart on an existing volume: ready in {time.monotonic() - started:.2f}s")
    assert scalar(pg, "select v from kept") == "still here"
    assert scalar(pg, "select count(*) from init_log") == len(INIT_FILES) - 1
    assert "already holds a database: skipping initialization" in pg.logs()
    assert "running /docker-entrypoint-initdb.d" not in pg.logs()
    assert json.loads(scalar(pg, "select current_setting('pg_session_jwt.jwk')")) \
        == json.loads(public_jwk(rotated))
    # The audience and issuer were not given this time: they are gone, not left over.
    assert scalar(pg, "select current_setting('pg_session_jwt.issuer', true)") in (None, "")
    assert verified_user(pg, mint(rotated, sub="user-3")) == "user-3"


# --- refused starts on an empty volume -----------------------------------------------------

@pytest.mark.destructive
def test_empty_volume_without_password_is_refused(image, start_container, volumes, docker_client):
    volume = volumes()
    before = snapshot(docker_client, image, volume)
    pg = start_container(image, password=None, volumes={volume: {"bind": DATA, "mode": "rw"}},
                         wait=False)
    assert pg.wait_exit() == 1
    logs = pg.logs()
    for name in ("POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "POSTGRES_HOST_AUTH_METHOD=trust"):
        assert name in logs
    assert snapshot(docker_client, image, volume) == before


@pytest.mark.destructive
@pytest.mark.parametrize("name", ["POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB",
                                  "POSTGRES_INITDB_ARGS", "PG_SESSION_JWT_JWK"])
def test_variable_and_its_file_variant_together_are_refused(name, image, start_container, files):
    env = {name: "x", f"{name}_FILE": "/run/secrets/user"}
    pg = start_container(image, environment=env, wait=False,
                         volumes={files["secrets"]: {"bind": "/run/secrets", "mode": "ro"}})
    assert pg.wait_exit() == 1
    assert f"both {name} and {name}_FILE are set" in pg.logs()


# --- an arbitrary uid on a read-only root file system --------------------------------------

@pytest.fixture(scope="module")
def arbitrary_uid(image, start_container):
    env = {"PGDATA": PGDATA, "POSTGRES_HOST_AUTH_METHOD": "trust",
           "POSTGRES_INITDB_ARGS": "--allow-group-access"}
    return start_container(image, environment=env, password=None, user="4321:0", read_only=True,
                           tmpfs={"/var/run/postgresql": ""},
                           command=["postgres", "-c", "work_mem=9MB"])


@pytest.mark.slow
@pytest.mark.destructive
def test_arbitrary_uid_on_a_read_only_root(arbitrary_uid):
    pg = arbitrary_uid
    status = pg.exec(["cat", "/proc/1/status"])[1]
    assert next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1] == "4321"
    assert scalar(pg, "show work_mem") == "9MB"
    assert scalar(pg, "show data_directory_mode") == "0750"
    assert scalar(pg, "select count(*) from pg_extension where extname = 'pg_session_jwt'") == 1


@pytest.mark.slow
@pytest.mark.destructive
def test_trust_warns_loudly_and_needs_no_password(arbitrary_uid):
    assert "WARNING: POSTGRES_HOST_AUTH_METHOD=trust" in arbitrary_uid.logs()
    assert scalar(arbitrary_uid, "select 1", password="anything") == 1
