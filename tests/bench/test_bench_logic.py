"""The benchmark harness's pure logic: statistics, targets, table, JSON, chart, pgbench parsing,
token layout for pgbench, and the raw-verification baseline script (run here on the host)."""

import json
from dataclasses import fields

import pytest

from bench import pgbench as bench_pgbench
from bench import raw_verify as bench_raw_verify
from bench import report as bench_report
from bench import run as bench
from bench import session as bench_session
from bench.report import Figure, Target
from builder.matrix import ROOT
from devtools.jwt import generate_key, mint
from tests.support import sodium as bundled_sodium


def test_median_and_summary():
    assert bench_report.median([3, 1, 2]) == 2
    assert bench_report.median([4, 1, 2, 3]) == 2.5
    with pytest.raises(ValueError):
        bench_report.median([])
    s = bench_report.summary([5, 1, 3, 2, 4])
    assert (s["n"], s["median"], s["min"], s["max"]) == (5, 3, 1, 5)
    assert s["iqr"] == pytest.approx(2)
    assert bench_report.summary([7])["iqr"] == 0


def test_ratio_without_baseline_is_none():
    assert bench_report.ratio(3, 2) == 1.5
    assert bench_report.ratio(3, 0) is None
    assert bench_report.ratio(3, None) is None
    assert bench_report.ratio(None, 2) is None


