#!/bin/bash
# Entrypoint of the Patroni node image (deploy/patroni/Dockerfile). Patroni starts
# PostgreSQL itself, so the image's entrypoint does not run; what it does before any start
# is done here with its own functions: PG_SESSION_JWT_* and a mounted settings YAML checked
# and written to /var/run/postgresql/pg-session-jwt.conf, the secret that authenticates the
# JWKS cache made (root's, 0600) and handed on in the environment, the issuer's key set
# fetched. Then the defaults of patroni.yml's per-node values (its header lists them), and
# Patroni as the postgres user. Initialization is Patroni's (initdb, then
# patroni-post-bootstrap.sh on the first node; pg_basebackup on the others).
set -Eeo pipefail

# Sourced, the image's entrypoint only defines its functions (and RUNTIME_DIR, RUNTIME_CONF).
# shellcheck source=/dev/null
. /usr/local/bin/docker-entrypoint.sh

# patroni_require VAR HINT: refuse to start without VAR, naming it and how to set it.
patroni_require() {
	if [ -z "${!1:-}" ]; then
		pg_error "$1 is not set: $2"
		exit 1
	fi
}

patroni_defaults() {
	patroni_require PATRONI_SCOPE "the cluster's name, the same on every node (e.g. PATRONI_SCOPE=demo)"
	patroni_require PATRONI_ETCD3_HOSTS "etcd's client endpoints, e.g. PATRONI_ETCD3_HOSTS=etcd1:2379,etcd2:2379,etcd3:2379"
	patroni_require PATRONI_SUPERUSER_PASSWORD "the password of the superuser postgres, the same on every node"
	patroni_require PATRONI_REPLICATION_PASSWORD "the password of the replication role replicator, the same on every node"
	: "${PATRONI_NAME:=$(hostname)}"
	: "${PATRONI_RESTAPI_CONNECT_ADDRESS:=$PATRONI_NAME:8008}"
	: "${PATRONI_POSTGRESQL_CONNECT_ADDRESS:=$PATRONI_NAME:5432}"
	: "${PATRONI_POSTGRESQL_BIN_DIR:=/usr/lib/postgresql/$PG_MAJOR/bin}"
	# Patroni removes a data directory it has to copy again (or moves it aside) and creates
	# it anew: that fails on a mount point, which PGDATA is on 15 and 17 (the image's VOLUME).
	if [ -z "${PATRONI_POSTGRESQL_DATA_DIR:-}" ]; then
		PATRONI_POSTGRESQL_DATA_DIR=$PGDATA
		if mountpoint -q "$PGDATA"; then
			PATRONI_POSTGRESQL_DATA_DIR=$PGDATA/patroni
		fi
	fi
	export PATRONI_NAME PATRONI_RESTAPI_CONNECT_ADDRESS PATRONI_POSTGRESQL_CONNECT_ADDRESS \
		PATRONI_POSTGRESQL_BIN_DIR PATRONI_POSTGRESQL_DATA_DIR
}

# As root: the data directory's parent belongs to postgres, so that Patroni can create,
# remove and move the data directory (on 18 the parent, /var/lib/postgresql/18, is new).
patroni_directories() {
	local data=$PATRONI_POSTGRESQL_DATA_DIR parent
	parent=$(dirname "$data")
	mkdir -p "$parent" "$RUNTIME_DIR"
	chmod 3777 "$RUNTIME_DIR"
	[ "$(stat -c %U "$parent")" = postgres ] || chown postgres:postgres "$parent"
	if [ -d "$data" ]; then
		find "$data" \! -user postgres -exec chown postgres:postgres '{}' +
	fi
	chown postgres:postgres "$RUNTIME_CONF"
}

if [ -z "${_PG_SESSION_JWT_CHECKED:-}" ]; then
	patroni_defaults
	docker_write_runtime_config
	docker_jwks_secret
fi
if [ "$(id -u)" = 0 ]; then
	patroni_directories
	export _PG_SESSION_JWT_CHECKED=1
	exec gosu postgres "$0" "$@"
fi
unset _PG_SESSION_JWT_CHECKED
docker_fetch_jwks
exec patroni /etc/patroni/patroni.yml "$@"
