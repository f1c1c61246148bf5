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
work="$(mktemp -d /tmp/nearby-syscalls.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up() { for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

R=$(port)
redis-server --port "$R" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!); rpid=$!
up "$R"
redis-cli -p "$R" set key:__rand_int__ xxx >/dev/null
targets=("direct $R $rpid")

N=$(port); A=$(port)
RUST_LOG=warn "$repo/target/release/nearby" run --listen "127.0.0.1:$N" --admin "127.0.0.1:$A" \
    --primary "redis://127.0.0.1:$R" >"$work/nearby.log" 2>&1 &
pids+=($!); targets+=("nearby $N $!")
up "$N"
if command -v nutcracker >/dev/null; then
    T=$(port)
    printf 'b:\n  listen: 127.0.0.1:%s\n  redis: true\n  preconnect: true\n  servers:\n   - 127.0.0.1:%s:1\n' "$T" "$R" >"$work/tw.yml"
    nutcracker -c "$work/tw.yml" -s "$(port)" >"$work/tw.log" 2>&1 &
    pids+=($!); targets+=("twemproxy $T $!"); up "$T"
fi
if command -v haproxy >/dev/null; then
    H=$(port)
    printf 'defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend f\n  bind 127.0.0.1:%s\n  default_backend b\nbackend b\n  server r 127.0.0.1:%s\n' "$H" "$R" >"$work/h.cfg"
    haproxy -db -f "$work/h.cfg" >"$work/h.log" 2>&1 &
    pids+=($!); targets+=("haproxy $H $!"); up "$H"
fi
if command -v envoy >/dev/null; then
    E=$(port)
    cat >"$work/envoy.yaml" <<YAML
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: $E}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.redis_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
          stat_prefix: redis
          settings: {op_timeout: 5s}
          prefix_routes: {catch_all_route: {cluster: redis}}
  clusters:
  - name: redis
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: redis
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $R}}}
YAML
    envoy -c "$work/envoy.yaml" --concurrency 1 --log-level warn --base-id "$E" --disable-hot-restart >"$work/envoy.log" 2>&1 &
    pids+=($!); targets+=("envoy $E $!"); up "$E"
fi

echo "| server (GET -c 50 -P $pipeline -n $n) | syscalls per 1,000 requests | top calls per 1,000 |"
echo "|---|---|---|"
for t in "${targets[@]}"; do
    read -r name p pid <<<"$t"
    out="$work/$name.strace"
    strace -c -f -q -p "$pid" -o "$out" &
    spid=$!
    sleep 0.5
    redis-benchmark -h 127.0.0.1 -p "$p" -t get -c 50 -P "$pipeline" -n "$n" -q >/dev/null
    kill -INT "$spid"; wait "$spid" 2>/dev/null || true
    # strace -c: "% time seconds usecs/call calls errors syscall"; the total row last.
    total=$(awk '$NF=="total"{print $4}' "$out")
    top=$(awk -v n="$n" '/^ *[0-9.]+ / && $NF!="total" { printf "%s %.0f\n", $NF, $4*1000/n }' "$out" |
          sort -k2 -nr | head -4 | awk '{printf "%s%s %s", (NR>1?", ":""), $1, $2}')
    echo "| $name | $(awk -v c="${total:-0}" -v n="$n" 'BEGIN{printf "%.0f", c*1000/n}') | $top |"
done
