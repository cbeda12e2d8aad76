#!/bin/sh
# The image's HEALTHCHECK: healthy once the real server accepts TCP connections on 127.0.0.1.
# The initialization server listens on the Unix socket only, so a container that is still
# running initdb or /docker-entrypoint-initdb.d is never reported healthy. pg_isready needs
# no password; -U and -d only keep it from looking up the (possibly absent) passwd entry.
exec pg_isready --quiet --host=127.0.0.1 --port="${PGPORT:-5432}" --timeout=4 \
    --username="${POSTGRES_USER:-postgres}" --dbname=postgres
