#!/usr/bin/env bash
# Install what the PostgreSQL history tests need (tests/history/test_postgresql.py): Debian's
# PostgreSQL server binaries (initdb, pg_ctl; the tests start their own throw-away cluster on a
# loopback port and stop it) and the psycopg 3 driver (the `postgresql` extra of smtpaudit).
# Idempotent; starts no daemon. Run as root (apt).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-history-postgresql.sh: need root to apt-get install postgresql" >&2
        exit 1
    fi
    # No service start from the maintainer scripts: the tests run their own cluster.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    cleanup() { if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
    trap cleanup EXIT
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

python3 -c 'import psycopg' 2>/dev/null || python3 -m pip install -q "psycopg[binary]>=3.1"

echo "postgresql: $(ls -d /usr/lib/postgresql/*/bin | tail -1)  psycopg: $(python3 -c 'import psycopg; print(psycopg.__version__)')  ($(( $(date +%s) - start )) s)"
