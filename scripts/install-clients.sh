#!/usr/bin/env bash
# Installs the real client libraries tests/it/clients.rs drives through
# nearby: redis-py (pip) and ioredis (npm, into tests/clients/node_modules).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! python3 -c 'import redis, sys; sys.exit(redis.__version__ != "5.2.1")' 2>/dev/null; then
    echo "install-clients.sh: installing redis-py 5.2.1" >&2
    python3 -m pip install --quiet --disable-pip-version-check redis==5.2.1
fi
if [ ! -d tests/clients/node_modules/ioredis ]; then
    echo "install-clients.sh: installing ioredis (npm ci)" >&2
    (cd tests/clients && npm ci --silent --no-audit --no-fund)
fi
