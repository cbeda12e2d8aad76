"""Benchmark scenario 4: end to end with pgbench over TCP.

Each transaction starts a transaction-scoped session with a fresh token
(`auth.jwt_session_init(token, true)`), reads the caller's newest rows through an RLS
policy and inserts one row whose owner comes from a column default. The baseline is
the same transaction with PostgREST's `set_config('request.jwt.claims', ..., true)`
(no verification) and policies/defaults on that setting. Both scripts fetch their
token/claims from the same table, so they do the same lookup; runs alternate.

`jti` must strictly increase within a backend: pgbench keeps one connection per
client, so client c gets its own tokens with jti = base + seq * clients + c and reads
row (c, seq) where seq is a per-client counter (`-D seq=0`, `\\set seq :seq + 1`).

pgbench runs on this machine when it has one (over the published port), else inside the
server's container (the image ships it), over TCP to 127.0.0.1 either way.

Scenario 6 (`pooled`) is what a pool serving identity-provider users looks like: 8 users
whose tokens are presented again and again, each transaction picking one at random, on
connections that stay open (a pooler's server connections), as a role with
`require_jti = off` (as advised for pooled roles). Same transaction, same baseline as
scenario 4; what it measures is the verified-token cache. A third script adds the
dev stack's pooler reset (DISCARD ALL) after each transaction, reported as its own figure.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.report import Figure, median
from bench.targets import target
from devtools import jwt as tokens

WRITER = "bench_writer"
WRITER_PASSWORD = "bench-writer-password"  # throwaway role inside a throwaway container
CLIENTS = 8
POOLED = "bench_pooled"
POOLED_PASSWORD = "bench-pooled-password"  # throwaway role inside a throwaway container
POOLED_USERS = 8

SETUP = f"""
create schema if not exists bench;
drop table if exists bench.notes_jwt, bench.notes_postgrest, bench.pgbench_tokens;
drop role if exists {WRITER};
create role {WRITER} login password '{WRITER_PASSWORD}';
grant usage on schema bench to {WRITER};
create table bench.pgbench_tokens (client int, seq int, token text, claims text,
                                   primary key (client, seq));
create table bench.notes_jwt (
  id bigint generated always as identity primary key,
  owner text not null default auth.user_id(),
  body text not null);
