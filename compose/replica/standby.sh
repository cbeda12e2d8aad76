#!/bin/bash
# Entrypoint of the dev stack's `replica` service (compose profile `replica`): on an empty
# data directory, copy db with pg_basebackup and make it a hot standby that streams from db
# through a replication slot (so db keeps the WAL the standby has not received yet); then
# start it with the image's own entrypoint, which writes the same run-time configuration
# (the issuer's key) as on db and starts postgres as the postgres user.
#
# DEVELOPMENT ONLY: it replicates as the superuser with the superuser's password; a real
# deployment uses a role with REPLICATION only, or an operator (see deploy/cnpg/).
set -Eeuo pipefail

PRIMARY_HOST=${PRIMARY_HOST:-db}
SLOT=${REPLICA_SLOT:-replica}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA"
	chmod 0700 "$PGDATA"
	export PGHOST=$PRIMARY_HOST PGUSER=${POSTGRES_USER:-postgres} PGDATABASE=postgres
	export PGPASSWORD=${POSTGRES_PASSWORD:?the replica needs db\'s POSTGRES_PASSWORD}
	# A slot left by an earlier replica (its volume removed, db's kept) is taken over.
	slot_exists=$(gosu postgres psql -XtAq --set slot="$SLOT" 2>&1 \
		<<< "select 1 from pg_replication_slots where slot_name = :'slot'") || {
		echo "replica: cannot query db ($slot_exists)" >&2
		exit 1
	}
	create=(--create-slot)
	[ "$slot_exists" = 1 ] && create=()
	echo "replica: copying $PRIMARY_HOST with pg_basebackup (slot $SLOT)"
	# -R writes standby.signal and primary_conninfo/primary_slot_name: a hot standby.
	gosu postgres pg_basebackup --pgdata="$PGDATA" --wal-method=stream --write-recovery-conf \
		--slot="$SLOT" "${create[@]}" --checkpoint=fast --no-password
	unset PGHOST PGUSER PGDATABASE PGPASSWORD
fi
exec docker-entrypoint.sh "$@"
