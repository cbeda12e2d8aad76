#!/usr/bin/env bash
# The image's entrypoint: the official postgres image's contract (POSTGRES_* variables, their
# _FILE variants, /docker-entrypoint-initdb.d, `-c` pass-through, postgres as PID 1) plus
# ours: the extension created at initialization, and the run-time configuration (server-wide
# JWK, audience, issuer, a mounted settings YAML) checked and written at every start by
# runtime/config.py before anything touches the data directory, and the JWKS URL's
# key set fetched before the server starts.
#
# Started as root it fixes ownership and re-executes itself as postgres (gosu); started with
# `--user <uid>` it runs as that uid. Init scripts may source this file to reuse its functions.
set -Eeo pipefail

MAIN_CONF=/etc/postgresql/postgresql.conf
# Writable by any uid and the one directory a --read-only container must mount (the server's
# socket and lock file live there too), so the run-time files go here.
RUNTIME_DIR=/var/run/postgresql
RUNTIME_CONF=$RUNTIME_DIR/pg-session-jwt.conf

pg_log() { printf 'pg-session-jwt: %s\n' "$*"; }
pg_error() { printf 'pg-session-jwt: error: %s\n' "$*" >&2; }

# file_env VAR [DEFAULT]: VAR from itself or from the file named by VAR_FILE (docker secrets).
file_env() {
	local var=$1 file_var="${1}_FILE" default=${2:-}
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		pg_error "both $var and $file_var are set: set only one of them"
		exit 1
	fi
	local value=$default
	if [ -n "${!var:-}" ]; then
		value=${!var}
	elif [ -n "${!file_var:-}" ]; then
		if ! value=$(< "${!file_var}"); then
			pg_error "$file_var: cannot read ${!file_var}"
			exit 1
		fi
	fi
	export "$var"="$value"
	unset "$file_var"
}

_is_sourced() {
	[ "${#FUNCNAME[@]}" -ge 2 ] && [ "${FUNCNAME[0]}" = _is_sourced ] && [ "${FUNCNAME[1]}" = source ]
}

# `postgres --help`, `-V`, `--describe-config` only print: no initialization for them. `-C name`
# is left out, as upstream does: it needs the configuration, so it runs after initialization,
# against the real configuration (`docker run -v data:... IMAGE -C shared_buffers`).
_pg_want_help() {
	local arg
	for arg; do
		case "$arg" in
			-'?' | --help | --describe-config | -V | --version) return 0 ;;
		esac
	done
	return 1
}

# _pg_server_args ARG...: the arguments without `-C name`, into the array server_args. The
# initialization server and the password_encryption query get these: `-C` is for the final
# command only (upstream passes it on, and its initialization server then fails to start).
_pg_server_args() {
	server_args=()
	while [ $# -gt 0 ]; do
		case "$1" in
			-C) shift ;;
			-C*) ;;
			*) server_args+=("$1") ;;
		esac
		shift
	done
}

docker_setup_env() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	# Empty means "what password_encryption says", decided in pg_setup_hba_conf.
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
	DATABASE_ALREADY_EXISTS=
	if [ -s "$PGDATA/PG_VERSION" ]; then
		DATABASE_ALREADY_EXISTS=true
	fi
}

# Refuse, before anything is written, what would make a database nobody can log in to.
docker_verify_minimum_env() {
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		cat >&2 <<-EOF
			pg-session-jwt: error: the data directory $PGDATA is empty and no superuser password is set.
			    Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE, a file holding it, e.g. a docker secret)
			    to initialize the database, e.g.  docker run -e POSTGRES_PASSWORD=... pg-session-jwt
			    Or set POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without a password
			    (not for anything reachable by others).
		EOF
		exit 1
	fi
	if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
		cat >&2 <<-'EOF'
			********************************************************************************
			WARNING: POSTGRES_HOST_AUTH_METHOD=trust: every host that reaches this server can
			         connect as any user, superuser included, WITHOUT A PASSWORD.
			         Use it only on a machine and network nobody else can reach; otherwise set
			         POSTGRES_PASSWORD and leave POSTGRES_HOST_AUTH_METHOD unset.
			********************************************************************************
		EOF
	fi
}

