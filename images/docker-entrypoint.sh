#!/bin/bash
# Placeholder entrypoint (replaced by the full official-image contract, issue 4):
# initialise an empty data directory, create the extension, exec postgres.
set -Eeuo pipefail
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"; chown postgres:postgres "$PGDATA"; chmod 700 "$PGDATA"
    exec gosu postgres "$BASH_SOURCE" "$@"
fi
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp); printf '%s\n' "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" > "$pwfile"
    initdb -D "$PGDATA" --username=postgres --pwfile="$pwfile" -E UTF8 --locale=en_US.UTF-8 -A scram-sha-256 >/dev/null
    rm -f "$pwfile"
    printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c config_file=/etc/postgresql/postgresql.conf" -w start >/dev/null
    for db in template1 postgres; do
        psql -v ON_ERROR_STOP=1 -U postgres -d "$db" -c 'create extension if not exists plpython3u' -c 'create extension if not exists pg_session_jwt' >/dev/null
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
if [ "$1" = postgres ]; then shift; exec postgres -D "$PGDATA" -c config_file=/etc/postgresql/postgresql.conf "$@"; fi
exec "$@"
