"""Upgrades, on every major.

Extension: every earlier version found in extension/sql/ is installed in a fresh database,
updated with `ALTER EXTENSION pg_session_jwt UPDATE`, and compared object by object with a
fresh install of the default version (the control file's `default_version`, its only copy).
The behaviour of updated databases is test_sql_api.py's: every test there runs against each.

Image: a data volume initialised by the image keeps working under another tag of the same
major; see the test's docstring for what that does and does not prove.
"""

import uuid

import pytest

from builder import containers
from devtools.jwt import mint, public_jwk
from tests.support.installs import DEFAULT, EARLIER, SQL_DIR, drop_database, new_database, script_versions
from tests.support.sql import identity

pytestmark = pytest.mark.container

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


@pytest.mark.parametrize("version", EARLIER)
def test_update_from_an_earlier_version_equals_a_fresh_install(pg, keys, fresh, version):
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
                assert identity(before) == "before"
        extension_row, members = catalog(target)
        assert extension_row == fresh[0] and extension_row[0] == DEFAULT
        fresh_objects = {row[0]: row[1:] for row in fresh[1]}
        updated_objects = {row[0]: row[1:] for row in members}
        assert sorted(updated_objects) == sorted(fresh_objects)
        for name, definition in fresh_objects.items():
            assert updated_objects[name] == definition, name
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
            assert identity(conn) == "alice"
        with second.connect(jwk=public_jwk(key), dbname="older") as conn:
            conn.execute("select auth.jwt_session_init(%s)", [mint(key, sub="old-sql")])
            assert identity(conn) == "old-sql"
            conn.execute("alter extension pg_session_jwt update")
            assert conn.execute("select extversion from pg_extension where extname = 'pg_session_jwt'"
                                ).fetchone() == (DEFAULT,)
    finally:
        for pg in started:
            containers.stop(pg)
        volume.remove(force=True)
