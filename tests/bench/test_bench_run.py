"""`make bench --quick` keeps working: scenarios 1-4 and 6 end to end on the default major.

Scenario 5 (image size and start-up) builds the baseline image and starts several
containers; CI covers it with `make bench BENCH_ARGS=--quick`. Speed is not asserted.
"""

import json

import pytest

from bench import run as bench
from builder import matrix

pytestmark = [pytest.mark.container, pytest.mark.slow]


def test_quick_bench_runs_every_container_scenario(tmp_path, capsys, docker_client, request):
    default = matrix.load().default.major
    status = bench.main(["--quick", "--pg", str(default), "--out", str(tmp_path),
                         "--image-repo", request.config.getoption("--image-repo"),
                         "--only", "cold", "warm", "rows", "pgbench", "pooled"])
    out = capsys.readouterr().out
    assert status == 0, out
    data = json.loads((tmp_path / "latest.json").read_text())
    figures = data["figures"]
    assert not [f for f in figures if f["error"]], out
    scenarios = {f["scenario"] for f in figures}
    assert scenarios == {"1 cold backend", "2 warm verification", "3 per-row RLS",
                         "4 pgbench end to end", "6 pooled reuse", "6 pooled reset cost"}
    assert all(f["value"] > 0 and f["baseline"] > 0 for f in figures)
    assert (tmp_path / "latest.png").stat().st_size > 0
    assert "targets met:" in out
