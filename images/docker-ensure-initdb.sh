#!/usr/bin/env bash
# docker-ensure-initdb.sh [-c name=value ...]: initialize an empty data directory exactly as
# the entrypoint would (initdb, the extension, /docker-entrypoint-initdb.d), then exit instead
# of starting the server; a data directory that holds a database is left as it is. For an
# init container, or to initialize ahead of the first start, as the official image's script
# of the same name:
#     docker run --rm -v data:/var/lib/postgresql -e POSTGRES_PASSWORD=... IMAGE docker-ensure-initdb.sh
# Called as docker-enforce-initdb.sh (a link to this file), an existing database is an error:
# for a job that must start from an empty volume.
set -Eeo pipefail

# shellcheck source=images/docker-entrypoint.sh
source /usr/local/bin/docker-entrypoint.sh

if [ "${1:-}" = postgres ]; then
	shift
fi
docker_prepare postgres "$@"
if [ -n "$DATABASE_ALREADY_EXISTS" ]; then
	if [ "$(basename "$0")" = docker-enforce-initdb.sh ]; then
		pg_error "$PGDATA already holds a database, and docker-enforce-initdb.sh initializes only" \
			"an empty data directory: mount an empty volume, or use docker-ensure-initdb.sh"
		exit 1
	fi
	pg_log "$PGDATA already holds a database: nothing to initialize"
else
	docker_initialize "$@"
fi
