#!/bin/sh
# First start: a cluster with the compose file's user, password and database; then the server.
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp); printf '%s' "${POSTGRES_PASSWORD}" > "$pw"
  "$bin/initdb" -D "$PGDATA" -U "${POSTGRES_USER}" --pwfile="$pw" -E UTF8 --auth-host=scram-sha-256 --auth-local=trust
  rm -f "$pw"
  echo "listen_addresses='*'" >> "$PGDATA/postgresql.conf"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  "$bin/pg_ctl" -D "$PGDATA" -w start -o "-c listen_addresses=''"
  "$bin/createdb" -U "${POSTGRES_USER}" "${POSTGRES_DB}"
  "$bin/pg_ctl" -D "$PGDATA" -w stop
fi
exec "$bin/postgres" -D "$PGDATA"
