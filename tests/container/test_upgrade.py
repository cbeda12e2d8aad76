"""Upgrades, on every major (issue 7, "Upgrades").

Extension: every earlier version found in extension/sql/ is installed in a fresh database,
updated with `ALTER EXTENSION pg_session_jwt UPDATE`, compared object by object with a fresh
install of the default version (the control file's `default_version`, its only copy), and
then the extension's own container tests (test_extension.py) run against that database, as
pgTAP's `make updatecheck` does.

Image: a data volume initialised by the image keeps working under another tag of the same
major; see the test's docstring for what that does and does not prove.
"""

import dataclasses
import re
import uuid

import pytest
import test_extension as ext

from scripts import containers, matrix
from scripts.build import extension_version
from scripts.jwt import generate_key, mint, public_jwk

pytestmark = pytest.mark.container

SQL_DIR = matrix.ROOT / "extension" / "sql"
SCRIPT = re.compile(r"pg_session_jwt--(?P<a>.+?)(?:--(?P<b>.+))?\.sql")


def script_versions():
    """Every version named by a script in extension/sql, oldest first (base and update scripts)."""
    found = set()
    for path in SQL_DIR.glob("pg_session_jwt--*.sql"):
        match = SCRIPT.fullmatch(path.name)
        assert match, f"{path.name}: not pg_session_jwt--V.sql or pg_session_jwt--A--B.sql"
        found.update(v for v in match.group("a", "b") if v)
    return sorted(found, key=lambda v: [int(n) if n.isdigit() else n for n in re.split(r"[.]", v)])


DEFAULT = extension_version()
EARLIER = [v for v in script_versions() if v != DEFAULT]

# The extension's member objects, each with what defines it: functions by their full
# definition (body, volatility, parallel safety, SET clauses), plus comments and ACLs.
MEMBERS = """
select pg_describe_object(d.classid, d.objid, 0) as object,
       case when d.classid = 'pg_proc'::regclass then pg_get_functiondef(d.objid) end as definition,
       obj_description(d.objid, d.classid::regclass::text) as comment,
       case when d.classid = 'pg_proc'::regclass
            then (select proacl::text from pg_proc where oid = d.objid) end as acl
from pg_depend d
join pg_extension e on e.oid = d.refobjid and d.refclassid = 'pg_extension'::regclass
where e.extname = 'pg_session_jwt' and d.deptype = 'e'
order by 1
"""
EXTENSION_ROW = """
select e.extversion, n.nspname, e.extrelocatable, n.nspacl::text
from pg_extension e join pg_namespace n on n.oid = e.extnamespace
where e.extname = 'pg_session_jwt'
"""


def test_the_chain_leads_to_the_default_version():
    assert DEFAULT in script_versions(), f"no script in {SQL_DIR} makes version {DEFAULT}"
    assert EARLIER, "only one version: nothing to upgrade from (ship an update script to test it)"
    assert (SQL_DIR / "pg_session_jwt--0.1.0.sql").is_file(), "the first release's base script is gone"


def new_database(pg, version=None):
    """A fresh database (from template0: without the extension) with pg_session_jwt at
    `version` (default: the control file's); a PgContainer aimed at it."""
    db = f"upg_{uuid.uuid4().hex[:8]}"
    with pg.connect() as admin:
        admin.execute(f"create database {db} template template0 encoding 'UTF8'")
    with pg.connect(dbname=db) as conn:
        conn.execute("create extension plpython3u")
        if version:
            conn.execute(f"create extension pg_session_jwt version {ext.literal(version)}")
        else:
            conn.execute("create extension pg_session_jwt")
    return dataclasses.replace(pg, dbname=db)


def drop_database(pg, target):
    with pg.connect() as admin:
        admin.execute(f"drop database {target.dbname} with (force)")


def catalog(target):
    with target.connect() as conn:
        return conn.execute(EXTENSION_ROW).fetchone(), conn.execute(MEMBERS).fetchall()


@pytest.fixture(scope="module")
def fresh(pg):
    """The catalog of a fresh install of the default version on this major."""
    target = new_database(pg)
    try:
        yield catalog(target)
    finally:
        drop_database(pg, target)


@pytest.fixture(scope="module")
def attacker(keys):
    return generate_key("EdDSA", kid=keys["EdDSA"].get("kid"))


def run_extension_tests(target, keys, attacker):
    """test_extension.py's behaviour tests, against the database of `target`."""
    key = keys["EdDSA"]
    for alg in keys:
        ext.test_session_and_getters(target, keys, alg)
    ext.test_getters_without_a_session(target, key)
    ext.test_session_init_works_without_init_and_accepts_newer_tokens(target, key)
    ext.test_getters_are_inlined_sql_wrappers(target, key)
    ext.test_refused_tokens_give_their_sqlstate_and_no_traceback(target, key, attacker)
    ext.test_jti_must_increase_and_the_current_token_may_be_presented_again(target, key)
    ext.test_a_forged_jwt_setting_never_yields_an_identity(target, key, attacker)
    ext.test_a_function_set_clause_cannot_change_the_key(target, key, attacker)
    for ending in ("discard all", "reset all", "reset pg_session_jwt.jwt"):
        ext.test_discard_and_reset_end_the_session(target, key, ending)
    ext.test_transaction_scoped_session_ends_at_commit(target, key)
    ext.test_jwt_session_end_ends_session_and_transaction_scoped_sessions(target, key)
    ext.test_non_superuser_rls_with_user_id(target, key)


