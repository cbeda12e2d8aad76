"""Runs on the host against built images: `make bench` (`python -m bench.run`).

Each scenario is measured side by side with the baseline a user would pick instead, in the
same run; the targets and why each was chosen are in docs/benchmarks.md.

    run         the command: which scenarios, for which majors, and the report
    session     cold connection, warm verification and per-row RLS cost, inside a container
    pgbench     pgbench end to end against PostgREST-style claims
    images      image size and start-up, against plain Debian PostgreSQL
    raw_verify  the bare signature check the warm scenario is compared with
    report      figures, targets, table, JSON and chart
"""
