#!/usr/bin/env python3
"""The placement scenario: 50 clients without pipelining, with every process
pinned to a core (taskset), so the kernel's scheduler does not decide where
the benchmark, the proxy and Redis run.

On two cores, three single-threaded processes cannot each have a core, and
which two share one decides the throughput far more than the proxy's code:
unpinned rounds of the same build swing by a third. Pinned, each placement
is repeatable, and each stands for a deployment:

- sidecar: the app (redis-benchmark) and the proxy share core 0, Redis has
  core 1 (Redis on its own host, as nearby is deployed);
- beside Redis: the app has core 0, the proxy and Redis share core 1 (a
  proxy on the Redis host, as twemproxy often runs);
- proxy alone: the app and Redis share core 0, the proxy has core 1.

Direct runs in each placement with the app and Redis where that placement
puts them. Rounds interleave the targets. Prints a markdown table and
appends it to OUT.md when given.

  python3 bench/placement.py --nearby BIN [--twemproxy] [--haproxy] [--envoy]
                             [--rounds N] [--requests N] [--out OUT.md]
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile

import harness
from harness import Failed, Procs, cpu_ticks, free_port, med

# (name, app core, proxy core, Redis core)
PLACEMENTS = [
    ("sidecar", 0, 0, 1),
    ("beside Redis", 0, 1, 1),
    ("proxy alone", 0, 1, 0),
]


class PinnedProcs(Procs):
    """Procs whose next start runs on one core (`taskset -c`), threads and all."""

    core = None

    def start(self, name, argv, env=None):
        if self.core is not None:
            argv = ["taskset", "-c", str(self.core), *argv]
        return super().start(name, argv, env)


def pinned_benchmark(core, port, n, timeout):
    """redis-benchmark SET and GET, 50 clients, on `core`; {TEST: rps}."""
    out = harness.redis_benchmark(
        port, "set,get", n, 50, timeout=timeout, prefix=("taskset", "-c", str(core))
    )
    return {t: r["rps"] for t, r in out.items()}


def start_target(procs, kind, args, workdir, port, redis_port):
    if kind == "nearby":
        return harness.start_nearby(procs, "nearby", args.nearby, port, free_port(), redis_port)
    if kind == "twemproxy":
        return harness.start_twemproxy(procs, workdir, port, redis_port)
    if kind == "haproxy":
        return harness.start_haproxy(procs, workdir, port, redis_port)
    if kind == "envoy":
        return harness.start_envoy(procs, workdir, port, redis_port)
    raise ValueError(kind)


def measure(args, procs, workdir, log):
    """{placement: {target: {"SET": [rps], "GET": [rps], "proxy": [s/req], "redis": [s/req]}}}"""
    kinds = ["direct", "nearby"] + [k for k in ("twemproxy", "haproxy", "envoy") if getattr(args, k)]
    out = {}
    for name, app, proxy_core, redis_core in PLACEMENTS:
        procs.core = redis_core
        redis_port = free_port()
        redis = harness.start_redis(procs, f"redis-{redis_core}", redis_port, workdir)
        rows = {k: {"SET": [], "GET": [], "proxy": [], "redis": []} for k in kinds}
        for r in range(args.rounds):
            for kind in kinds:
                p = None
                port = redis_port
                if kind != "direct":
                    procs.core = proxy_core
                    port = free_port()
                    p = start_target(procs, kind, args, workdir, port, redis_port)
                r0 = cpu_ticks(redis.pid)
                p0 = cpu_ticks(p.pid) if p else 0
                rps = pinned_benchmark(app, port, args.requests, args.bench_timeout)
                r1 = cpu_ticks(redis.pid)
                p1 = cpu_ticks(p.pid) if p else 0
                done = 2 * args.requests
                rows[kind]["SET"].append(rps["SET"])
                rows[kind]["GET"].append(rps["GET"])
                rows[kind]["redis"].append((r1 - r0) / harness.CLK_TCK / done)
                if p:
                    rows[kind]["proxy"].append((p1 - p0) / harness.CLK_TCK / done)
                    procs.stop(p)
                log(f"placement {name:<13} round {r + 1}/{args.rounds}  {kind:<10} "
                    f"SET {rps['SET']:>9,.0f}  GET {rps['GET']:>9,.0f} rps")
        procs.stop(redis)
        out[name] = rows
    return out


def report(args, data):
    lines = [
        "",
        f"### Placement: 50 clients, every process pinned to a core (median of {args.rounds} rounds, -n {args.requests})",
        "",
        "Cores: app = redis-benchmark. sidecar = app + proxy on core 0, Redis on core 1; "
        "beside Redis = app on core 0, proxy + Redis on core 1; proxy alone = app + Redis "
        "on core 0, proxy on core 1. Direct runs with the app and Redis where the placement "
        "puts them. CPU in µs per request.",
        "",
        "| placement | target | SET rps | GET rps | SET ratio | GET ratio | proxy CPU | Redis CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in data.items():
        base = {t: med(rows["direct"][t]) for t in ("SET", "GET")}
        for kind, r in rows.items():
            s, g = med(r["SET"]), med(r["GET"])
            pc = med(r["proxy"])
            lines.append(
                f"| {name} | {kind} | {s:,.0f} | {g:,.0f} | {s / base['SET']:.2f} | {g / base['GET']:.2f} "
                f"| {'—' if pc is None else f'{pc * 1e6:.2f}'} | {med(r['redis']) * 1e6:.2f} |"
            )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nearby", required=True)
    ap.add_argument("--twemproxy", action="store_true")
    ap.add_argument("--haproxy", action="store_true")
    ap.add_argument("--envoy", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--pidfile", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    args.bench_timeout = 30 + args.requests // 1000

    def log(*a):
        print(*a, file=sys.stderr)

    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        log("placement scenario skipped: it needs two cores and taskset (util-linux)")
        return 0

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = tempfile.mkdtemp(prefix="nearby-placement.")
    procs = PinnedProcs(workdir, args.pidfile)
    try:
        data = measure(args, procs, workdir, log)
    except Failed as e:
        log(f"placement scenario failed: {e}")
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    md = report(args, data)
    print(md)
    if args.out:
        with open(args.out, "a") as f:
            f.write(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
