#!/usr/bin/env bash
# System calls and context switches per 1,000 requests, counted with perf's
# tracepoints (which, unlike strace, do not slow the counted process and so
# do not change how requests batch): redis-server alone, then nearby and
# the redis-server behind it, under `redis-benchmark -t get -c 50 -n N`,
# with pipeline 1 and 16.
#
#   bash bench/syscalls_perf.sh [NEARBY_BIN] [-n N]
#
# Needs perf (Debian linux-perf) with tracepoints readable (root, or
# kernel.perf_event_paranoid <= 1).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
bin="$repo/target/release/nearby"
n=400000
while [ $# -gt 0 ]; do
    case "$1" in
        -n) n="$2"; shift 2 ;;
        *) bin="$1"; shift ;;
    esac
done
command -v perf >/dev/null || { echo "needs perf: apt-get install -y linux-perf" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
events="syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,context-switches"
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

rport="$(free_port)"
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --daemonize no >/dev/null 2>&1 &
rpid=$!; pids+=("$rpid")
nport="$(free_port)"; aport="$(free_port)"
"$bin" run --listen "127.0.0.1:$nport" --admin "127.0.0.1:$aport" \
    --primary "redis://127.0.0.1:$rport" >/dev/null 2>&1 &
npid=$!; pids+=("$npid")
for _ in $(seq 50); do
    redis-cli -p "$nport" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done

# count PORT PIPELINE PID...: runs the benchmark against PORT while perf
# counts each PID; prints "pid event per_1000" lines.
count() {
    local port="$1" pipe="$2"; shift 2
    local stats=()
    for pid in "$@"; do
        perf stat -x, -e "$events" -p "$pid" -o "$work/stat.$pid" &
        stats+=($!)
    done
    sleep 0.3
    redis-benchmark -p "$port" -t get -n "$n" -c 50 -P "$pipe" -q >/dev/null 2>&1
    for s in "${stats[@]}"; do kill -INT "$s"; done
    wait "${stats[@]}" 2>/dev/null || true
    for pid in "$@"; do
        awk -F, -v n="$n" -v pid="$pid" '/^[0-9]/{printf "%s %s %.1f\n", pid, $3, $1 * 1000 / n}' "$work/stat.$pid"
    done
}

echo "| pipeline | process | read | write | recvfrom | sendto | epoll_wait | futex | context switches |"
echo "|---|---|---|---|---|---|---|---|---|"
for pipe in 1 16; do
    for target in direct nearby; do
        if [ "$target" = direct ]; then
            out="$(count "$rport" "$pipe" "$rpid")"
        else
            out="$(count "$nport" "$pipe" "$npid" "$rpid")"
        fi
        for pid in $(echo "$out" | awk '{print $1}' | uniq); do
            name="redis-server"
            [ "$pid" = "$npid" ] && name="nearby"
            [ "$target" = nearby ] && [ "$pid" = "$rpid" ] && name="redis-server behind nearby"
            echo "$out" | awk -v pid="$pid" -v name="$name" -v pipe="$pipe" '
                $1 == pid { v[$2] = $3 }
                END {
                    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", pipe, name,
                        v["syscalls:sys_enter_read"], v["syscalls:sys_enter_write"],
                        v["syscalls:sys_enter_recvfrom"], v["syscalls:sys_enter_sendto"],
                        v["syscalls:sys_enter_epoll_wait"], v["syscalls:sys_enter_futex"],
                        v["context-switches"]
                }'
        done
    done
done