# From 18 on (PG_SESSION_JWT_LEGACY_PGDATA is set by the build only there) data belongs below
# /var/lib/postgresql/<major>/; a cluster at the old /var/lib/postgresql/data, with nothing at
# PGDATA, is a volume left from an image of an older major: initializing an empty PGDATA
# beside it would look like lost data. Refused, as the official image does.
docker_verify_layout() {
	local legacy=${PG_SESSION_JWT_LEGACY_PGDATA:-}
	[ -n "$legacy" ] || return 0
	case "$PGDATA/" in "$legacy"/*) return 0 ;; esac
	if [ -s "$legacy/PG_VERSION" ]; then
		cat >&2 <<-EOF
			pg-session-jwt: error: PostgreSQL $PG_MAJOR keeps its data in $PGDATA (the official image's
			    layout from 18 on: one volume at /var/lib/postgresql, one directory per major), but
			    there is a PostgreSQL $(< "$legacy/PG_VERSION") database at $legacy (a mount or volume from
			    an older image), which this container would not use.
			    To move it to PostgreSQL $PG_MAJOR, upgrade it with pg_upgrade (both majors' binaries
			    are needed; see https://github.com/docker-library/postgres/issues/37), or dump it
			    with the old image and restore it here. Then mount one volume at /var/lib/postgresql.
			    To keep using that directory as it is, set PGDATA=$legacy (and run the image of
			    its major).
		EOF
		exit 1
	fi
}

# A data directory from another major cannot be started by this one; say so before postgres does.
docker_verify_data_major() {
	local found
	found=$(< "$PGDATA/PG_VERSION")
	if [ "$found" != "$PG_MAJOR" ]; then
		pg_error "$PGDATA holds a PostgreSQL $found database and this image runs PostgreSQL $PG_MAJOR:" \
			"use the pg-session-jwt:$found image, or upgrade the data (pg_upgrade, or dump and restore)"
		exit 1
	fi
}

# Check PG_SESSION_JWT_* and the settings YAML and write $RUNTIME_CONF (at every start).
# The YAML's `issuers:` reach the server as PG_SESSION_JWT_ISSUERS, in its environment only
# (backends take their issuers from nowhere a role could write).
docker_write_runtime_config() {
	mkdir -p "$RUNTIME_DIR"
	local issuers
	if ! issuers=$(PYTHONPATH=$PG_SESSION_JWT_HOME python3 -m runtime.config \
		--major "$PG_MAJOR" --out "$RUNTIME_CONF" --print-issuers); then
		pg_error "start refused; nothing in $PGDATA was changed"
		exit 1
	fi
	if [ -n "$issuers" ]; then
		export PG_SESSION_JWT_ISSUERS=$issuers
	fi
}

# The identity provider's key set (PG_SESSION_JWT_JWKS_URL, or each of PG_SESSION_JWT_ISSUERS), fetched as the server's user
# before the server starts, so that the first connection is served; backends keep the same
# file fresh afterwards (extension/pg_session_jwt/jwks.py). An unreachable issuer starts the
# server without keys (tokens refused until a backend's fetch succeeds); a wrong URL, CA or
# document refuses the start.
docker_fetch_jwks() {
	[ -n "${PG_SESSION_JWT_JWKS_URL:-}${PG_SESSION_JWT_ISSUERS:-}" ] || return 0
	if ! python3 -m pg_session_jwt.jwks fetch --dir "$RUNTIME_DIR"; then
		pg_error "start refused; nothing in $PGDATA was changed"
		exit 1
	fi
}

# The secret that authenticates the JWKS cache file (extension/pg_session_jwt/jwks.py says
# why): a file the server's user, and so a role with pg_write_server_files, can neither read
# nor replace when started as root (root-owned, 0600, in the sticky run directory), so a
# restart keeps the last good set; started as another uid, a new one per start. It reaches
# the server through the environment only (and the re-executed entrypoint after gosu). An
# operator's own value is kept.
docker_jwks_secret() {
	[ -n "${PG_SESSION_JWT_JWKS_URL:-}${PG_SESSION_JWT_ISSUERS:-}" ] &&
		[ -z "${PG_SESSION_JWT_JWKS_SECRET:-}" ] || return 0
	local file="$RUNTIME_DIR/pg-session-jwt-jwks.secret"
	if [ "$(id -u)" = 0 ]; then
		# Anything else at that name (another owner, a symlink) was not made here.
		if [ -L "$file" ] || [ ! -s "$file" ] || [ "$(stat -c %u "$file")" != 0 ]; then
			rm -f "$file"
			(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$file")
		fi
		PG_SESSION_JWT_JWKS_SECRET=$(cat "$file")
	else
		PG_SESSION_JWT_JWKS_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
	fi
	export PG_SESSION_JWT_JWKS_SECRET
}

docker_create_db_directories() {
	local uid
	uid=$(id -u)
	mkdir -p "$PGDATA" "$RUNTIME_DIR"
	if [ "$uid" = 0 ]; then
		chmod 3777 "$RUNTIME_DIR"
		# Only what is not postgres's already: an existing data directory stays as it is.
		find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
		[ -n "$DATABASE_ALREADY_EXISTS" ] || chmod 0700 "$PGDATA"
		if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
			mkdir -p "$POSTGRES_INITDB_WALDIR"
			find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres:postgres '{}' +
			chmod 0700 "$POSTGRES_INITDB_WALDIR"
		fi
		chown postgres:postgres "$RUNTIME_CONF"
		return
	fi
	if [ "$(stat -c %u "$PGDATA")" != "$uid" ]; then
		pg_error "$PGDATA belongs to uid $(stat -c %u "$PGDATA") but this container runs as uid $uid:" \
			"mount a directory owned by uid $uid there, or set PGDATA to a new subdirectory of the" \
			"volume (e.g. PGDATA=$PGDATA/pgdata)"
		exit 1
	fi
	[ -n "$DATABASE_ALREADY_EXISTS" ] || chmod 0700 "$PGDATA"
}

# initdb needs a passwd entry for the running uid; an arbitrary --user uid has none, so
# nss_wrapper supplies one for initdb alone.
docker_init_database_dir() {
	local wrapper='' uid gid
	uid=$(id -u)
	gid=$(id -g)
	if ! getent passwd "$uid" > /dev/null; then
		for wrapper in /usr/lib/*/libnss_wrapper.so; do
			[ -s "$wrapper" ] && break
		done
		export NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP LD_PRELOAD="$wrapper"
		NSS_WRAPPER_PASSWD=$(mktemp -p "$RUNTIME_DIR" passwd.XXXXXX)
		NSS_WRAPPER_GROUP=$(mktemp -p "$RUNTIME_DIR" group.XXXXXX)
		printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$uid" "$gid" "$PGDATA" > "$NSS_WRAPPER_PASSWD"
		printf 'postgres:x:%s:\n' "$gid" > "$NSS_WRAPPER_GROUP"
	fi
	local args=(--username="$POSTGRES_USER" --encoding=UTF8)
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		args+=(--waldir="$POSTGRES_INITDB_WALDIR")
	fi
	# The password reaches initdb through a pipe, never a file. POSTGRES_INITDB_ARGS comes last
	# so that its options win, and it is evaluated by the shell, as upstream does, so that
	# quoted values work: POSTGRES_INITDB_ARGS='--locale-provider=icu --icu-locale="en-US"'.
	# (The container's own environment is trusted: whoever sets it runs the container.)
	eval 'initdb "${args[@]}" --no-sync --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"$POSTGRES_INITDB_ARGS"
	# initdb's own sync fsyncs its ~1000 files one by one (half of its run time); one syncfs of
	# the file system(s) holding them makes the new cluster just as durable, on every major
	# (initdb --sync-method=syncfs exists from 17 on only).
	sync -f "$PGDATA" ${POSTGRES_INITDB_WALDIR:+"$POSTGRES_INITDB_WALDIR"}
	if [ -n "${LD_PRELOAD:-}" ]; then
		rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
		unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
	fi
}

