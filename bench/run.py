"""`make bench`: measure pg-session-jwt against what users would pick instead.

    python -m bench.run [--quick] [--pg 17 ...] [--only cold warm rows pgbench images]
                            [--out bench-results]

Every figure is a median over repeated, interleaved runs, set against a baseline
measured in the same run (the machines are shared and noisy). Scenarios:

    cold     1. new connection + auth.init() + jwt_session_init() + user_id()   (every major)
    warm     2. jwt_session_init per new token vs raw verification in the image (every major)
    rows     3. per-row cost of RLS policy forms vs no RLS / PostgREST's form   (every major)
    pgbench  4. pgbench, 8 clients, session per transaction vs SET LOCAL claims (default major)
    images   5. image size and start to ready vs plain Debian postgresql-N      (every major)
    pooled   6. pgbench, 8 users re-presenting tokens (verified-token cache)    (every major)

Prints a table (scenario, figure, baseline, ratio, target, met?) and writes the raw
figures as JSON and a chart as PNG into the output folder. `--quick` runs everything
briefly (CI keeps the harness working with it; it says nothing about speed). The exit
status is 1 when a scenario failed to run, never because a target was missed.
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import images as bench_images
from bench import pgbench as bench_pgbench
from bench import report as bench_report
from bench import session as bench_session
from bench.report import Figure
from builder import containers, matrix
from builder.progress import say
from runtime.errors import UserError, failed

SCENARIOS = ("cold", "warm", "rows", "pgbench", "images", "pooled")
DEFAULT_OUT = matrix.ROOT / "bench-results"
SCENARIO_TITLES = {"cold": "1 cold backend", "warm": "2 warm verification",
                   "rows": "3 per-row RLS", "pgbench": "4 pgbench end to end",
                   "images": "5 images", "pooled": "6 pooled reuse"}


@dataclass(frozen=True)
class Params:
    """How much of each scenario to run."""

    cold_samples: int = 40         # connections of each kind (issue: >= 30)
    warm_calls: int = 500          # tokens per timed batch
    warm_batches: int = 7          # timed batches per algorithm (plus one warm-up)
    rows: int = 200_000            # per-row figures: enough rows that per-query costs vanish
    row_repeats: int = 15          # count(*) per table
    pgbench_transactions: int = 1500  # per client per run
    pgbench_rounds: int = 3        # runs of each script, alternating
    image_starts: int = 5          # fresh starts of each image, alternating


FULL = Params()
QUICK = Params(cold_samples=3, warm_calls=20, warm_batches=2, rows=5_000, row_repeats=2,
               pgbench_transactions=20, pgbench_rounds=1, image_starts=1)


def ensure_image(client, tag):
    import docker

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        major = tag.rpartition(":")[2]
        raise UserError(f"image {tag} is missing: build it with `make image PG={major}`") from None


def guarded(scenario, major, run, announce=True):
    """Run one scenario; a failure becomes an error figure so the other scenarios still run."""
    if announce:
        say(f"bench pg{major}", scenario)
    try:
        return run()
    except Exception as exc:  # reported in the table and JSON; the exit status says so
        message = f"{type(exc).__name__}: {exc}".strip()
        say(f"bench pg{major}", f"{scenario} failed: {message.splitlines()[0][:200]}")
        return [Figure(SCENARIO_TITLES[scenario], major, "(did not run)", "", error=message)]


def bench_major(client, entry, mx, params, only, keys, log_dir, repo=matrix.DEFAULT_REPO):
    """All scenarios of one major; the container for 1-4 and 6 is shared and always removed.
    `repo` names the images of scenarios 1-4 and 6 (an engineer's own build, `--image-repo`)."""
    judged = entry.major == mx.default.major
    figures = []
    ensure_image(client, entry.tag(repo))
    wanted = [s for s in ("cold", "warm", "rows", "pgbench", "pooled")
              if s in only and (judged or s != "pgbench")]
    if wanted:
        figures += guarded(wanted[0], entry.major,
                           lambda: run_in_container(client, entry, params, wanted, keys, judged,
                                                    log_dir, repo),
                           announce=False)
    if "images" in only:
        figures += guarded("images", entry.major, lambda: bench_images.run(
            client, entry, mx.mirror, params, judged))
    return figures


def run_in_container(client, entry, params, wanted, keys, judged, log_dir,
                     repo=matrix.DEFAULT_REPO):
    """Scenarios 1-4 and 6 on one container of `entry`'s image, always removed afterwards."""
    figures = []
    pg = containers.start(client, entry.tag(repo))
    try:
        if "cold" in wanted:
            figures += guarded("cold", entry.major, lambda: bench_session.cold(
                pg, entry.major, params, keys))
        if "warm" in wanted:
            figures += guarded("warm", entry.major, lambda: bench_session.warm(
                pg, entry.major, params, keys))
        if "rows" in wanted:
            figures += guarded("rows", entry.major, lambda: bench_session.rows(
                pg, entry.major, params, keys))
        if "pgbench" in wanted:
            figures += guarded("pgbench", entry.major, lambda: bench_pgbench.run(
                pg, entry.major, params, keys["EdDSA"]))
        if "pooled" in wanted:
            figures += guarded("pooled", entry.major, lambda: bench_pgbench.pooled(
                pg, entry.major, params, keys["EdDSA"]))
    finally:
        failed = any(f.error for f in figures)
        containers.stop(pg, log_dir=log_dir if failed else None)
    return figures


def git_revision():
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=matrix.ROOT,
                            capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=matrix.ROOT,
                           capture_output=True, text=True).stdout.strip()
    return (result.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def write_outputs(figures, meta, out):
    """results-<stamp>.json/.png and latest.json/.png in `out`; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = meta["started"].replace(":", "").replace("-", "")
    written = []
    text = bench_report.to_json(figures, meta)
    title = (f"pg-session-jwt bench {meta['started']} ({'quick' if meta['quick'] else 'full'}, "
             f"{meta['revision']}): medians, ours vs baseline measured in the same run")
    for name in (f"results-{stamp}", "latest"):
        (out / f"{name}.json").write_text(text + "\n")
        written.append(out / f"{name}.json")
        if bench_report.chart(figures, out / f"{name}.png", title):
            written.append(out / f"{name}.png")
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.run",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="run every scenario briefly (keeps the harness working; not a measurement)")
    parser.add_argument("--pg", nargs="*", default=[], metavar="MAJOR",
                        help="majors to measure (default: all in images/versions.yaml)")
    parser.add_argument("--only", nargs="*", default=list(SCENARIOS), choices=SCENARIOS,
                        metavar="SCENARIO", help=f"scenarios to run: {', '.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for the JSON and PNG (default bench-results/)")
    parser.add_argument("--image-repo", default=matrix.DEFAULT_REPO,
                        help="repository of the images measured in scenarios 1-4 and 6 "
                             f"(default {matrix.DEFAULT_REPO})")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        from builder.docker_client import connect
        from devtools.jwt import generate_key

        mx = matrix.load()
        entries = mx.select(args.pg)
        client = connect()
        keys = {alg: generate_key(alg) for alg in bench_session.ALGORITHMS}
        figures = []
        for entry in entries:
            figures += bench_major(client, entry, mx, params, args.only, keys, args.out / "logs",
                                   args.image_repo)
    except UserError as exc:
        return failed(exc)
    meta = {"started": started, "quick": args.quick, "majors": [e.major for e in entries],
            "scenarios": args.only, "params": asdict(params), "revision": git_revision(),
            "host": {"machine": platform.machine(), "python": platform.python_version(),
                     "cpus": os.cpu_count()}}
    written = write_outputs(figures, meta, args.out)
    print(bench_report.format_table(figures))
    print("\nwritten: " + ", ".join(str(p.relative_to(matrix.ROOT)) if p.is_relative_to(matrix.ROOT)
                                    else str(p) for p in written))
    if args.quick:
        print("(quick mode: figures from a few samples; they say nothing about speed)")
    return 1 if any(fig.error for fig in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
