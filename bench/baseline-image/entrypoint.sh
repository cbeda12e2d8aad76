#!/bin/sh
# BENCHMARK BASELINE ONLY: the least an entrypoint can do (see Dockerfile beside it).
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" > "$pwfile"
    initdb -D "$PGDATA" --username=postgres --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        -A scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo 'host all all all scram-sha-256' >> "$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
