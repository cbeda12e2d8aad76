#!/bin/bash
# Write pgbouncer's configuration from the environment (see compose/docker-compose.yml),
# then run pgbouncer in the foreground. Transaction mode: a server connection belongs to
# a client only for one transaction, so sessions must be transaction-scoped
# (auth.jwt_session_init(token, true)) and the JWK must be server-wide.
set -Eeuo pipefail

: "${DB_HOST:?set DB_HOST to the database host}"
: "${DB_PORT:=5432}"
: "${POOL_SIZE:=10}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
: "${APP_PASSWORD:?set APP_PASSWORD}"
if ! [[ "$POOL_SIZE" =~ ^[1-9][0-9]*$ ]]; then
    echo "pooler: POOL_SIZE must be a positive integer, not '$POOL_SIZE'" >&2
    exit 2
fi

conf_dir=/etc/pgbouncer/run

# userlist.txt: "user" "password", with any double quote in a value doubled.
quote() { local v=${1//\"/\"\"}; printf '"%s"' "$v"; }
umask 077
{
    printf '%s %s\n' "$(quote postgres)" "$(quote "$POSTGRES_PASSWORD")"
    printf '%s %s\n' "$(quote app)" "$(quote "$APP_PASSWORD")"
} > "$conf_dir/userlist.txt"

cat > "$conf_dir/pgbouncer.ini" <<INI
[databases]
* = host=$DB_HOST port=$DB_PORT

[pgbouncer]
listen_addr = *
listen_port = 6432
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $conf_dir/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = 200
; JDBC and others send it; it changes nothing that matters here.
ignore_startup_parameters = extra_float_digits
; One server connection serves one client after another, and pgbouncer resets nothing
; between them in transaction mode unless told to: a WITH HOLD cursor (with the previous
; client's rows), a session-level SET (search_path, statement_timeout,
; default_transaction_read_only) or a PREPAREd statement would be there for the next
; client. DISCARD ALL after every transaction closes, resets and deallocates all of it
; (and ends any session-level pg_session_jwt session, which app may not start anyway).
server_reset_query = DISCARD ALL
server_reset_query_always = 1
; Named prepared statements of the protocol (asyncpg's for every query, psycopg 3's past
; prepare_threshold, JDBC's) are tracked per client and re-prepared on whichever server
; connection serves it: pgbouncer 1.21 or later (this image: Debian's of the base suite,
; 1.24 in trixie). With 0 (no tracking), psycopg 3 past prepare_threshold fails with
; 'prepared statement "_pg3_0" already exists' once two clients share a server connection.
max_prepared_statements = 200
INI

exec pgbouncer "$conf_dir/pgbouncer.ini"
