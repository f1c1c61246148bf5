#!/usr/bin/env bash
# The Redis Cluster scenario: a local 3-shard cluster (one replica per
# shard), SET/GET throughput with 50 clients through `nearby --cluster`
# (a plain client: the sidecar routes by slot, reads to each shard's
# nearest replica) beside `redis-benchmark --cluster` straight to the
# nodes (a cluster-aware client, every command to its slot's primary).
#
#   bash bench/cluster.sh NEARBY_BIN [ROUNDS] [REQUESTS] [OUT.md]
#
# Rounds interleave the two paths. Prints a markdown table (and appends it
# to OUT.md when given).
set -euo pipefail
bin="${1:?usage: cluster.sh NEARBY_BIN [ROUNDS] [REQUESTS] [OUT.md]}"
rounds="${2:-3}"
requests="${3:-100000}"
out="${4:-}"
for tool in redis-server redis-benchmark redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "cluster scenario skipped: $tool is missing" >&2; exit 0; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir="$(mktemp -d "${TMPDIR:-/tmp}/nearby-bench-cluster.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

# A node's cluster bus listens 10,000 above it: both must be free.
cluster_port() {
    python3 - <<'PY'
import random, socket
while True:
    p = random.randint(20000, 55000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p)
        break
    except OSError:
        pass
PY
}
ports=()
for i in 1 2 3 4 5 6; do
    p="$(cluster_port)"
    mkdir -p "$dir/$p"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file "$dir/$p/nodes.conf" --cluster-node-timeout 2000 \
        --save '' --appendonly no --dir "$dir/$p" --daemonize no \
        --logfile "$dir/$p/log" &
    pids+=($!)
    ports+=("$p")
done
for p in "${ports[@]}"; do
    for _ in $(seq 50); do redis-cli -p "$p" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
done
addrs=()
for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
    || { echo "cluster scenario skipped: redis-cli --cluster create failed" >&2; cat "$dir/create.log" >&2
         for p in "${ports[@]}"; do tail -3 "$dir/$p/log" >&2 2>/dev/null || true; done; exit 0; }
for _ in $(seq 100); do
    redis-cli -p "${ports[0]}" cluster info 2>/dev/null | grep -q cluster_state:ok && break
    sleep 0.2
done
# Replicas synced, so reads through the sidecar find them usable.
sleep 2

listen="$(free_port)"; admin="$(free_port)"
"$bin" run --listen "127.0.0.1:$listen" --admin "127.0.0.1:$admin" \
    --cluster "redis://127.0.0.1:${ports[0]}" --cluster "redis://127.0.0.1:${ports[1]}" \
    >"$dir/nearby.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    python3 - "$admin" <<'PY' 2>/dev/null && break
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/status"))
shards = s.get("shards", [])
# Ready, every shard known, and each shard's reads on its replica (probed
# healthy: on loopback every node is equally near).
sys.exit(0 if s.get("ready") and len(shards) == 3
         and all(sh["reads_go_to"]["role"] == "replica" for sh in shards) else 1)
PY
    sleep 0.2
done
sleep 1

# One run: path -> "set_rps get_rps"
run() {
    local csv
    if [ "$1" = direct ]; then
        csv="$(redis-benchmark --cluster -p "${ports[0]}" -t set,get -n "$requests" -c 50 -r 100000 --csv 2>/dev/null)"
    else
        csv="$(redis-benchmark -p "$listen" -t set,get -n "$requests" -c 50 -r 100000 --csv 2>/dev/null)"
    fi
    python3 - "$csv" <<'PY'
import csv, io, sys
rps = {r[0]: float(r[1]) for r in csv.reader(io.StringIO(sys.argv[1])) if r and r[0] in ("SET", "GET")}
print(f"{rps.get('SET', 0):.0f} {rps.get('GET', 0):.0f}")
PY
}

# Where the sidecar's reads went (counted over its runs only): the replicas'
# GET calls over all nodes' GET calls.
gets() {
    python3 - "${ports[@]}" <<'PY'
import subprocess, sys
rep = tot = 0
for p in sys.argv[1:]:
    info = subprocess.run(["redis-cli", "-p", p, "info", "all"], capture_output=True, text=True).stdout
    calls = 0
    for line in info.splitlines():
        if line.startswith("cmdstat_get:"):
            calls = int(line.split("calls=")[1].split(",")[0])
    tot += calls
    rep += calls if "role:slave" in info else 0
print(rep, tot)
PY
}
results=()
replica_gets=0
all_gets=0
for r in $(seq "$rounds"); do
    for path in direct nearby; do
        if [ "$path" = nearby ]; then
            read -r rep0 tot0 <<<"$(gets)"
        fi
        line="$(run "$path")"
        if [ "$path" = nearby ]; then
            read -r rep1 tot1 <<<"$(gets)"
            replica_gets=$((replica_gets + rep1 - rep0))
            all_gets=$((all_gets + tot1 - tot0))
        fi
        results+=("$path $line")
        echo "cluster round $r, $path: $line" >&2
    done
done
python3 -c "import sys; r, t = int(sys.argv[1]), int(sys.argv[2]); print(f'{r / t:.3f}' if t else '0')" \
    "$replica_gets" "$all_gets" >"$dir/share"
share="$(cat "$dir/share" 2>/dev/null || echo 0)"
python3 - "$share" "${results[@]}" <<'PY' | tee -a "${out:-/dev/null}"
import statistics, sys
share = sys.argv[1]
rows = [l.split() for l in sys.argv[2:]]
by = {}
for path, s, g in rows:
    by.setdefault(path, []).append((float(s), float(g)))
med = {p: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals)) for p, vals in by.items()}
d, n = med["direct"], med["nearby"]
print()
print(f"### Redis Cluster: 3 shards x 1 replica, 50 clients (median of {len(by['direct'])} rounds)")
print()
print("| path | SET rps | ratio | GET rps | ratio |")
print("|---|---|---|---|---|")
print(f"| redis-benchmark --cluster, direct to the nodes | {d[0]:,.0f} | 1.00 | {d[1]:,.0f} | 1.00 |")
print(f"| redis-benchmark through nearby --cluster | {n[0]:,.0f} | {n[0] / d[0]:.2f} | {n[1]:,.0f} | {n[1] / d[1]:.2f} |")
print()
print(f"Share of the GETs through nearby that shard replicas served: {share} (redis-benchmark --cluster reads from primaries)")
PY
