"""Benchmark scenarios 1-3 against one running container of an image.

1. cold backend: new connection + auth.init() + jwt_session_init() + user_id(),
   against the floor: a new connection + one call of an empty PL/Python function (what
   starting Python in a backend costs); with the key in the startup packet and
   server-wide; interleaved with connect + `select 1`, median of many connections.
2. warm verification: jwt_session_init with a new token per call, timed inside the
   server (a plpgsql loop over pre-minted tokens, so client round trips do not count),
   against bare verification of the same tokens through the same library (libsodium for
   EdDSA, libcrypto for the rest: bench/raw_verify.py), run by the same backend's Python.
3. per-row cost: `select count(*)` as a non-superuser over tables with one RLS policy
   each ((select auth.user_id()), auth.user_id(), PostgREST's request.jwt.claims) and
   without RLS; microseconds per row.

Each function takes a PgContainer, its major and a Params and returns a list of bench_report.Figure.
"""

import io
import json
import tarfile
import time
from pathlib import Path

from bench.report import Figure, interleave, median
from bench.targets import COLD_ALGORITHMS, target
from devtools import jwt as tokens

ALGORITHMS = ("EdDSA", "ES256", "RS256")
RAW_VERIFY = Path(__file__).with_name("raw_verify.py")
READER = "bench_reader"
READER_PASSWORD = "bench-reader-password"  # throwaway role inside a throwaway container



# An empty PL/Python function: one call of it on a new connection is what starting Python in
# a backend costs, the floor under any PL/Python extension's first call.
FLOOR_SETUP = """
create schema if not exists bench;
create or replace function bench.plpython_start() returns void language plpython3u as $$ pass $$;
"""
# The key from the server's configuration (ALTER SYSTEM writes postgresql.auto.conf, what
# PG_SESSION_JWT_JWK amounts to) instead of the startup packet.
SERVER_WIDE = ("startup packet", "server-wide")


def cold(pg, major, params, keys):
    """Scenario 1, per algorithm and key source, against the floor (a new connection's first
    PL/Python call) measured in the same rounds; the target applies to COLD_ALGORITHMS on
    every major. The floor itself is also shown against connect + select 1."""
    with pg.connect() as admin:
        admin.execute(FLOOR_SETUP)
    figures = []
    for alg in ALGORITHMS:
        for source in SERVER_WIDE:
            samples = cold_samples(pg, keys[alg], source, params)
            figures.append(Figure(
                "1 cold backend", major, f"connect+init+session+user_id {alg}, key {source}",
                "ms", value=median(samples["session"]), baseline=median(samples["floor"]),
                baseline_label="(connect+empty PL/Python call)",
                target=target("cold") if alg in COLD_ALGORITHMS else None,
                samples=samples))
            if alg == ALGORITHMS[0] and source == SERVER_WIDE[0]:
                figures.append(Figure(
                    "1 cold backend", major, "the floor: connect+empty PL/Python call", "ms",
                    value=median(samples["floor"]), baseline=median(samples["select 1"]),
                    baseline_label="(connect+select 1)", samples=samples))
    return figures


def cold_samples(pg, key, source, params):
    """Interleaved samples of cold_runners, with the key configured server-wide meanwhile
    when `source` says so."""
    server_wide = source == SERVER_WIDE[1]
    if server_wide:
        server_wide_key(pg, tokens.public_jwk(key))
    try:
        return interleave(cold_runners(pg, key, server_wide), rounds=params.cold_samples,
                          warmup=2)
    finally:
        if server_wide:
            server_wide_key(pg, None)


def server_wide_key(pg, jwk):
    """Configure `jwk` server-wide (None: no key) and reload. PostgreSQL 15's ALTER SYSTEM
    knows a custom setting only once the session has a placeholder for it: set one first."""
    with pg.connect() as admin:
        admin.execute("select set_config('pg_session_jwt.jwk', '', false)")
        if jwk is None:
            admin.execute("alter system reset pg_session_jwt.jwk")
        else:
            admin.execute(f"alter system set pg_session_jwt.jwk = '{jwk}'")
        admin.execute("select pg_reload_conf()")


def cold_runners(pg, key, server_wide=False):
    """{name: callable} timing one new connection each, in milliseconds. All connect the same
    way (the JWK in the startup packet unless it is server-wide), so the only difference is
    the statements."""
    jwk = None if server_wide else tokens.public_jwk(key)

    def timed(*statements):
        def run():
            started = time.perf_counter()
            with pg.connect(jwk=jwk) as conn:
                for statement in statements:
                    conn.execute(statement).fetchone()
            return (time.perf_counter() - started) * 1e3
        return run

    def session():
        token = tokens.mint(key, sub="bench-user")
        started = time.perf_counter()
        with pg.connect(jwk=jwk) as conn:
            conn.execute("select auth.init()")
            conn.execute("select auth.jwt_session_init(%s)", (token,))
            user = conn.execute("select auth.user_id()").fetchone()[0]
        elapsed = (time.perf_counter() - started) * 1e3
        if user != "bench-user":
            raise AssertionError(f"auth.user_id() returned {user!r}, expected 'bench-user'")
        return elapsed

    return {"select 1": timed("select 1"), "floor": timed("select bench.plpython_start()"),
            "session": session}


