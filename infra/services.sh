#!/usr/bin/env bash
# Starts the local PostgreSQL and Redis the test suite talks to, when they are not running
# (installing them from Debian's packages if they are missing). Idempotent.
set -euo pipefail
sudo_=""; [[ $(id -u) -ne 0 ]] && sudo_="sudo"

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! command -v pg_ctlcluster >/dev/null || ! command -v redis-server >/dev/null; then
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends postgresql redis-server >/dev/null
fi

if ! pg_up; then
  version=$(ls /etc/postgresql | sort -V | tail -1)
  conf=/etc/postgresql/$version/main
  # Trust auth on loopback, as the tests connect as postgres without a password.
  if ! grep -q "voxmill-tests" "$conf/pg_hba.conf"; then
    $sudo_ sed -i '1i host all all 127.0.0.1/32 trust # voxmill-tests\nhost all all ::1/128 trust # voxmill-tests' "$conf/pg_hba.conf"
  fi
  $sudo_ pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
fi
pg_up || { echo "PostgreSQL did not start" >&2; exit 1; }

if ! redis_up; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 60); do redis_up && break; sleep 0.5; done
fi
redis_up || { echo "Redis did not start" >&2; exit 1; }
echo "PostgreSQL and Redis are up"