def test_interleave_alternates_and_drops_warmup():
    calls = []

    def runner(name):
        def run():
            calls.append(name)
            return len(calls)
        return run

    samples = bench_report.interleave({"a": runner("a"), "b": runner("b")}, rounds=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert samples == {"a": [3, 5], "b": [4, 6]}


@pytest.mark.parametrize("kind, limit, value, baseline, met", [
    ("ratio_max", 2.0, 19.9, 10.0, True),
    ("ratio_max", 2.0, 20.1, 10.0, False),
    ("ratio_min", 0.7, 71.0, 100.0, True),
    ("ratio_min", 0.7, 69.0, 100.0, False),
    ("diff_max", 30.0, 59.0, 30.0, True),
    ("diff_max", 30.0, 61.0, 30.0, False),
    ("abs_max", 438.0, 438.0, None, True),
    ("abs_max", 438.0, 500.0, 300.0, False),
    ("ratio_max", 2.0, 5.0, None, None),
    ("diff_max", 1.0, 5.0, None, None),
    ("ratio_min", 0.7, None, 100.0, None),
])
def test_target_met(kind, limit, value, baseline, met):
    assert Target(kind, limit).met(value, baseline) is met


def test_target_text_and_unknown_kind():
    assert Target("ratio_max", 1.05).describe() == "<= 1.05x"
    assert Target("ratio_min", 0.7).describe() == ">= 0.7x"
    assert Target("diff_max", 30, "ms").describe() == "<= +30 ms"
    assert Target("abs_max", 438, "MB").describe() == "<= 438 MB"
    with pytest.raises(ValueError):
        Target("faster", 1)


def test_figure_without_target_or_with_error_is_not_judged():
    assert Figure("s", 17, "x", "ms", value=1, baseline=1).met is None
    broken = Figure("s", 17, "x", "ms", value=1, baseline=1, target=Target("abs_max", 5),
                    error="boom")
    assert broken.met is None


@pytest.mark.parametrize("value, text", [
    (1234.5, "1234"), (12.345, "12.3"), (1.2345, "1.23"), (0.012345, "0.012"),
    (None, "-"), (float("nan"), "-"),
])
def test_fmt_number(value, text):
    assert bench_report.fmt_number(value) == text


def sample_figures():
    return [
        Figure("1 cold backend", 17, "EdDSA", "ms", value=40.0, baseline=20.0,
               baseline_label="(select 1)", target=Target("diff_max", 30, "ms"),
               samples={"session": [39, 40, 41], "select 1": [19, 20, 21]}),
        Figure("2 warm verification", 17, "RS256", "us", value=90.0, baseline=30.0,
               target=Target("ratio_max", 2.0)),
        Figure("3 per-row RLS", 15, "postgrest", "us/row", value=0.5, baseline=0.4),
        Figure("4 pgbench end to end", 17, "(did not run)", "", error="RuntimeError: pgbench"),
    ]


def test_table_has_every_column_and_judgement():
    text = bench_report.format_table(sample_figures())
    lines = text.splitlines()
    for column in ("scenario", "figure", "baseline", "ratio", "target", "met?"):
        assert column in lines[0]
    cold = next(line for line in lines if line.startswith("1 cold"))
    assert "40.0 ms (+20.0)" in cold and "<= +30 ms" in cold and cold.endswith("yes")
    warm = next(line for line in lines if line.startswith("2 warm"))
    assert "3.00x" in warm and warm.endswith("NO")
    rows = next(line for line in lines if line.startswith("3 per-row"))
    assert rows.endswith("-")
    assert "targets met: 1 of 2" in text
    assert "error in 4 pgbench end to end pg17 (did not run): RuntimeError: pgbench" in text


def test_json_keeps_raw_samples_and_judgement():
    data = json.loads(bench_report.to_json(sample_figures(), {"quick": True}))
    assert data["meta"] == {"quick": True}
    cold = data["figures"][0]
    assert cold["samples"]["session"]["raw"] == [39, 40, 41]
    assert cold["samples"]["session"]["summary"]["median"] == 40
    assert cold["met"] is True and cold["ratio"] == 2.0
    assert cold["target"]["text"] == "<= +30 ms"
    assert data["figures"][3]["error"].startswith("RuntimeError")


def test_chart_writes_a_png(tmp_path):
    path = tmp_path / "chart.png"
    assert bench_report.chart(sample_figures(), path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not bench_report.chart([Figure("s", 17, "x", "", error="e")], tmp_path / "no.png", "t")


def test_quick_mode_is_smaller_in_every_respect():
    for f in fields(bench.Params):
        assert 0 < getattr(bench.QUICK, f.name) <= getattr(bench.FULL, f.name), f.name
    assert bench.FULL.cold_samples >= 30  # a median of at least 30 connections


def test_unknown_major_is_a_user_error(capsys):
    assert bench.main(["--pg", "99", "--out", "/nonexistent"]) == 2
    assert "unknown Postgres major '99'" in capsys.readouterr().err


PGBENCH_OUTPUT = """pgbench (15.18 (Debian 15.18-0+deb12u1), server 17.6 (Debian 17.6-2))
transaction type: /tmp/x.sql
number of clients: 8
number of transactions actually processed: 12000/12000
number of failed transactions: 0 (0.000%)
latency average = 6.1 ms
initial connection time = 85.123 ms
tps = 1311.612345 (without initial connection time)
"""


def test_parse_tps():
    assert bench_pgbench.parse_tps(PGBENCH_OUTPUT) == pytest.approx(1311.612345)
    with pytest.raises(ValueError, match="no tps line"):
        bench_pgbench.parse_tps("connection refused")
    failed = PGBENCH_OUTPUT.replace("failed transactions: 0", "failed transactions: 3")
    with pytest.raises(ValueError, match="3 failed"):
        bench_pgbench.parse_tps(failed)


def test_pgbench_tokens_increase_per_client():
    key = generate_key("EdDSA")
    rows = bench_pgbench.token_rows(key, clients=3, per_client=4)
    assert len(rows) == 12
    for client in range(3):
        mine = sorted((seq, token, claims) for c, seq, token, claims in rows if c == client)
        assert [seq for seq, _, _ in mine] == [1, 2, 3, 4]
        jtis = [json.loads(bench_raw_verify.b64decode(t.split(".")[1]))["jti"] for _, t, _ in mine]
        assert jtis == sorted(set(jtis))
        assert all(json.loads(c)["sub"] == f"user{client}" for _, _, c in mine)


def test_pgbench_scripts_differ_only_in_how_identity_is_set():
    ours, theirs = (bench_pgbench.SCRIPTS[k] for k in ("pg_session_jwt", "PostgREST"))
    assert "auth.jwt_session_init(token, true)" in ours
    assert "set_config('request.jwt.claims', claims, true)" in theirs
    for script in (ours, theirs):
        assert script.startswith("\\set seq :seq + 1\nBEGIN;") and script.endswith("COMMIT;\n")


def test_rows_setup_gives_each_form_its_own_table():
    sql = "\n".join(bench_session.rows_setup_sql(1000))
    assert sql.count("enable row level security") == len(bench_session.ROWS_TABLES) - 1
    assert "using (owner = (select auth.user_id()))" in sql
    assert "using (owner = auth.user_id())" in sql
    assert "current_setting('request.jwt.claims', true)" in sql
    assert "generate_series(1, 1000)" in sql


@pytest.fixture
def sodium():
    """bench/raw_verify.py loading the bundled libsodium (tests/support/sodium.py)."""
    with bundled_sodium.bound(bench_raw_verify):
        yield


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "ES384", "ES512", "RS256", "PS384"])
def test_raw_verify_baseline_verifies_and_rejects(alg, sodium):
    key = generate_key(alg)
    batches = [[mint(key, sub="a") for _ in range(3)] for _ in range(2)]
    spec = {"alg": alg, "key": bench_session.raw_verify_key(key), "batches": batches}
    result = bench_raw_verify.run(spec)
    assert len(result["us_per_call"]) == 2 and all(v > 0 for v in result["us_per_call"])
    head, payload, signature = batches[0][0].split(".")
    forged = f"{head}.{payload}x.{signature}"
    with pytest.raises(ValueError, match="invalid signature"):
        bench_raw_verify.run({**spec, "batches": [[forged]]})