WARM_SETUP = """
create schema if not exists bench;
create table if not exists bench.warm_tokens(alg text, batch int, seq int, token text,
                                             primary key (alg, batch, seq));
-- Seconds to walk one batch in token order (jti increasing), calling jwt_session_init on
-- each token when p_verify, else doing nothing with it: the harness's own cost, subtracted.
create or replace function bench.time_tokens(p_alg text, p_batch int, p_verify boolean)
returns float8
language plpgsql as $$
declare
  started timestamptz := clock_timestamp();
  tok text;
begin
  for tok in select token from bench.warm_tokens where alg = p_alg and batch = p_batch
             order by seq loop
    if p_verify then
      perform auth.jwt_session_init(tok);
    else
      perform length(tok);
    end if;
  end loop;
  return extract(epoch from clock_timestamp() - started);
end $$;
-- Microseconds per token of bench/raw_verify.py's bare verification of one batch, run by
-- this backend's own Python: the same interpreter and library as jwt_session_init.
create or replace function bench.raw_verify(p_input text, p_batch int) returns float8
language plpython3u as $fn$
import json
run = SD.get("run")
if run is None:
    namespace = {"__name__": "bench_raw_verify"}
    with open("/tmp/pgjwt-bench/raw_verify.py") as fh:
        exec(compile(fh.read(), "raw_verify.py", "exec"), namespace)
    SD["run"] = run = namespace["run"]
spec = SD.get(p_input)
if spec is None:
    with open(p_input) as fh:
        SD[p_input] = spec = json.load(fh)
return run(spec, p_batch)["us_per_call"][0]
$fn$;
"""


def put_files(pg, folder, files):
    """Copy {name: bytes} into `folder` of the container (created, readable by postgres)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(folder.strip("/"))
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder.strip('/')}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    pg.container.put_archive("/", buffer.getvalue())


RAW_LIBRARY = {"Ed": "libsodium", "ES": "libcrypto", "RS": "libcrypto", "PS": "libcrypto"}


def raw_verify_key(key):
    """The public key as bench/raw_verify.py takes it (hex): the raw 32 bytes for Ed25519,
    else the DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = key.get_op_key("verify")
    if key.get("kty") == "OKP":
        return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo).hex()


def warm(pg, major, params, keys):
    """Scenario 2, per algorithm."""
    figures = []
    with pg.connect() as admin:
        admin.execute(WARM_SETUP)
    for alg in ALGORITHMS:
        key = keys[alg]
        jwk = tokens.public_jwk(key)
        # batch 0 is the warm-up (first call imports and parses the key); one token per call
        batches = [[tokens.mint(key, sub="bench-user") for _ in range(params.warm_calls)]
                   for _ in range(params.warm_batches + 1)]
        with pg.connect() as admin:
            admin.execute("delete from bench.warm_tokens where alg = %s", (alg,))
            with admin.cursor() as cur:
                cur.executemany(
                    "insert into bench.warm_tokens values (%s, %s, %s, %s)",
                    [(alg, b, s, t) for b, batch in enumerate(batches) for s, t in enumerate(batch)])
        spec = json.dumps({"alg": alg, "key": raw_verify_key(key), "batches": batches}).encode()
        put_files(pg, "/tmp/pgjwt-bench", {"raw_verify.py": RAW_VERIFY.read_bytes(),
                                           f"input-{alg}.json": spec})
        ours, loop, raw = [], [], []
        with pg.connect(jwk=jwk) as conn:
            conn.execute("select auth.init()")
            # Server batch and raw batch alternate, so a burst of load hits both alike; both
            # run in this backend's Python, with no process started between them.
            for number in range(len(batches)):
                seconds, idle = (
                    conn.execute("select bench.time_tokens(%s, %s, %s)", (alg, number, verify))
                    .fetchone()[0] for verify in (True, False))
                per_call = conn.execute("select bench.raw_verify(%s, %s)",
                                        (f"/tmp/pgjwt-bench/input-{alg}.json", number)).fetchone()[0]
                if number:
                    ours.append((seconds - idle) * 1e6 / params.warm_calls)
                    loop.append(idle * 1e6 / params.warm_calls)
                    raw.append(per_call)
        figures.append(Figure(
            "2 warm verification", major, f"jwt_session_init {alg}", "us",
            value=median(ours), baseline=median(raw),
            baseline_label=f"({RAW_LIBRARY[alg[:2]]} verify)", target=target("warm"),
            samples={"jwt_session_init": ours, "raw verify": raw, "plpgsql loop": loop},
            notes="per call, server-side; the plpgsql loop's own cost is subtracted; the raw "
                  "baseline runs bench/raw_verify.py in the same backend's Python"))
    return figures