create table bench.notes_postgrest (
  id bigint generated always as identity primary key,
  owner text not null default (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'),
  body text not null);
create index on bench.notes_jwt (owner, id);
create index on bench.notes_postgrest (owner, id);
alter table bench.notes_jwt enable row level security;
alter table bench.notes_postgrest enable row level security;
create policy owner_only on bench.notes_jwt
  using (owner = (select auth.user_id())) with check (owner = (select auth.user_id()));
create policy owner_only on bench.notes_postgrest
  using (owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'))
  with check (owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'));
insert into bench.notes_jwt (owner, body)
  select 'user' || (i % 100), md5(i::text) from generate_series(1, 50000) i;
insert into bench.notes_postgrest (owner, body)
  select 'user' || (i % 100), md5(i::text) from generate_series(1, 50000) i;
grant select on bench.pgbench_tokens to {WRITER};
grant select, insert on bench.notes_jwt, bench.notes_postgrest to {WRITER};
"""

SCRIPTS = {
    "pg_session_jwt": """\\set seq :seq + 1
BEGIN;
SELECT auth.jwt_session_init(token, true) FROM bench.pgbench_tokens
  WHERE client = :client_id AND seq = :seq;
SELECT id, body FROM bench.notes_jwt ORDER BY id DESC LIMIT 10;
INSERT INTO bench.notes_jwt (body) VALUES ('pgbench');
COMMIT;
""",
    "PostgREST": """\\set seq :seq + 1
BEGIN;
SELECT set_config('request.jwt.claims', claims, true) FROM bench.pgbench_tokens
  WHERE client = :client_id AND seq = :seq;
SELECT id, body FROM bench.notes_postgrest ORDER BY id DESC LIMIT 10;
INSERT INTO bench.notes_postgrest (body) VALUES ('pgbench');
COMMIT;
""",
}

TPS_LINE = re.compile(r"^tps = ([0-9.]+) \((?:without initial connection time|excluding)", re.M)
FAILED_LINE = re.compile(r"number of failed transactions: (\d+)")


def parse_tps(output):
    """The `tps = N (without initial connection time)` figure of pgbench's report."""
    match = TPS_LINE.search(output)
    if not match:
        raise ValueError(f"no tps line in pgbench output:\n{output[-1500:]}")
    failed = FAILED_LINE.search(output)
    if failed and int(failed[1]):
        raise ValueError(f"pgbench reported {failed[1]} failed transactions:\n{output[-1500:]}")
    return float(match[1])


def token_rows(key, clients, per_client):
    """(client, seq, token, claims) with jti strictly increasing per client in seq order."""
    base = tokens.next_jti()
    rows = []
    for seq in range(1, per_client + 1):
        for client in range(clients):
            sub = f"user{client}"
            jti = base + seq * clients + client
            rows.append((client, seq, tokens.mint(key, claims={"jti": jti}, sub=sub, ttl=7200),
                         json.dumps({"sub": sub, "role": WRITER})))
    return rows


def pgbench_command(host, port, dbname, script_path, transactions, user=WRITER):
    return ["pgbench", "-h", host, "-p", str(port), "-U", user, "-n",
            "-c", str(CLIENTS), "-j", "2", "-t", str(transactions), "-D", "seq=0",
            "-f", str(script_path), dbname]


class HostPgbench:
    """pgbench on this machine, over TCP to the container's published port."""

    where = "host"

    def __init__(self, pg, env):
        self.pg, self.env = pg, env
        self.tmp = tempfile.TemporaryDirectory(prefix="pgjwt-pgbench-")

    def script(self, name, text):
        path = Path(self.tmp.name) / f"{name}.sql"
        path.write_text(text)
        return path

    def run(self, script_path, transactions, user):
        command = pgbench_command("127.0.0.1", self.pg.host_port, self.pg.dbname, script_path,
                                  transactions, user)
        result = subprocess.run(command, env={**os.environ, **self.env}, capture_output=True,
                                text=True, timeout=900)
        return result.returncode, result.stdout + result.stderr

    def close(self):
        self.tmp.cleanup()


class ContainerPgbench:
    """The image's own pgbench, over TCP to 127.0.0.1 inside the container (no host pgbench)."""

    where = "container"
    folder = "/tmp/pgjwt-pgbench"

    def __init__(self, pg, env):
        self.pg, self.env = pg, env

    def script(self, name, text):
        from bench.session import put_files

        put_files(self.pg, self.folder, {f"{name}.sql": text.encode()})
        return f"{self.folder}/{name}.sql"

    def run(self, script_path, transactions, user):
        command = pgbench_command("127.0.0.1", 5432, self.pg.dbname, script_path, transactions,
                                  user)
        return self.pg.exec(["env"] + [f"{k}={v}" for k, v in self.env.items()] + command)

    def close(self):
        pass


def host_pgbench_works():
    """Whether this machine runs pgbench itself. Debian's postgresql-client puts a pgbench on
    PATH that only says which server package to install (the program is in postgresql-NN)."""
    if shutil.which("pgbench") is None:
        return False
    try:
        return subprocess.run(["pgbench", "--version"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def alternate(pg, user, password, key, scripts, params, prefix=""):
    """({script name: [tps per run]}, where pgbench ran): each of `scripts` run by `user`
    params.pgbench_rounds times, alternating, with `key`'s JWK in the startup packet."""
    env = {"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10",
           "PGOPTIONS": tokens.pgoptions_value(tokens.public_jwk(key))}
    runner = (HostPgbench if host_pgbench_works() else ContainerPgbench)(pg, env)
    samples = {name: [] for name in scripts}
    try:
        paths = {name: runner.script(f"{prefix}{name}", text) for name, text in scripts.items()}
        for _ in range(params.pgbench_rounds):
            for name, path in paths.items():
                code, output = runner.run(path, params.pgbench_transactions, user)
                if code != 0:
                    raise RuntimeError(f"pgbench ({prefix}{name}, on the {runner.where}) exited "
                                       f"{code}:\n{output[-2000:]}")
                samples[name].append(parse_tps(output))
    finally:
        runner.close()
    return samples, runner.where


def run(pg, major, params, key):
    """Scenario 4 on one container of the default major."""
    with pg.connect() as admin:
        admin.execute(SETUP)
        with admin.cursor() as cur:
            cur.executemany("insert into bench.pgbench_tokens values (%s, %s, %s, %s)",
                            token_rows(key, CLIENTS, params.pgbench_transactions))
        admin.execute("vacuum analyze bench.pgbench_tokens")
        admin.execute("vacuum analyze bench.notes_jwt")
        admin.execute("vacuum analyze bench.notes_postgrest")
    samples, where = alternate(pg, WRITER, WRITER_PASSWORD, key, SCRIPTS, params)
    return [Figure(
        "4 pgbench end to end", major, f"{CLIENTS} clients, session per transaction", "tps",
        value=median(samples["pg_session_jwt"]), baseline=median(samples["PostgREST"]),
        baseline_label="(SET LOCAL request.jwt.claims)", target=target("pgbench"),
        samples=samples,
        notes=f"{params.pgbench_transactions} transactions per client per run, "
              f"{params.pgbench_rounds} alternating runs each; EdDSA tokens; "
              f"pgbench on the {where}")]


POOLED_SETUP = f"""
drop table if exists bench.pooled_tokens;
drop role if exists {POOLED};
create role {POOLED} login password '{POOLED_PASSWORD}';
alter role {POOLED} set pg_session_jwt.require_jti = off;
grant usage on schema bench to {POOLED};
create table bench.pooled_tokens (u int primary key, token text, claims text);
grant select on bench.pooled_tokens to {POOLED};
grant select, insert on bench.notes_jwt, bench.notes_postgrest to {POOLED};
"""

POOLED_TRANSACTION = f"""\\set u random(0, {POOLED_USERS - 1})
BEGIN;
SELECT auth.jwt_session_init(token, true) FROM bench.pooled_tokens WHERE u = :u;
SELECT id, body FROM bench.notes_jwt ORDER BY id DESC LIMIT 10;
INSERT INTO bench.notes_jwt (body) VALUES ('pgbench');
COMMIT;
"""
# What the dev stack's pgbouncer sends on the server connection after every transaction
# (server_reset_query, compose/pooler/entrypoint.sh), so that nothing of one client
# reaches the next: its cost is reported against the same transaction without it.
RESET_QUERY = "DISCARD ALL"

POOLED_SCRIPTS = {
    "pg_session_jwt": POOLED_TRANSACTION,
    "pg_session_jwt_reset": f"{POOLED_TRANSACTION}{RESET_QUERY};\n",
    "PostgREST": f"""\\set u random(0, {POOLED_USERS - 1})
BEGIN;
SELECT set_config('request.jwt.claims', claims, true) FROM bench.pooled_tokens WHERE u = :u;
SELECT id, body FROM bench.notes_postgrest ORDER BY id DESC LIMIT 10;
INSERT INTO bench.notes_postgrest (body) VALUES ('pgbench');
COMMIT;
""",
}


def pooled(pg, major, params, key):
    """Scenario 6 on one container: re-presented tokens against SET LOCAL claims."""
    with pg.connect() as admin:
        # Scenario 4's tables, made here unless it ran first on this container (SETUP would
        # then fail to drop its role, which owns grants on them).
        if admin.execute("select to_regclass('bench.notes_jwt')").fetchone()[0] is None:
            admin.execute(SETUP)
        admin.execute(POOLED_SETUP)
        with admin.cursor() as cur:
            cur.executemany("insert into bench.pooled_tokens values (%s, %s, %s)", [
                (u, tokens.mint(key, sub=f"user{u}", ttl=7200),
                 json.dumps({"sub": f"user{u}", "role": POOLED})) for u in range(POOLED_USERS)])
        for table in ("pooled_tokens", "notes_jwt", "notes_postgrest"):
            admin.execute(f"vacuum analyze bench.{table}")
    samples, where = alternate(pg, POOLED, POOLED_PASSWORD, key, POOLED_SCRIPTS, params,
                               prefix="pooled-")
    return [Figure(
        "6 pooled reuse", major, f"{CLIENTS} clients, {POOLED_USERS} users re-presenting tokens",
        "tps", value=median(samples["pg_session_jwt"]), baseline=median(samples["PostgREST"]),
        baseline_label="(SET LOCAL request.jwt.claims)",
        target=target("pooled"), samples=samples,
        notes=f"{params.pgbench_transactions} transactions per client per run, "
              f"{params.pgbench_rounds} alternating runs each; transaction-scoped sessions, "
              f"require_jti off for the role; EdDSA tokens; pgbench on the {where}"),
        Figure(
        "6 pooled reset cost", major, f"the same with {RESET_QUERY} after each transaction",
        "tps", value=median(samples["pg_session_jwt_reset"]),
        baseline=median(samples["pg_session_jwt"]), baseline_label="(without the reset)",
        samples=samples,
        notes=f"what the dev stack's pgbouncer (server_reset_query) adds; same runs as above, "
              f"pgbench on the {where}")]
