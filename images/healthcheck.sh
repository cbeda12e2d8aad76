#!/bin/sh
# Healthy only when the real server answers on TCP: the initialisation server listens on
# the Unix socket alone, so it never counts.
exec pg_isready -q -h 127.0.0.1 -p "${PGPORT:-5432}" -U "${POSTGRES_USER:-postgres}" -d postgres