ROWS_TABLES = {
    # name: (label, policy expression or None for no RLS)
    "rows_none": ("no RLS", None),
    "rows_select": ("policy owner = (select auth.user_id())", "owner = (select auth.user_id())"),
    "rows_call": ("policy owner = auth.user_id()", "owner = auth.user_id()"),
    "rows_postgrest": ("policy on request.jwt.claims (PostgREST)",
                       "owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub')"),
    # Floors, for the analysis: what any policy costs (a constant), and what any PL/Python
    # function called per row with the getters' two arguments costs (one returning a constant).
    "rows_constant": ("floor: policy owner = 'user7'", "owner = 'user7'"),
    "rows_plpython": ("floor: empty PL/Python call per row",
                      "owner = bench.plpython_floor(current_setting('pg_session_jwt.jwt', true), "
                      "current_setting('request.jwt.claims', true))"),
}

PLPYTHON_FLOOR = """
create or replace function bench.plpython_floor(jwt text, claims text) returns text
language plpython3u stable parallel restricted as $$
return "user7"
$$"""


def rows_setup_sql(row_count):
    """One table per entry of ROWS_TABLES, the same rows (100 owners) in each, readable by READER."""
    statements = [
        "create schema if not exists bench",
        f"drop role if exists {READER}",
        f"create role {READER} login password '{READER_PASSWORD}'",
        f"grant usage on schema bench to {READER}",
        PLPYTHON_FLOOR,
    ]
    for table, (_label, policy) in ROWS_TABLES.items():
        statements += [
            f"drop table if exists bench.{table}",
            f"create table bench.{table} (id int, owner text, payload text)",
            f"insert into bench.{table} select i, 'user' || (i % 100), md5(i::text)"
            f" from generate_series(1, {int(row_count)}) i",
            f"grant select on bench.{table} to {READER}",
        ]
        if policy:
            statements += [
                f"alter table bench.{table} enable row level security",
                f"create policy owner_only on bench.{table} for select using ({policy})",
            ]
    return statements


def rows(pg, major, params, keys):
    """Scenario 3: per-row cost of the policy forms, as the non-superuser READER."""
    with pg.connect() as admin:
        for statement in rows_setup_sql(params.rows):
            admin.execute(statement)
        for table in ROWS_TABLES:
            admin.execute(f"vacuum analyze bench.{table}")
    key = keys["EdDSA"]
    sub = "user7"
    token = tokens.mint(key, sub=sub)
    claims = json.dumps({"sub": sub, "role": READER})
    with pg.connect(jwk=tokens.public_jwk(key), user=READER, password=READER_PASSWORD) as conn:
        # One core per query for every form: parallel plans on a shared 2-core host are noise,
        # and a PARALLEL RESTRICTED getter would get none while the no-RLS table would.
        conn.execute("set max_parallel_workers_per_gather = 0")
        conn.execute("select auth.init()")
        conn.execute("select auth.jwt_session_init(%s)", (token,))
        conn.execute("select set_config('request.jwt.claims', %s, false)", (claims,))
        expected = conn.execute("select count(*) from bench.rows_select").fetchone()[0]
        if expected != params.rows // 100 + (1 if params.rows % 100 >= 7 else 0):
            raise AssertionError(f"RLS let {expected} rows through for {sub}")

        def timer(table):
            def run():
                started = time.perf_counter()
                conn.execute(f"select count(*) from bench.{table}").fetchone()
                return (time.perf_counter() - started) * 1e6 / params.rows
            return run

        samples = interleave({table: timer(table) for table in ROWS_TABLES},
                             rounds=params.row_repeats, warmup=1)
    per_row = {table: median(values) for table, values in samples.items()}
    labels = {table: label for table, (label, _) in ROWS_TABLES.items()}
    raw = {labels[t]: v for t, v in samples.items()}
    common = {"unit": "us/row", "notes": f"{params.rows} rows, select count(*), no parallel workers"}
    return [
        Figure("3 per-row RLS", major, labels["rows_select"], value=per_row["rows_select"],
               baseline=per_row["rows_none"], baseline_label="(no RLS)",
               target=target("per_row_select_form"), samples=raw, **common),
        Figure("3 per-row RLS", major, labels["rows_call"], value=per_row["rows_call"],
               baseline=per_row["rows_postgrest"], baseline_label="(PostgREST policy)",
               target=target("per_row_call_form"), **common),
        Figure("3 per-row RLS", major, labels["rows_postgrest"],
               value=per_row["rows_postgrest"], baseline=per_row["rows_none"],
               baseline_label="(no RLS)", **common),
        Figure("3 per-row RLS", major, labels["rows_constant"],
               value=per_row["rows_constant"], baseline=per_row["rows_none"],
               baseline_label="(no RLS)", **common),
        Figure("3 per-row RLS", major, labels["rows_plpython"],
               value=per_row["rows_plpython"], baseline=per_row["rows_postgrest"],
               baseline_label="(PostgREST policy)", **common),
    ]