# Connections from other hosts: POSTGRES_HOST_AUTH_METHOD, by default the method that matches
# how passwords are stored (password_encryption, with the container's own arguments and the
# run-time configuration: `-c password_encryption=md5` gives md5 rules), as upstream does.
pg_setup_hba_conf() {
	local auth server_args
	_pg_server_args "$@"
	auth=$(postgres -c config_file="$MAIN_CONF" "${server_args[@]}" -C password_encryption)
	: "${POSTGRES_HOST_AUTH_METHOD:=$auth}"
	{
		printf '\n# Added by the image (POSTGRES_HOST_AUTH_METHOD)\n'
		if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
			printf '# warning: trust is enabled for all connections\n'
			printf '# see https://www.postgresql.org/docs/current/auth-trust.html\n'
		fi
		printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
	} >> "$PGDATA/pg_hba.conf"
}

# The initialization server listens on the Unix socket only: nothing outside the container
# (nor the TCP healthcheck) sees a half-initialized database.
# NOTIFY_SOCKET is cleared for it so that a process supervisor (systemd, `podman run
# --sd-notify`) is told "ready" by the final server only.
docker_temp_server_start() {
	local server_args
	_pg_server_args "$@"
	set -- -c config_file="$MAIN_CONF" "${server_args[@]}" -c listen_addresses='' -p "${PGPORT:-5432}"
	NOTIFY_SOCKET='' PGUSER="${PGUSER:-$POSTGRES_USER}" \
		pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

docker_temp_server_stop() {
	PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

# docker_process_sql [psql options]: run SQL from standard input (or -f FILE) as the superuser,
# in POSTGRES_DB unless the options name another --dbname (psql takes the last one).
docker_process_sql() {
	local query_runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [ -n "$POSTGRES_DB" ]; then
		query_runner+=(--dbname "$POSTGRES_DB")
	fi
	PGHOST='' PGHOSTADDR='' "${query_runner[@]}" "$@"
}

# The extension in template1, so that every later database has it (POSTGRES_DB too), and in
# postgres, which initdb made before.
docker_setup_db() {
	local sql='CREATE EXTENSION IF NOT EXISTS plpython3u; CREATE EXTENSION IF NOT EXISTS pg_session_jwt;'
	local db
	for db in template1 postgres; do
		docker_process_sql --dbname "$db" -q -c "$sql"
	done
	local exists
	exists=$(docker_process_sql --dbname postgres -tA --set db="$POSTGRES_DB" \
		<<< "SELECT 1 FROM pg_database WHERE datname = :'db'")
	if [ -z "$exists" ]; then
		docker_process_sql --dbname postgres -q --set db="$POSTGRES_DB" <<< 'CREATE DATABASE :"db"'
		pg_log "created database $POSTGRES_DB (from template1, so with the extension)"
	fi
}

# docker_process_init_files FILE...: run each by its kind, in the order given. Sourced *.sh
# files get this script's functions and, as upstream gives them, the `psql` array:
# "${psql[@]}" -c '...' runs SQL like docker_process_sql.
docker_process_init_files() {
	psql=(docker_process_sql)
	local f
	for f; do
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then
					pg_log "running $f"
					"$f"
				else
					pg_log "sourcing $f"
					# shellcheck disable=SC1090
					. "$f"
				fi
				;;
			*.sql) pg_log "running $f"; docker_process_sql -f "$f" ;;
			*.sql.gz) pg_log "running $f"; gunzip -c "$f" | docker_process_sql ;;
			*.sql.xz) pg_log "running $f"; xzcat "$f" | docker_process_sql ;;
			*.sql.zst) pg_log "running $f"; zstd -dcq "$f" | docker_process_sql ;;
			*) pg_log "ignoring $f (not *.sh, *.sql, *.sql.gz, *.sql.xz or *.sql.zst)" ;;
		esac
	done
}

