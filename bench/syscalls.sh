#!/usr/bin/env bash
# Counts the system calls each server makes per 1,000 requests:
# redis-server alone (direct), nearby, and twemproxy / HAProxy / Envoy when
# installed, each in front of the same redis-server, under
# `redis-benchmark -t get -c 50 -n N` (and -P 16 with --pipeline).
#
#   bash bench/syscalls.sh [-n N] [--pipeline]
#
# strace slows the traced process, which changes how many requests share a
# batch: the counts are for comparing servers with each other in one run,
# not absolute costs. Needs strace (apt-get install -y strace).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
n=20000
pipeline=1
while [ $# -gt 0 ]; do
    case "$1" in
        -n) n="$2"; shift 2 ;;
        --pipeline) pipeline=16; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
command -v strace >/dev/null || { echo "needs strace: apt-get install -y strace" >&2; exit 1; }
(cd "$repo" && cargo build --release --bin nearby >&2)
exec python3 "$here/syscalls.py" --nearby "$repo/target/release/nearby" -n "$n" --pipeline "$pipeline"