def test_raw_verify_times_one_batch_when_asked(sodium):
    key = generate_key("EdDSA")
    spec = {"alg": "EdDSA", "key": bench_session.raw_verify_key(key),
            "batches": [[mint(key, sub="a")], [mint(key, sub="b"), mint(key, sub="c")]]}
    assert len(bench_raw_verify.run(spec, only=1)["us_per_call"]) == 1


def test_the_docs_show_every_target_as_declared():
    from bench import targets

    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    assert targets.markdown() in doc, "docs/benchmarks.md is stale: paste `python -m bench.targets`"


def test_pooled_scripts_differ_only_in_how_identity_is_set():
    ours, baseline = (bench_pgbench.POOLED_SCRIPTS[k] for k in ("pg_session_jwt", "PostgREST"))
    assert "random(0, 7)" in ours and ", true)" in ours
    normalize = {"auth.jwt_session_init(token, true)": "IDENTITY",
                 "set_config('request.jwt.claims', claims, true)": "IDENTITY",
                 "notes_jwt": "notes", "notes_postgrest": "notes"}
    for old, new in normalize.items():
        ours, baseline = ours.replace(old, new), baseline.replace(old, new)
    assert ours == baseline
    assert "require_jti = off" in bench_pgbench.POOLED_SETUP


def test_the_pooled_reset_is_the_dev_stack_pooler_s_after_the_same_transaction():
    scripts = bench_pgbench.POOLED_SCRIPTS
    reset = bench_pgbench.RESET_QUERY
    assert scripts["pg_session_jwt_reset"] == f"{scripts['pg_session_jwt']}{reset};\n"
    pooler = (ROOT / "compose" / "pooler" / "entrypoint.sh").read_text()
    assert f"server_reset_query = {reset}\n" in pooler
    assert "server_reset_query_always = 1\n" in pooler


@pytest.mark.parametrize("exit_code, works", [(0, True), (1, False)])
def test_a_pgbench_that_only_names_a_package_is_not_used(tmp_path, monkeypatch, exit_code, works):
    """Debian's postgresql-client installs a pgbench wrapper that exits 1 without a server
    package; the benchmark then runs the image's pgbench instead."""
    fake = tmp_path / "pgbench"
    fake.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bench_pgbench.host_pgbench_works() is works
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert bench_pgbench.host_pgbench_works() is False
