#!/usr/bin/env bash
# Runs the local lab: real redis-servers in simulated regions with nearby in front.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-redis.sh
exec cargo run --release --quiet -- lab "$@"
