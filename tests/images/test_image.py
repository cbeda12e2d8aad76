"""What every image holds: the right server, PL/Python, the extension, its settings, labels."""

import json
import time

import psycopg
import pytest

from builder import build, matrix
from builder.matrix import ROOT
from devtools.jwt import generate_key, mint, public_jwk
from runtime import render_conf
from runtime.manifest import MANIFEST_PATH

pytestmark = pytest.mark.container

OCI_LABELS = ("title", "description", "version", "revision", "created", "source", "licenses")


def rendered_settings(major):
    """{name: value as SHOW prints it} for `major` from images/postgresql.yaml."""
    settings = render_conf.settings_for(ROOT / "images" / "postgresql.yaml", major)
    return {name: value.strip("'").replace("''", "'") for name, value in settings.items()}


def test_server_major_matches_matrix(pg, pg_major, host):
    with pg.connect() as conn:
        version_num = int(conn.execute("show server_version_num").fetchone()[0])
    assert version_num // 10000 == pg_major
    assert host.run("postgres --version").stdout.split()[2].startswith(f"{pg_major}.")


def test_tags_and_labels(docker_client, image, pg_major):
    img = docker_client.images.get(image)
    labels = img.labels
    for name in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{name}"), name
    assert labels["io.pg-session-jwt.postgres.major"] == str(pg_major)
    control = (ROOT / "extension" / "pg_session_jwt.control").read_text()
    assert f"default_version = '{labels['io.pg-session-jwt.extension.version']}'" in control
    # the major.minor tag is read from the image, and points at the same image
    minor_tags = [t for t in img.tags if t.split(":")[1].startswith(f"{pg_major}.")]
    assert minor_tags, img.tags
    default = matrix.load().default.major
    assert (f"{image.split(':')[0]}:latest" in img.tags) == (pg_major == default)


def test_manifest_names_what_the_image_holds_and_the_labels_agree(docker_client, image, pg_major, host):
    manifest = json.loads(host.file(MANIFEST_PATH).content_string)
    packages = manifest["packages"]
    assert packages["postgresql"]["package"] == f"postgresql-{pg_major}"
    assert packages["plpython"]["package"] == f"postgresql-plpython3-{pg_major}"
    assert packages["python"]["package"] == "python3"
    assert packages["libcrypto"]["package"].startswith("libssl3")
    for entry in packages.values():  # what dpkg says is installed, version for version
        assert host.package(entry["package"]).version == entry["version"]
    # the server's own version is the package's upstream part ("17.7-1" -> 17.7)
    server = host.run("postgres --version").stdout.split()[2]
    assert packages["postgresql"]["version"].startswith(server)
    labels = docker_client.images.get(image).labels
    assert labels["io.pg-session-jwt.packages"] == build.package_versions(manifest)
    assert labels["org.opencontainers.image.base.digest"] == manifest["base"]["digest"]
    assert labels["org.opencontainers.image.base.name"] == manifest["base"]["name"]
    assert manifest["base"]["digest"] == build.base_digest(docker_client, manifest["base"]["name"])


@pytest.mark.parametrize("path", [
    "/usr/share/postgresql/{m}/extension/pg_session_jwt.control",
    "/usr/share/postgresql/{m}/extension/plpython3u.control",
    "/usr/lib/postgresql/{m}/lib/plpython3.so",
    "/usr/lib/python3/dist-packages/pg_session_jwt/__init__.py",
    "/etc/postgresql/postgresql.conf",
])
def test_files_installed(host, pg_major, path):
    assert host.file(path.format(m=pg_major)).exists


def test_extension_sql_scripts_installed(host, pg_major):
    sql = sorted((ROOT / "extension" / "sql").glob("*.sql"))
    assert sql
    for script in sql:
        assert host.file(f"/usr/share/postgresql/{pg_major}/extension/{script.name}").exists


def test_image_python_has_jwcrypto_and_yaml(host):
    assert host.run("python3 -c 'import jwcrypto.jws, yaml'").rc == 0


def test_server_runs_as_postgres_with_postgres_as_pid_1(host):
    """Read from /proc, since not every image has ps (bookworm's has no procps)."""
    lines = host.check_output("grep -H -E '^(Name|Uid):' /proc/[0-9]*/status").splitlines()
    processes = {}
    for line in lines:
        path, field, value = line.split(":", 2)
        processes.setdefault(path.split("/")[2], {})[field] = value.split()[0]
    servers = {pid: p for pid, p in processes.items() if p["Name"] == "postgres"}
    assert servers
    assert {p["Uid"] for p in servers.values()} == {str(host.user("postgres").uid)}
    assert processes["1"]["Name"] == "postgres"


def test_every_yaml_setting_reads_back_with_show(pg, pg_major):
    expected = rendered_settings(pg_major)
    assert expected
    with pg.connect() as conn:
        actual = {name: conn.execute(f"show {name}").fetchone()[0] for name in expected}
    assert actual == expected


def test_jwk_from_startup_packet_reads_back(pg, keys):
    jwk = json.dumps(keys["EdDSA"].export_public(as_dict=True), separators=(",", ":"))
    with pg.connect(jwk=jwk) as conn:
        assert conn.execute("select current_setting('pg_session_jwt.jwk')").fetchone()[0] == jwk


def test_databases_are_utf8_with_extension_ready(pg):
    with pg.connect() as conn:
        rows = conn.execute(
            "select datname, pg_encoding_to_char(encoding) from pg_database"
            " where datname in ('postgres', 'template1')").fetchall()
        assert {enc for _, enc in rows} == {"UTF8"}
        ext = conn.execute("select extversion from pg_extension where extname = 'pg_session_jwt'")
        assert ext.fetchone() is not None


def test_locale_available(host):
    assert "en_US.utf8" in host.run("locale -a").stdout


def test_a_refused_token_in_sql_text_stays_out_of_the_log(pg, keys):
    """The README's psql example puts the token in the statement text; when it is refused,
    the server logs the error but not the statement (log_min_error_statement = panic)."""
    # signed by another key under the server key's kid, so it fails the signature check
    token = mint(generate_key("EdDSA"), sub="mallory", header={"kid": keys["EdDSA"].get("kid")})
    with pg.connect(jwk=public_jwk(keys["EdDSA"])) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(f"select auth.jwt_session_init('{token}')")
    # The server writes its log line a moment after the client sees the error: poll, bounded.
    deadline = time.monotonic() + 10
    while "invalid JWT signature" not in (logs := pg.logs()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "invalid JWT signature" in logs
    assert token.split(".")[2] not in logs and token.split(".")[1] not in logs


def test_queries_run_with_jit_forced_although_bitcode_is_left_out(pg, host, pg_major):
    """The image leaves out LLVM bitcode (inlining only); forcing JIT with inlining must work."""
    bitcode = host.run(f"find /usr/lib/postgresql/{pg_major}/lib -path '*/bitcode/*' -type f")
    assert bitcode.rc == 0 and bitcode.stdout == ""
    with pg.connect() as conn:
        for setting in ("jit = on", "jit_above_cost = 0", "jit_inline_above_cost = 0",
                        "jit_optimize_above_cost = 0"):
            conn.execute(f"set {setting}")
        total = conn.execute("select sum(x * 2) from generate_series(1, 10000) x").fetchone()[0]
    assert total == 10000 * 10001
