#!/bin/sh
# The part of the official postgres image's entrypoint that docker-compose.yml relies on.
# First start (no cluster in $PGDATA): initdb with superuser $POSTGRES_USER (default
# postgres) and password $POSTGRES_PASSWORD (required), password (scram-sha-256) for every
# TCP connection and trust on the local socket, listen on every address, create database
# $POSTGRES_DB (default: the user's name). Then run the server as the postgres user, as
# PID 1, so `docker stop` reaches it. Other commands (`docker run IMAGE psql ...`) run as
# they are.
set -eu

if [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"  # `docker run IMAGE -c name=value`: options for the server
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    # A new volume is root's: hand it to postgres, then drop root for good.
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?is required: the superuser password for the new cluster}"
    user=${POSTGRES_USER:-postgres}
    database=${POSTGRES_DB:-$user}
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$user" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA"
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$database" != postgres ]; then
        # A temporary server on a private socket, no TCP: the health check's pg_isready
        # says no until the real server is up with the database in place.
        socket=$(mktemp -d)
        pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k $socket" -w start >/dev/null
        echo 'CREATE DATABASE :"database"' | psql -h "$socket" -U "$user" -d postgres \
            -v ON_ERROR_STOP=1 -v database="$database" --quiet
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
        rmdir "$socket"
    fi
fi

exec "$@"
