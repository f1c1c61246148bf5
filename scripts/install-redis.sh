#!/usr/bin/env bash
# Makes sure redis-server, redis-cli and redis-sentinel are installed (the
# integration tests start real Redis processes, and sentinels for the
# failover tests). Does nothing if all three are already on PATH.
set -euo pipefail

have_all() {
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 &&
        command -v redis-sentinel >/dev/null 2>&1
}
if have_all; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-redis.sh: redis-server/redis-cli not found and apt-get is unavailable;" >&2
    echo "install Redis (>= 7) some other way and put it on PATH." >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-redis.sh: not root and no sudo; cannot install Redis" >&2
        exit 1
    fi
fi

echo "install-redis.sh: installing redis-server, redis-tools and redis-sentinel with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y redis-server redis-tools redis-sentinel

# Debian's package may start a system service on 6379, the sidecar's default
# port. The tests start their own servers, so stop it.
"${SUDO[@]}" service redis-server stop >/dev/null 2>&1 || true
redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true
# And the sentinel service the sentinel package starts on 26379.
"${SUDO[@]}" service redis-sentinel stop >/dev/null 2>&1 || true
redis-cli -p 26379 shutdown nosave >/dev/null 2>&1 || true

have_all
echo "install-redis.sh: $(redis-server --version)" >&2
