# Sourced by the entrypoint (no execute bit) on a new data directory: lets the `replica`
# service (compose profile `replica`) stream from db. Replication connections match only
# `replication` lines in pg_hba.conf; this one asks for the same password method as the
# image's rule for ordinary connections.
printf '\n# The dev stack replica (compose/replica/standby.sh)\nhost replication all all %s\n' \
	"$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
