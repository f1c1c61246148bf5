#!/usr/bin/env python3
"""Proxy benchmark driver for nearby (standard library only).

Started by bench/run.sh, which builds nearby and finds the peers. This
script starts redis-server, nearby and (when given) twemproxy and HAProxy in
front of the same Redis, runs redis-benchmark against each of them
interleaved over several rounds, reads CPU and memory from /proc, and prints
and writes a markdown report. Everything it starts it stops, whatever
happens (a finally block, SIGTERM/SIGINT handlers, and a pid file that
run.sh's EXIT trap also reads).
"""

import argparse
import csv
import datetime
import io
import json
import os
import platform
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Failed(Exception):
    pass


# ---------------------------------------------------------------- processes


class Procs:
    """Everything this run started; stopped in reverse order."""

    def __init__(self, workdir, pidfile):
        self.workdir = workdir
        self.pidfile = pidfile
        self.started = []  # (name, Popen)

    def start(self, name, argv, env=None):
        out = open(os.path.join(self.workdir, f"{name}.log"), "wb")
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        out.close()
        self.started.append((name, p))
        if self.pidfile:
            with open(self.pidfile, "a") as f:
                f.write(f"{p.pid}\n")
        return p

    def stop(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def stop_all(self):
        for _, p in reversed(self.started):
            try:
                self.stop(p)
            except Exception:
                pass

    def log_tail(self, name, n=20):
        try:
            with open(os.path.join(self.workdir, f"{name}.log"), "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resp_cmd(port, *args, timeout=2.0):
    """One command on a fresh connection; returns the raw reply text."""
    req = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(req.encode())
        data = b""
        # Enough for PING / INFO: read until the reply is complete.
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data[:1] in (b"+", b"-", b":") and data.endswith(b"\r\n"):
                break
            if data[:1] == b"$":
                head, _, rest = data.partition(b"\r\n")
                n = int(head[1:])
                if n < 0 or len(rest) >= n + 2:
                    break
    return data.decode(errors="replace")


def wait_until(what, fn, timeout, proc=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Failed(f"{what}: process exited with {proc.returncode}")
        try:
            if fn():
                return
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.05)
    raise Failed(f"{what}: not ready after {timeout}s ({last})")


def redis_ping(port):
    return resp_cmd(port, "PING").startswith("+PONG")


def tcp_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def http_get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def info(port, section):
    text = resp_cmd(port, "INFO", section)
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def cmd_calls(port):
    """{command: calls} from INFO commandstats."""
    out = {}
    for k, v in info(port, "commandstats").items():
        if k.startswith("cmdstat_"):
            fields = dict(x.split("=", 1) for x in v.split(","))
            out[k[len("cmdstat_"):]] = int(fields.get("calls", 0))
    return out


# ---------------------------------------------------------------- /proc


def cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


def stime_ticks(pid):
    """stime alone (time in the kernel on the process's behalf), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[12])


def mem_kib(pid):
    """(VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


# ---------------------------------------------------------------- redis-benchmark


def redis_benchmark(port, tests, n, clients, pipeline=1, timeout=600, prefix=()):
    """Runs redis-benchmark --csv; returns {TEST: {rps, p50_ms, p99_ms}}.

    redis-benchmark 7.0's --csv prints one row per test with rps,
    avg/min/p50/p95/p99/max latency in milliseconds. `prefix` goes before
    the command (e.g. taskset).
    """
    argv = [
        *prefix, "redis-benchmark", "-h", "127.0.0.1", "-p", str(port),
        "-t", tests, "-n", str(n), "-c", str(clients), "-P", str(pipeline), "--csv",
    ]
    try:
        r = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Failed(f"redis-benchmark timed out after {timeout}s: {' '.join(argv)}")
    out = {}
    for row in csv.DictReader(io.StringIO(r.stdout.decode(errors="replace"))):
        try:
            out[row["test"]] = {
                "rps": float(row["rps"]),
                "p50_ms": float(row["p50_latency_ms"]),
                "p99_ms": float(row["p99_latency_ms"]),
            }
        except (KeyError, ValueError, TypeError):
            continue
    want = {t.strip().upper() for t in tests.split(",")}
    if not want <= set(out):
        raise Failed(
            f"redis-benchmark gave no result for {want - set(out)} (exit {r.returncode}): "
            + r.stderr.decode(errors="replace")[-400:]
        )
    return out


def mixed_benchmark(port, n, timeout=600):
    """50 clients, 90% GET / 10% SET: 45 GET clients and 5 SET clients run
    side by side (two redis-benchmark processes, -n split 9:1); returns the
    total requests per second over the wall time both took."""
    def argv(test, reqs, clients):
        return [
            "redis-benchmark", "-h", "127.0.0.1", "-p", str(port),
            "-t", test, "-n", str(reqs), "-c", str(clients), "-q",
        ]
    gets, sets = n * 9 // 10, n // 10
    t0 = time.monotonic()
    ps = [
        subprocess.Popen(argv("get", gets, 45), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL),
        subprocess.Popen(argv("set", sets, 5), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL),
    ]
    for p in ps:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in ps:
                q.kill()
            raise Failed(f"mixed redis-benchmark timed out after {timeout}s")
        if p.returncode != 0:
            raise Failed(f"mixed redis-benchmark exited {p.returncode}: {err.decode(errors='replace')[-300:]}")
    return (gets + sets) / (time.monotonic() - t0)


# ---------------------------------------------------------------- idle clients


def idle_clients(port, n, ping):
    """Opens n TCP connections; returns (sockets, answered PINGs)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        socks.append(s)
    answered = 0
    if ping:
        sel = selectors.DefaultSelector()
        for s in socks:
            try:
                s.send(b"*1\r\n$4\r\nPING\r\n")
                sel.register(s, selectors.EVENT_READ)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        pending = len(sel.get_map())
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(0.2):
                try:
                    data = key.fileobj.recv(64)
                except OSError:
                    data = b""
                if data.startswith(b"+PONG"):
                    answered += 1
                sel.unregister(key.fileobj)
                pending -= 1
        sel.close()
    return socks, answered


# ---------------------------------------------------------------- the run


class Target:
    def __init__(self, name, port, proc=None):
        self.name = name
        self.port = port
        self.proc = proc  # the proxy process; None for direct

    @property
    def pid(self):
        return self.proc.pid if self.proc else None


def start_redis(procs, name, port, workdir, extra=()):
    p = procs.start(name, [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--protected-mode", "no",
        "--dir", workdir, "--maxclients", "10000", *extra,
    ])
    wait_until(name, lambda: redis_ping(port), 10, p)
    return p


def start_nearby(procs, name, binary, port, admin, primary, extra=()):
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    p = procs.start(name, [
        binary, "run", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
        "--primary", f"redis://127.0.0.1:{primary}", *extra,
    ], env=env)
    wait_until(name, lambda: http_get(f"http://127.0.0.1:{admin}/readyz").startswith("ready"), 15, p)
    wait_until(name, lambda: redis_ping(port), 10, p)
    return p


def start_twemproxy(procs, workdir, port, redis_port):
    conf = os.path.join(workdir, "nutcracker.yml")
    with open(conf, "w") as f:
        f.write(
            "bench:\n"
            f"  listen: 127.0.0.1:{port}\n"
            "  hash: fnv1a_64\n"
            "  distribution: ketama\n"
            "  redis: true\n"
            "  timeout: 5000\n"
            "  preconnect: true\n"
            "  auto_eject_hosts: false\n"
            "  servers:\n"
            f"   - 127.0.0.1:{redis_port}:1\n"
        )
    p = procs.start("twemproxy", [
        "nutcracker", "-c", conf, "-s", str(free_port()), "-a", "127.0.0.1",
    ])
    wait_until("twemproxy", lambda: tcp_open(port), 10, p)
    return p


def start_haproxy(procs, workdir, port, redis_port):
    conf = os.path.join(workdir, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(
            "global\n"
            "  maxconn 4000\n"
            "defaults\n"
            "  mode tcp\n"
            "  timeout connect 5s\n"
            "  timeout client 120s\n"
            "  timeout server 120s\n"
            "frontend fe\n"
            f"  bind 127.0.0.1:{port}\n"
            "  default_backend be\n"
            "backend be\n"
            f"  server redis 127.0.0.1:{redis_port}\n"
        )
    # -db: stay in the foreground, one process (threads = cores).
    p = procs.start("haproxy", ["haproxy", "-db", "-f", conf])
    wait_until("haproxy", lambda: redis_ping(port), 10, p)
    return p


def start_envoy(procs, workdir, port, redis_port):
    # Envoy's redis_proxy filter: one STATIC cluster, a catch-all route, one
    # worker thread (--concurrency 1), as a sidecar would run it.
    conf = os.path.join(workdir, "envoy.yaml")
    with open(conf, "w") as f:
        f.write(
            "static_resources:\n"
            "  listeners:\n"
            "  - name: redis\n"
            f"    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n"
            "    filter_chains:\n"
            "    - filters:\n"
            "      - name: envoy.filters.network.redis_proxy\n"
            "        typed_config:\n"
            '          "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy\n'
            "          stat_prefix: redis\n"
            "          settings: {op_timeout: 5s}\n"
            "          prefix_routes: {catch_all_route: {cluster: redis}}\n"
            "  clusters:\n"
            "  - name: redis\n"
            "    type: STATIC\n"
            "    connect_timeout: 1s\n"
            "    load_assignment:\n"
            "      cluster_name: redis\n"
            "      endpoints:\n"
            "      - lb_endpoints:\n"
            f"        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {redis_port}}}}}}}\n"
        )
    p = procs.start("envoy", [
        "envoy", "-c", conf, "--concurrency", "1", "--log-level", "warn",
        "--base-id", str(port), "--disable-hot-restart",
    ])
    wait_until("envoy", lambda: redis_ping(port), 30, p)
    return p


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run(args, procs, log):
    workdir = procs.workdir
    R = free_port()
    redis = start_redis(procs, "redis", R, workdir)
    targets = [Target("direct", R)]

    NP, NA = free_port(), free_port()
    nearby = start_nearby(procs, "nearby", args.nearby, NP, NA, R)
    targets.append(Target("nearby", NP, nearby))
    if args.baseline:
        # Another build of nearby (e.g. before a change), in the same run.
        BP, BA = free_port(), free_port()
        base = start_nearby(procs, "nearby-base", args.baseline, BP, BA, R)
        targets.append(Target(f"nearby@{args.baseline_rev or 'base'}", BP, base))
    if args.twemproxy:
        T = free_port()
        targets.append(Target("twemproxy", T, start_twemproxy(procs, workdir, T, R)))
    if args.haproxy:
        H = free_port()
        targets.append(Target("haproxy", H, start_haproxy(procs, workdir, H, R)))
    if args.envoy:
        E = free_port()
        targets.append(Target("envoy", E, start_envoy(procs, workdir, E, R)))

    time.sleep(1)
    mem = {t.name: {} for t in targets}
    for t in targets:
        mem[t.name]["idle_start"] = mem_kib(t.pid or redis.pid)[0]

    n = args.requests
    n_lat = max(1000, n // 10)
    scenarios = [
        # name, tests, requests, clients, pipeline
        ("c50", "set,get", n, 50, 1),
        ("c50_P16", "set,get", n, 50, 16),
        ("c1", "set,get", n_lat, 1, 1),
    ]
    # results[scenario][target][test] = list of per-round dicts
    results = {s[0]: {t.name: {"SET": [], "GET": []} for t in targets} for s in scenarios}
    cpu = {s[0]: {t.name: [] for t in targets} for s in scenarios}
    redis_cpu = {s[0]: {t.name: [] for t in targets} for s in scenarios}
    # The kernel's part of the same figures (stime).
    kern = {s[0]: {t.name: [] for t in targets} for s in scenarios}
    redis_kern = {s[0]: {t.name: [] for t in targets} for s in scenarios}
    # redis-benchmark's own CPU per request: the third process on the two
    # cores, and the one that bounds the direct run.
    client_cpu = {s[0]: {t.name: [] for t in targets} for s in scenarios}
    failures = []

    for rnd in range(1, args.rounds + 1):
        for sname, tests, reqs, clients, pipeline in scenarios:
            for t in targets:
                log(f"round {rnd}/{args.rounds}  {sname:8} {t.name:10}", end=" ", flush=True)
                before = cmd_calls(R)
                c0 = cpu_ticks(t.pid) if t.pid else None
                r0 = cpu_ticks(redis.pid)
                k0 = stime_ticks(t.pid) if t.pid else None
                rk0 = stime_ticks(redis.pid)
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                try:
                    res = redis_benchmark(t.port, tests, reqs, clients, pipeline, args.bench_timeout)
                except Failed as e:
                    if t.proc is not None and t.proc.poll() is not None:
                        e = Failed(f"{e} [{t.name} exited with {t.proc.returncode}]")
                    failures.append(f"round {rnd} {sname} {t.name}: {e}")
                    log(f"FAILED: {e}")
                    continue
                c1 = cpu_ticks(t.pid) if t.pid else None
                r1 = cpu_ticks(redis.pid)
                k1 = stime_ticks(t.pid) if t.pid else None
                rk1 = stime_ticks(redis.pid)
                # Only redis-benchmark was reaped in between: the servers
                # are children too, but still running.
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                after = cmd_calls(R)
                total = reqs * len(tests.split(","))
                for test in ("SET", "GET"):
                    results[sname][t.name][test].append(res[test])
                    seen = after.get(test.lower(), 0) - before.get(test.lower(), 0)
                    if seen < reqs * 0.99:
                        failures.append(
                            f"round {rnd} {sname} {t.name}: redis saw {seen} {test} for {reqs} sent"
                        )
                if c0 is not None:
                    cpu[sname][t.name].append((c1 - c0) / CLK_TCK / total)
                redis_cpu[sname][t.name].append((r1 - r0) / CLK_TCK / total)
                if k0 is not None:
                    kern[sname][t.name].append((k1 - k0) / CLK_TCK / total)
                redis_kern[sname][t.name].append((rk1 - rk0) / CLK_TCK / total)
                client_cpu[sname][t.name].append(
                    (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / total
                )
                log(
                    f"SET {res['SET']['rps']:>10.0f} rps  GET {res['GET']['rps']:>10.0f} rps"
                    f"  p50 {res['GET']['p50_ms'] * 1000:5.0f} us  p99 {res['GET']['p99_ms'] * 1000:5.0f} us"
                )

    # (e) memory: idle after traffic, then 1,000 idle clients.
    for t in targets:
        if t.proc is not None and t.proc.poll() is not None:
            failures.append(f"memory {t.name}: exited with {t.proc.returncode} before the memory test")
            continue
        pid = t.pid or redis.pid
        mem[t.name]["idle_after"] = mem_kib(pid)[0]
        try:
            socks, _ = idle_clients(t.port, args.idle_clients, ping=False)
            time.sleep(1)
            mem[t.name]["conns"] = mem_kib(pid)[0]
            for s in socks:
                s.close()
            socks, answered = idle_clients(t.port, args.idle_clients, ping=True)
            time.sleep(0.5)
            mem[t.name]["conns_pinged"] = mem_kib(pid)[0]
            mem[t.name]["pinged_answered"] = answered
            for s in socks:
                s.close()
            time.sleep(0.5)
            # VmHWM is updated lazily by the kernel and can trail the
            # largest VmRSS read above by a few pages.
            mem[t.name]["hwm"] = max(
                mem_kib(pid)[1], *(mem[t.name][k] for k in ("idle_start", "idle_after", "conns", "conns_pinged"))
            )
        except OSError as e:
            failures.append(f"memory {t.name}: {e}")
        log(f"memory {t.name:10} {mem[t.name]}")

    # (f) read routing: the same primary plus one replica, behind a second nearby.
    routing = None
    if args.routing:
        routing = read_routing(args, procs, log, R, NP, failures)

    return targets, results, cpu, redis_cpu, (kern, redis_kern), client_cpu, mem, routing, failures, n, n_lat


def read_routing(args, procs, log, R, nearby_primary_only_port, failures):
    workdir = procs.workdir
    RR, RR2 = free_port(), free_port()
    for name, port in (("replica", RR), ("replica2", RR2)):
        start_redis(procs, name, port, workdir, extra=("--replicaof", "127.0.0.1", str(R)))
        wait_until(
            f"{name} sync",
            lambda port=port: info(port, "replication").get("master_link_status") == "up",
            30,
        )
    NP, NA = free_port(), free_port()
    start_nearby(
        procs, "nearby-routing", args.nearby, NP, NA, R,
        extra=(
            "--region", "bench", "--primary-region", "primary",
            "--replica", f"bench=redis://127.0.0.1:{RR}",
            "--replica", f"bench=redis://127.0.0.1:{RR2}",
            "--probe-interval-ms", "200",
        ),
    )

    def replica_chosen():
        st = json.loads(http_get(f"http://127.0.0.1:{NA}/status"))
        return st["reads_go_to"]["role"] == "replica"

    try:
        wait_until("nearby-routing picks the replica", replica_chosen, 15)
    except Failed as e:
        failures.append(str(e))
        log(f"WARNING: {e}")
    # Something to read (GET key:__rand_int__ is redis-benchmark's key).
    resp_cmd(R, "SET", "key:__rand_int__", "x" * 3)
    time.sleep(0.2)

    n = args.requests
    legs = [
        ("direct (primary)", R),
        ("nearby, primary only", nearby_primary_only_port),
        ("nearby, primary + 2 replicas", NP),
    ]
    out = {
        name: {"rps": [], "rps_P16": [], "replica_share": [], "replica_share_P16": [], "mixed": []}
        for name, _ in legs
    }
    for rnd in range(1, args.rounds + 1):
        for name, port in legs:
            log(f"round {rnd}/{args.rounds}  routing 90/10 {name:26}", end=" ", flush=True)
            try:
                rps = mixed_benchmark(port, n, args.bench_timeout)
            except Failed as e:
                failures.append(f"round {rnd} routing mixed {name}: {e}")
                log(f"FAILED: {e}")
                continue
            out[name]["mixed"].append(rps)
            log(f"GET+SET {rps:>10.0f} rps")
        for pipeline, key in ((1, "rps"), (16, "rps_P16")):
            for name, port in legs:
                log(f"round {rnd}/{args.rounds}  routing P{pipeline:<2} {name:26}", end=" ", flush=True)
                p0 = cmd_calls(R).get("get", 0)
                r0 = cmd_calls(RR).get("get", 0) + cmd_calls(RR2).get("get", 0)
                try:
                    res = redis_benchmark(port, "get", n, 50, pipeline, args.bench_timeout)
                except Failed as e:
                    failures.append(f"round {rnd} routing {name}: {e}")
                    log(f"FAILED: {e}")
                    continue
                p1 = cmd_calls(R).get("get", 0)
                r1 = cmd_calls(RR).get("get", 0) + cmd_calls(RR2).get("get", 0)
                share = (r1 - r0) / max(1, (p1 - p0) + (r1 - r0))
                out[name][key].append(res["GET"]["rps"])
                out[name][key.replace("rps", "replica_share")].append(share)
                log(f"GET {res['GET']['rps']:>10.0f} rps  replica share {share:6.1%}")
    return out


# ---------------------------------------------------------------- report


def fmt_rps(xs):
    m = med(xs)
    if m is None:
        return "—"
    if len(xs) > 1:
        return f"{m:,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
    return f"{m:,.0f}"


def fmt_ratio(x):
    return "—" if x is None else f"{x:.2f}"


def fmt_us(x, signed=False):
    if x is None:
        return "—"
    return f"{x:+.0f}" if signed else f"{x:.0f}"


def fmt_mib(kib):
    return "—" if kib is None else f"{kib / 1024:.1f}"


def report(args, meta, targets, results, cpu, redis_cpu, kernel, client_cpu, mem, routing, failures, n, n_lat):
    L = []
    L.append("# nearby benchmark results")
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    for k, v in meta.items():
        L.append(f"| {k} | {v} |")
    L.append(
        f"| settings | {args.rounds} rounds, -n {n} (c50, P16, routing), -n {n_lat} (c1), "
        f"{args.idle_clients} idle clients |"
    )
    L.append("")
    L.append(
        "Medians over the rounds; throughput cells show median (min–max). "
        "Ratios are the proxy's median over direct's median (1.00 = as fast as Redis alone)."
    )
    L.append("")

    def tput(sname, title):
        L.append(f"## {title}")
        L.append("")
        L.append("| target | SET rps | GET rps | SET ratio | GET ratio |")
        L.append("|---|---|---|---|---|")
        base = results[sname]["direct"]
        for t in targets:
            r = results[sname][t.name]
            ratios = []
            for test in ("SET", "GET"):
                m = med([x["rps"] for x in r[test]])
                b = med([x["rps"] for x in base[test]])
                ratios.append(m / b if m and b else None)
            L.append(
                f"| {t.name} | {fmt_rps([x['rps'] for x in r['SET']])} | "
                f"{fmt_rps([x['rps'] for x in r['GET']])} | {fmt_ratio(ratios[0])} | {fmt_ratio(ratios[1])} |"
            )
        L.append("")

    tput("c50", f"(a) Throughput, 50 clients, no pipelining (redis-benchmark -t set,get -n {n} -c 50)")
    tput("c50_P16", f"(b) Throughput, 50 clients, pipeline 16 (-c 50 -P 16)")

    L.append(f"## (c) Latency, 1 client (-c 1 -n {n_lat}), microseconds")
    L.append("")
    L.append("| target | GET p50 | GET p99 | SET p50 | SET p99 | added GET p50 | added GET p99 | added SET p50 | added SET p99 |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    base = results["c1"]["direct"]
    bm = {(test, q): med([x[q] * 1000 for x in base[test]]) for test in ("GET", "SET") for q in ("p50_ms", "p99_ms")}
    for t in targets:
        r = results["c1"][t.name]
        m = {(test, q): med([x[q] * 1000 for x in r[test]]) for test in ("GET", "SET") for q in ("p50_ms", "p99_ms")}
        cells = [fmt_us(m[k]) for k in (("GET", "p50_ms"), ("GET", "p99_ms"), ("SET", "p50_ms"), ("SET", "p99_ms"))]
        added = []
        for k in (("GET", "p50_ms"), ("GET", "p99_ms"), ("SET", "p50_ms"), ("SET", "p99_ms")):
            added.append("—" if t.name == "direct" or m[k] is None or bm[k] is None else fmt_us(m[k] - bm[k], True))
        L.append(f"| {t.name} | " + " | ".join(cells + added) + " |")
    L.append("")

    L.append("## (d) CPU seconds per request (utime+stime from /proc/PID/stat), microseconds")
    L.append("")
    L.append(
        "Proxy: the proxy process (all threads). Redis: the redis-server behind it during the same run. "
        f"Clock ticks are 1/{CLK_TCK} s, so short runs are coarse."
    )
    L.append("")
    L.append("| target | proxy c50 | proxy P16 | proxy c1 | redis c50 | redis P16 | redis c1 |")
    L.append("|---|---|---|---|---|---|---|")
    for t in targets:
        cells = []
        for table in (cpu, redis_cpu):
            for s in ("c50", "c50_P16", "c1"):
                xs = table[s][t.name]
                cells.append("—" if not xs else f"{med(xs) * 1e6:.2f}")
        L.append(f"| {t.name} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Of which in the kernel (stime): the socket calls, TCP on loopback and waking the peer. "
             "Without pipelining each request costs one receive and one send on the client's socket "
             "whatever the proxy does: user-space work barely moves this part.")
    L.append("")
    L.append("| target | proxy c50 | proxy P16 | proxy c1 | redis c50 | redis P16 | redis c1 |")
    L.append("|---|---|---|---|---|---|---|")
    for t in targets:
        cells = []
        for table in kernel:
            for s in ("c50", "c50_P16", "c1"):
                xs = table[s][t.name]
                cells.append("—" if not xs else f"{med(xs) * 1e6:.2f}")
        L.append(f"| {t.name} | " + " | ".join(cells) + " |")
    L.append("")
    budget(L, targets, results, cpu, redis_cpu, client_cpu)

    L.append(f"## (e) Resident memory (VmRSS / VmHWM from /proc/PID/status), MiB")
    L.append("")
    L.append(
        "For direct, the numbers are redis-server's own (a reference point; they include its data). "
        f"'{args.idle_clients} conns' = that many TCP connections opened by the harness and left idle; "
        "'+PING' = the same after one PING on each (so every per-client buffer exists)."
    )
    L.append("")
    L.append(f"| target | idle at start | idle after load | {args.idle_clients} conns | {args.idle_clients} conns +PING | PONGs | peak (VmHWM) |")
    L.append("|---|---|---|---|---|---|---|")
    for t in targets:
        m = mem[t.name]
        L.append(
            f"| {t.name} | {fmt_mib(m.get('idle_start'))} | {fmt_mib(m.get('idle_after'))} | "
            f"{fmt_mib(m.get('conns'))} | {fmt_mib(m.get('conns_pinged'))} | {m.get('pinged_answered', '—')} | "
            f"{fmt_mib(m.get('hwm'))} |"
        )
    L.append("")

    if routing:
        L.append(f"## (f) Read routing: primary + two replicas (REPLICAOF), 50 clients, -n {n}")
        L.append("")
        L.append(
            "90/10 = 45 GET clients and 5 SET clients side by side (-n split 9:1), total requests "
            "over the wall time. Replica share = GET calls counted by the replicas' INFO "
            "commandstats over all GET calls during a GET-only run."
        )
        L.append("")
        L.append(
            "| path | 90/10 rps | ratio | GET rps | ratio | replica share "
            "| GET rps P16 | ratio P16 | replica share P16 |"
        )
        L.append("|---|---|---|---|---|---|---|---|---|")
        b1 = med(routing["direct (primary)"]["rps"])
        b16 = med(routing["direct (primary)"]["rps_P16"])
        bm = med(routing["direct (primary)"]["mixed"])
        for name, r in routing.items():
            m1, m16, mm = med(r["rps"]), med(r["rps_P16"]), med(r["mixed"])
            s1, s16 = med(r["replica_share"]), med(r["replica_share_P16"])
            L.append(
                f"| {name} | {fmt_rps(r['mixed'])} | {fmt_ratio(mm / bm if mm and bm else None)} | "
                f"{fmt_rps(r['rps'])} | {fmt_ratio(m1 / b1 if m1 and b1 else None)} | "
                f"{'—' if s1 is None else f'{s1:.1%}'} | {fmt_rps(r['rps_P16'])} | "
                f"{fmt_ratio(m16 / b16 if m16 and b16 else None)} | {'—' if s16 is None else f'{s16:.1%}'} |"
            )
        L.append("")

    if failures:
        L.append("## Problems")
        L.append("")
        for f in failures:
            L.append(f"- {f}")
        L.append("")
    return "\n".join(L)


def budget(L, targets, results, cpu, redis_cpu, client_cpu):
    """The two-core budget: what all three processes spend per request.

    Benchmark, proxy and Redis share the machine's cores, so no target can
    go faster than cores / (their CPU per request summed); the direct run
    has one process fewer. 'cores busy' is that sum times the measured rate:
    how much of the machine the run used.
    """
    cores = os.cpu_count() or 1
    L.append(f"CPU budget on {cores} cores, per request (µs): redis-benchmark's own CPU "
             "(getrusage of the reaped child) beside the proxy's and Redis's; "
             f"**ceiling** = {cores} cores ÷ the sum; **cores busy** = the sum × the measured rate "
             "(SET and GET together).")
    L.append("")
    L.append("| target | scenario | redis-benchmark | proxy | redis | sum | ceiling rps | measured rps | ceiling ÷ direct | cores busy |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")

    def rate(sname, name):
        r = results[sname][name]
        a, b = med([x["rps"] for x in r["SET"]]), med([x["rps"] for x in r["GET"]])
        return 2 / (1 / a + 1 / b) if a and b else None

    for sname in ("c50", "c50_P16"):
        direct = rate(sname, "direct")
        for t in targets:
            parts = [med(client_cpu[sname][t.name]), med(cpu[sname][t.name]) if t.pid else 0.0,
                     med(redis_cpu[sname][t.name])]
            measured = rate(sname, t.name)
            if any(p is None for p in parts) or not measured:
                continue
            total = sum(parts)
            ceiling = cores / total if total else None
            L.append(
                f"| {t.name} | {sname} | {parts[0] * 1e6:.2f} | "
                f"{'—' if not t.pid else f'{parts[1] * 1e6:.2f}'} | {parts[2] * 1e6:.2f} | "
                f"{total * 1e6:.2f} | {ceiling:,.0f} | {measured:,.0f} | "
                f"{fmt_ratio(ceiling / direct if direct else None)} | {total * measured:.2f} |"
            )
    L.append("")


def machine_meta(args):
    cpu_model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(argv):
        try:
            r = subprocess.run(argv, capture_output=True, timeout=10)
            return (r.stdout + r.stderr).decode(errors="replace").strip().splitlines()[0]
        except Exception:
            return "not found"

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {cpu_model}, {os.cpu_count()} cores",
        "kernel": platform.release(),
        "nearby": args.nearby_rev or "unknown",
        "redis": version(["redis-server", "--version"]),
        "twemproxy": version(["nutcracker", "--version"]) if args.twemproxy else "not installed",
        "haproxy": version(["haproxy", "-v"]) if args.haproxy else "not installed",
        "envoy": version(["envoy", "--version"]) if args.envoy else "not installed",
    }
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nearby", required=True, help="path to the nearby binary")
    ap.add_argument("--nearby-rev", default="")
    ap.add_argument("--baseline", default="", help="a second nearby binary to compare in the same run")
    ap.add_argument("--baseline-rev", default="")
    ap.add_argument("--twemproxy", action="store_true")
    ap.add_argument("--haproxy", action="store_true")
    ap.add_argument("--envoy", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--idle-clients", type=int, default=1000)
    ap.add_argument("--no-routing", dest="routing", action="store_false")
    ap.add_argument("--bench-timeout", type=int, default=0, help="seconds per redis-benchmark run")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--pidfile", default="")
    ap.add_argument("--out", default="", help="markdown report path")
    ap.add_argument("--json", default="", help="raw per-round results path")
    args = ap.parse_args()
    if not args.bench_timeout:
        # Even at 2,000 requests/s (far below anything healthy) a run ends.
        args.bench_timeout = 30 + (2 * args.requests) // 2000

    procs = Procs(args.workdir, args.pidfile)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def log(*a, **kw):
        print(*a, **kw, file=sys.stderr)

    try:
        meta = machine_meta(args)
        targets, results, cpu, redis_cpu, kernel, client_cpu, mem, routing, failures, n, n_lat = run(args, procs, log)
    except Failed as e:
        log(f"benchmark failed: {e}")
        for name, _ in procs.started:
            tail = procs.log_tail(name)
            if tail:
                log(f"--- {name}.log (tail)\n{tail}")
        return 1
    finally:
        procs.stop_all()

    md = report(args, meta, targets, results, cpu, redis_cpu, kernel, client_cpu, mem, routing, failures, n, n_lat)
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(md + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "meta": meta,
                    "throughput_latency": results,
                    "proxy_cpu_s_per_req": cpu,
                    "redis_cpu_s_per_req": redis_cpu,
                    "proxy_stime_s_per_req": kernel[0],
                    "redis_stime_s_per_req": kernel[1],
                    "benchmark_cpu_s_per_req": client_cpu,
                    "memory_kib": mem,
                    "routing": routing,
                    "failures": failures,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