@pytest.mark.parametrize("version", EARLIER)
def test_update_from_an_earlier_version_equals_a_fresh_install(pg, keys, attacker, fresh, version):
    target = new_database(pg, version)
    try:
        with target.connect() as conn:
            assert conn.execute("select extversion from pg_extension where extname = 'pg_session_jwt'"
                                ).fetchone() == (version,)
            # Sessions opened before the update go on working through it.
            key = keys["EdDSA"]
            with target.connect(jwk=public_jwk(key)) as before:
                before.execute("select auth.jwt_session_init(%s)", [mint(key, sub="before")])
                conn.execute("alter extension pg_session_jwt update")
                assert ext.identity(before) == "before"
        extension_row, members = catalog(target)
        assert extension_row == fresh[0] and extension_row[0] == DEFAULT
        fresh_objects = {row[0]: row[1:] for row in fresh[1]}
        updated_objects = {row[0]: row[1:] for row in members}
        assert sorted(updated_objects) == sorted(fresh_objects)
        for name, definition in fresh_objects.items():
            assert updated_objects[name] == definition, name
        run_extension_tests(target, keys, attacker)
    finally:
        drop_database(pg, target)


def test_a_fresh_install_of_the_default_version_passes_the_same_tests(pg, keys, attacker):
    """The chain as a fresh install runs it (0.1.0, then each update script)."""
    target = new_database(pg)
    try:
        run_extension_tests(target, keys, attacker)
    finally:
        drop_database(pg, target)


# --- the image: a data volume outlives the container ----------------------------------------

def other_tag_of(docker_client, image):
    """A second tag of the same build of this major (`pg-session-jwt:<major>.<minor>`)."""
    tags = [t for t in docker_client.images.get(image).tags if t != image and not t.endswith(":latest")]
    assert tags, f"{image} has no <major>.<minor> tag: rebuild it with `make image`"
    return sorted(tags)[0]


@pytest.mark.slow
@pytest.mark.destructive
def test_a_data_volume_keeps_working_with_another_image_of_the_same_major(
        docker_client, image, start_container, keys):
    """What this proves: a data directory the image initialised (initdb, extension in
    template1 and postgres) is taken over by a second container from the image's other tag
    (`pg-session-jwt:<major>.<minor>`) without re-initialising it — the entrypoint sees
    PG_VERSION and skips initdb; files belong to the uid the image runs postgres as (999, fixed
    in the Dockerfile); the databases' collation versions match the image's C library; the
    data and the extension work in new sessions; and a database left at an older extension
    version (as a volume from an older build has) works with this image's Python package and
    updates with ALTER EXTENSION UPDATE.

    What it does not prove: the two tags point at the same build, so a real rebuild's changes
    (a newer Debian point release, another glibc and its collations, a new minor of Postgres)
    are not exercised; the invariants a rebuild must keep (uid, PGDATA, major, collation
    version) are what this checks, so a rebuild that breaks one of them fails it."""
    volume = docker_client.volumes.create(name=f"pgjwt-{uuid.uuid4().hex[:10]}",
                                          labels={"io.pg-session-jwt.test": "1"})
    data_volume, pgdata = containers.data_layout(docker_client, image)
    mount = {volume.name: {"bind": data_volume, "mode": "rw"}}
    key = keys["EdDSA"]
    oldest = script_versions()[0]
    started = []
    try:
        first = start_container(image, volumes=mount)
        started.append(first)
        with first.connect() as conn:
            conn.execute("create table public.notes (id int primary key, owner text)")
            conn.execute("insert into public.notes select g, 'u' || g from generate_series(1, 1000) g")
            conn.execute("create database older")
        with first.connect(dbname="older") as conn:
            # Where a volume from an earlier build stands: the extension at its oldest version.
            conn.execute("drop extension pg_session_jwt")
            conn.execute(f"create extension pg_session_jwt version '{oldest}'")
        containers.stop(first)

        second = start_container(other_tag_of(docker_client, image), volumes=mount)
        started.append(second)
        code, out = second.exec(["stat", "-c", "%u:%g", f"{pgdata}/PG_VERSION"])
        assert (code, out.strip()) == (0, "999:999"), out
        with second.connect(jwk=public_jwk(key)) as conn:
            assert conn.execute("select count(*), max(id) from public.notes").fetchone() == (1000, 1000)
            mismatched = conn.execute(
                # What PostgreSQL warns about at connect (template0 records no version).
                "select datname from pg_database where datcollversion is not null and "
                "datcollversion <> pg_database_collation_actual_version(oid)").fetchall()
            assert mismatched == []
            conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="alice")])
            assert ext.identity(conn) == "alice"
        with second.connect(jwk=public_jwk(key), dbname="older") as conn:
            conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="old-sql")])
            assert ext.identity(conn) == "old-sql"
            conn.execute("alter extension pg_session_jwt update")
            assert conn.execute("select extversion from pg_extension where extname = 'pg_session_jwt'"
                                ).fetchone() == (DEFAULT,)
        run_extension_tests(dataclasses.replace(second, dbname="older"), keys,
                            generate_key("EdDSA", kid=key.get("kid")))
    finally:
        for pg in started:
            containers.stop(pg)
        volume.remove(force=True)