_init_failed() {
	pg_error "initialization failed; $PGDATA is half-initialized and will not be initialized" \
		"again on the next start: fix the cause, empty the data directory (or remove the volume)," \
		"and start again"
}

docker_initialize() {
	# A failed initdb removes what it wrote; a failure after it leaves a data directory that
	# looks initialized, so say so.
	# An unreadable /docker-entrypoint-initdb.d would fail after initdb; find out before it.
	if ! ls /docker-entrypoint-initdb.d/ > /dev/null; then
		pg_error "/docker-entrypoint-initdb.d cannot be read by uid $(id -u): make the mounted" \
			"directory readable (chmod o+rx) and start again; nothing in $PGDATA was changed"
		exit 1
	fi
	docker_init_database_dir
	trap _init_failed ERR
	pg_setup_hba_conf "$@"
	export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
	docker_temp_server_start "$@"
	docker_setup_db
	local files=()
	shopt -s nullglob
	files=(/docker-entrypoint-initdb.d/*)
	shopt -u nullglob
	docker_process_init_files "${files[@]}"
	docker_temp_server_stop
	unset PGPASSWORD
	trap - ERR
	pg_log "initialization complete"
}

# docker_prepare postgres ARG...: what comes before initialization, for this entrypoint and
# docker-ensure-initdb.sh. Everything that can refuse the start runs once (as root when started
# as root), before anything is written to the data directory; then the directories, and as
# root the switch to postgres by re-executing the running script ($0) with the same arguments.
docker_prepare() {
	docker_setup_env
	if [ -z "${_PG_SESSION_JWT_CHECKED:-}" ]; then
		if [ -n "$DATABASE_ALREADY_EXISTS" ]; then
			docker_verify_data_major
		else
			docker_verify_layout
			docker_verify_minimum_env
		fi
		docker_write_runtime_config
		docker_jwks_secret
	fi
	if [ "$(id -u)" = 0 ]; then
		docker_create_db_directories
		export _PG_SESSION_JWT_CHECKED=1
		exec gosu postgres "$0" "$@"
	fi
	unset _PG_SESSION_JWT_CHECKED
	docker_fetch_jwks
	docker_create_db_directories
}

_main() {
	# `docker run IMAGE -c key=value`: the arguments are for postgres.
	if [ "${1:0:1}" = - ]; then
		set -- postgres "$@"
	fi
	if [ "$1" != postgres ] || _pg_want_help "$@"; then
		exec "$@"
	fi
	docker_prepare "$@"
	shift
	if [ -n "$DATABASE_ALREADY_EXISTS" ]; then
		pg_log "$PGDATA already holds a database: skipping initialization and /docker-entrypoint-initdb.d"
	else
		docker_initialize "$@"
	fi
	pg_log "starting the server"
	exec postgres -c config_file="$MAIN_CONF" "$@"
}

if ! _is_sourced; then
	_main "$@"
fi
