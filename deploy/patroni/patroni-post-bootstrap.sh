#!/bin/bash
# Patroni's bootstrap.post_bootstrap (patroni.yml): run once per cluster, on the node that
# ran initdb, with the new server up. It does what the image's entrypoint does on a new data
# directory, with the entrypoint's own functions: plpython3u and pg_session_jwt in template1
# (so every later database has them) and postgres, the database POSTGRES_DB (default
# postgres), then the scripts in /docker-entrypoint-initdb.d (*.sh, *.sql, *.sql.gz, ...).
# The other nodes are copies of this one (pg_basebackup), so they have all of it.
# Patroni passes a connection string as the last argument; the local socket (trusted in
# patroni.yml's pg_hba) reaches the same server.
set -Eeo pipefail
# shellcheck source=/dev/null
. /usr/local/bin/docker-entrypoint.sh

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export POSTGRES_USER POSTGRES_DB
docker_setup_db
shopt -s nullglob
files=(/docker-entrypoint-initdb.d/*)
shopt -u nullglob
docker_process_init_files "${files[@]}"
pg_log "post_bootstrap complete: the extension in template1, postgres and $POSTGRES_DB"
