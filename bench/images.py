"""Benchmark scenario 5: image size and start-up, against a plain Debian PostgreSQL image.

The baseline image (bench/baseline-image/: the same Debian base with only
postgresql-N and a minimal initdb-then-exec-postgres entrypoint) is built in the same
run as the measurement. Start to ready is the time from `docker run` on a fresh
(anonymous) volume until a TCP login works; restart is stop + start on the same volume.
Starts of the two images alternate.
"""

import time

from bench.report import Figure, interleave, median
from bench.targets import target
from builder import base_image, containers, docker_build
from builder.matrix import ROOT
from builder.progress import say

BASELINE_CONTEXT = ROOT / "bench" / "baseline-image"
BASELINE_REPO = "pg-session-jwt-bench-baseline"


def baseline_tag(major):
    return f"{BASELINE_REPO}:{major}"


def build_baseline(client, entry, mirror):
    """Build the baseline image of `entry` (a matrix.Major); returns its tag."""
    base = base_image.ensure(client, entry.suite, mirror)
    tag = baseline_tag(entry.major)
    say(f"bench pg{entry.major}", f"building the baseline image {tag} from {base}")
    built, replaced = docker_build.build(
        client, context=BASELINE_CONTEXT, tag=tag, scope=f"bench pg{entry.major}",
        what=f"the benchmark baseline {tag}", buildargs={"BASE_IMAGE": base, "PG_MAJOR": str(entry.major)})
    docker_build.tag_and_prune(client, built, [tag], [replaced])
    return tag


def image_mb(client, tag):
    return client.images.get(tag).attrs["Size"] / 1e6


def time_start(client, image):
    """Seconds from `docker run` (fresh volume) to a TCP login, and from restart to login."""
    started = time.perf_counter()
    pg = containers.start(client, image, wait=False)
    try:
        containers.wait_ready(pg, timeout=180, interval=0.05)
        fresh = time.perf_counter() - started
        pg.container.stop(timeout=30)
        started = time.perf_counter()
        pg.container.start()
        containers.wait_ready(pg, timeout=60, interval=0.05)
        return fresh, time.perf_counter() - started
    finally:
        containers.stop(pg)


def run(client, entry, mirror, params, judged):
    """Scenario 5 for one major; size and start targets apply where `judged` (the default)."""
    ours_tag = entry.tag()
    base_tag = build_baseline(client, entry, mirror)
    restarts = {"ours": [], "baseline": []}

    def timer(name, tag):
        def run_one():
            fresh, again = time_start(client, tag)
            restarts[name].append(again)
            return fresh
        return run_one

    starts = interleave({"ours": timer("ours", ours_tag), "baseline": timer("baseline", base_tag)},
                        rounds=params.image_starts)
    ours_mb, base_mb = image_mb(client, ours_tag), image_mb(client, base_tag)
    return [
        Figure("5 image size", entry.major, f"{ours_tag} size", "MB", value=ours_mb,
               baseline=base_mb, baseline_label="(Debian postgresql only)",
               target=target("image_size") if judged else None,
               notes="target: the official postgres:17-bookworm image"),
        Figure("5 start to ready", entry.major, "fresh volume", "s",
               value=median(starts["ours"]), baseline=median(starts["baseline"]),
               baseline_label="(Debian postgresql, minimal entrypoint)",
               target=target("start"), samples=starts),
        Figure("5 start to ready", entry.major, "restart, existing volume", "s",
               value=median(restarts["ours"]), baseline=median(restarts["baseline"]),
               baseline_label="(Debian postgresql, minimal entrypoint)",
               target=target("restart"), samples=restarts),
    ]
