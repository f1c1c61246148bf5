"""System calls per 1,000 requests for each server: redis-server alone, nearby,
and the peers harness.py knows (started the same way, from the same code).
Run by bench/syscalls.sh; prints a markdown table."""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import harness


def strace_counts(path):
    """strace -c output: {syscall: calls}, plus the 'total' row."""
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            # "% time seconds usecs/call calls [errors] syscall"
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[3].isdigit():
                counts[parts[-1]] = int(parts[3])
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nearby", required=True)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--pipeline", type=int, default=1)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="nearby-syscalls.")
    procs = harness.Procs(work, None)
    try:
        R = harness.free_port()
        redis = harness.start_redis(procs, "redis", R, work)
        harness.resp_cmd(R, "SET", "key:__rand_int__", "xxx")
        targets = [("direct", R, redis)]
        NP, NA = harness.free_port(), harness.free_port()
        targets.append(("nearby", NP, harness.start_nearby(procs, "nearby", args.nearby, NP, NA, R)))
        for name, tool, start in (
            ("twemproxy", "nutcracker", harness.start_twemproxy),
            ("haproxy", "haproxy", harness.start_haproxy),
            ("envoy", "envoy", harness.start_envoy),
        ):
            if shutil.which(tool):
                P = harness.free_port()
                targets.append((name, P, start(procs, work, P, R)))
        print(f"| server (GET -c 50 -P {args.pipeline} -n {args.n}) | syscalls per 1,000 requests "
              "| top calls per 1,000 |")
        print("|---|---|---|")
        for name, port, p in targets:
            out = os.path.join(work, f"{name}.strace")
            st = subprocess.Popen(["strace", "-c", "-f", "-q", "-p", str(p.pid), "-o", out])
            time.sleep(0.5)
            harness.redis_benchmark(port, "get", args.n, 50, args.pipeline)
            st.send_signal(signal.SIGINT)
            st.wait(30)
            counts = strace_counts(out)
            total = counts.pop("total", 0)
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
            per = lambda c: round(c * 1000 / args.n)  # noqa: E731
            print(f"| {name} | {per(total)} | " + ", ".join(f"{k} {per(c)}" for k, c in top) + " |")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
