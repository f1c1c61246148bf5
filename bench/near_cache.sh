#!/usr/bin/env bash
# The near-cache scenario: a hot key set read through nearby with
# --near-cache on and off, side by side in one run, with the nearest
# replica 5 ms away (the lab: real redis-servers behind user-space relays).
#
#   bash bench/near_cache.sh NEARBY_BIN [ROUNDS] [OUT.md]
#
# Per round and mode: a fresh lab (primary 80 ms away, replica 5 ms away),
# 100 keys written, then redis-benchmark GET over those keys with 1 client
# (latency: p50/p99) and with 50 clients (throughput); and, as the floor, the
# same reads from a redis-server on this host. Rounds interleave the modes. Prints a markdown table (and appends it to OUT.md when given).
set -euo pipefail
bin="${1:?usage: near_cache.sh NEARBY_BIN [ROUNDS] [OUT.md]}"
rounds="${2:-2}"
out="${3:-}"
for tool in redis-server redis-benchmark redis-cli python3 curl; do
    command -v "$tool" >/dev/null || { echo "near-cache scenario skipped: $tool is missing" >&2; exit 0; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
lab_pid=""
stop_lab() {
    if [ -n "$lab_pid" ]; then
        kill "$lab_pid" 2>/dev/null || true
        wait "$lab_pid" 2>/dev/null || true
        lab_pid=""
    fi
}
trap stop_lab EXIT

# One measurement: mode (on|off) -> "p50_us p99_us rps1 rps50 hit_ratio"
measure() {
    local mode="$1" port admin flag=()
    port="$(free_port)"; admin="$(free_port)"
    [ "$mode" = on ] && flag=(--near-cache)
    "$bin" lab "${flag[@]}" --regions iad=80,ams=5 --region ams \
        --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
        --duration-s 120 --table-ms 0 >/dev/null 2>&1 &
    lab_pid=$!
    for _ in $(seq 100); do
        redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    # Let the probes measure the regions before reads are timed.
    sleep 2
    redis-benchmark -p "$port" -t set -r 100 -n 2000 -c 10 -q >/dev/null 2>&1
    sleep 0.5
    local one fifty
    one="$(redis-benchmark -p "$port" -t get -r 100 -n 3000 -c 1 --csv 2>/dev/null | tail -1)"
    fifty="$(redis-benchmark -p "$port" -t get -r 100 -n 30000 -c 50 --csv 2>/dev/null | tail -1)"
    local hits misses
    hits="$(curl -s "127.0.0.1:$admin/metrics" | awk '/^nearby_near_cache_hits_total /{print $2}')"
    misses="$(curl -s "127.0.0.1:$admin/metrics" | awk '/^nearby_near_cache_misses_total /{print $2}')"
    stop_lab
    python3 - "$one" "$fifty" "${hits:-0}" "${misses:-0}" <<'PY'
import csv, sys
one = next(csv.reader([sys.argv[1]]))
fifty = next(csv.reader([sys.argv[2]]))
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
hits, misses = float(sys.argv[3]), float(sys.argv[4])
ratio = hits / (hits + misses) if hits + misses else 0.0
print(f"{float(one[4]) * 1000:.0f} {float(one[6]) * 1000:.0f} {float(one[1]):.0f} {float(fifty[1]):.0f} {ratio:.3f}")
PY
}

# The floor: the same reads from a redis-server on this host, no distance.
local_redis() {
    local port dir
    port="$(free_port)"; dir="$(mktemp -d)"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
        --daemonize no >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 50); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    redis-benchmark -p "$port" -t set -r 100 -n 2000 -c 10 -q >/dev/null 2>&1
    local one fifty
    one="$(redis-benchmark -p "$port" -t get -r 100 -n 3000 -c 1 --csv 2>/dev/null | tail -1)"
    fifty="$(redis-benchmark -p "$port" -t get -r 100 -n 30000 -c 50 --csv 2>/dev/null | tail -1)"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
    python3 - "$one" "$fifty" <<'PY'
import csv, sys
one = next(csv.reader([sys.argv[1]]))
fifty = next(csv.reader([sys.argv[2]]))
print(f"{float(one[4]) * 1000:.0f} {float(one[6]) * 1000:.0f} {float(one[1]):.0f} {float(fifty[1]):.0f} -")
PY
}

results=()
for r in $(seq "$rounds"); do
    for mode in off on local; do
        if [ "$mode" = local ]; then line="$(local_redis)"; else line="$(measure "$mode")"; fi
        results+=("$r $mode $line")
        echo "near-cache round $r, $mode: $line" >&2
    done
done
python3 - "${results[@]}" <<'PY' | tee -a "${out:-/dev/null}"
import statistics, sys
rows = [l.split() for l in sys.argv[1:]]
by = {}
for r, mode, p50, p99, rps1, rps50, ratio in rows:
    by.setdefault(mode, []).append(
        (float(p50), float(p99), float(rps1), float(rps50), 0.0 if ratio == "-" else float(ratio)))
med = {m: [statistics.median(v[i] for v in vals) for i in range(5)] for m, vals in by.items()}
print()
print(f"### Near-cache: 100 hot keys, nearest replica 5 ms away (median of {len(by['on'])} rounds)")
print()
print("| nearby | GET p50, 1 client | p99, 1 client | req/s, 1 client | req/s, 50 clients | hit ratio |")
print("|---|---|---|---|---|---|")
for m in ("off", "on", "local"):
    p50, p99, r1, r50, ratio = med[m]
    name = "(none: redis-server on this host, 0 ms away)" if m == "local" else f"--near-cache {m}"
    shown = "-" if m == "local" else f"{ratio:.3f}"
    print(f"| {name} | {p50:.0f} µs | {p99:.0f} µs | {r1:.0f} | {r50:.0f} | {shown} |")
off, on = med["off"], med["on"]
print()
loc = med["local"]
print(f"p50 cut: {off[0] / on[0]:.0f}x; throughput, 1 client: {on[2] / off[2]:.0f}x; 50 clients: {on[3] / off[3]:.0f}x; "
      f"a hit's p50 ÷ a local redis-server GET's: {on[0] / loc[0]:.2f}")
PY
