"""The extension's versions and databases that hold it: freshly installed, or installed at an
earlier version and updated with ALTER EXTENSION ... UPDATE (as pgTAP's `make updatecheck`).

Versions come from the file names in extension/sql/ and the control file's default_version,
so a new release script is picked up without editing any test.
"""

import dataclasses
import re
import uuid

from builder import matrix
from builder.build import extension_version

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
# How a database can come to hold the default version: ids of the `installed` fixtures.
INSTALLS = ["fresh"] + [f"updated-from-{v}" for v in EARLIER]


def new_database(pg, version=None):
    """A fresh database (from template0: without the extension) with pg_session_jwt at
    `version` (default: the control file's); a PgContainer aimed at it."""
    db = f"ext_{uuid.uuid4().hex[:8]}"
    with pg.connect() as admin:
        admin.execute(f"create database {db} template template0 encoding 'UTF8'")
    with pg.connect(dbname=db) as conn:
        conn.execute("create extension plpython3u")
        if version:
            conn.execute(f"create extension pg_session_jwt version '{version}'")
        else:
            conn.execute("create extension pg_session_jwt")
    return dataclasses.replace(pg, dbname=db)


def installed_database(pg, install):
    """A database of `pg` holding the default version the way `install` (one of INSTALLS) says."""
    if install == "fresh":
        return new_database(pg)
    target = new_database(pg, install.removeprefix("updated-from-"))
    with target.connect() as conn:
        conn.execute("alter extension pg_session_jwt update")
    return target


def drop_database(pg, target):
    with pg.connect() as admin:
        admin.execute(f"drop database {target.dbname} with (force)")
