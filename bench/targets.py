"""Every benchmark target, with why it was chosen: the one table docs/benchmarks.md shows.

`python -m bench.targets` prints that table; a unit test keeps the doc equal to it. Each
scenario module takes its target from here by name.
"""

import sys

from bench.report import Target

# The algorithms the cold target judges (on every major): the two identity providers sign with
# most; RS256 is measured and shown too.
COLD_ALGORITHMS = ("EdDSA", "ES256")

TARGETS = {
    "cold": (
        Target("diff_max", 5.0, "ms"),
        "1 cold backend: connect + init + jwt_session_init + user_id, over connect + one call of "
        "an empty PL/Python function (the floor); EdDSA and ES256, key in the startup packet "
        "and server-wide, every major",
        "Starting Python in a backend (the floor, 12-20 ms) is PL/Python's price, not ours; "
        "what we add on top must stay near the original Rust extension's 2 ms, so that a "
        "connection without a pooler (scripts, serverless functions) stays usable."),
    "warm": (
        Target("ratio_max", 1.5),
        "2 warm jwt_session_init with a fresh token, over the bare signature check of that token "
        "through the same library (libsodium for EdDSA, libcrypto for the others); every major",
        "Parsing, claim checks and the SQL glue must cost at most half of the signature check: "
        "for EdDSA that puts the whole call near the original Rust extension's 60 us."),
    "per_row_select_form": (
        Target("ratio_max", 1.05),
        "3 RLS `owner = (select auth.user_id())` over the same query without RLS, per row",
        "The documented policy form runs the getter once per query: rows must cost what they "
        "cost without the extension."),
    "per_row_call_form": (
        Target("diff_max", 1.0, "us"),
        "3 RLS `owner = auth.user_id()` over PostgREST's `current_setting('request.jwt.claims')` "
        "policy, per row",
        "Users who write the per-row form should pay at most a microsecond a row over what "
        "PostgREST users pay."),
    "pgbench": (
        Target("ratio_min", 0.7),
        "4 pgbench, 8 clients, a fresh token per transaction, over `SET LOCAL request.jwt.claims`",
        "Verifying a token per transaction is the price of not trusting the gateway; it should "
        "not halve throughput."),
    "pooled": (
        Target("ratio_min", 0.9),
        "6 pgbench through one pool: 8 users whose tokens are re-presented, transaction-scoped "
        "sessions, require_jti off, over `SET LOCAL request.jwt.claims` with the same query",
        "An identity provider's token is re-presented on every request for its lifetime; with "
        "the verified-token cache, verifying it again must cost almost nothing over trusting a "
        "gateway's claims."),
    "image_size": (
        Target("abs_max", 438.0, "MB"),
        "5 image size of the default major",
        "No larger than the official postgres:17-bookworm (438 MB), which users compare us with."),
    "start": (
        Target("ratio_max", 1.3),
        "5 start to ready on a fresh volume, over plain Debian PostgreSQL from the same base",
        "initdb plus creating the extension in three databases must not make the first start "
        "noticeably slower."),
    "restart": (
        Target("abs_max", 2.0, "s"),
        "5 restart on an existing volume, to ready",
        "The run-time configuration is checked at every start; a restart must stay quick for "
        "orchestrators' health checks."),
}


def target(name):
    """The Target named `name`."""
    return TARGETS[name][0]


def markdown():
    """The targets as the Markdown table of docs/benchmarks.md."""
    lines = ["| name | scenario | target | why |", "|---|---|---|---|"]
    lines += [f"| {name} | {scenario} | {t.describe()} | {why} |"
              for name, (t, scenario, why) in TARGETS.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
