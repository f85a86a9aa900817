#!/usr/bin/env python3
"""tapswitch bench: measures tapswitch side by side with the Linux bridge.

Builds the same topology for every switch (two namespaces whose eth0 is a
port of the switch under test, see tsbench/topology.py), runs TCP (1 and 2
streams), 64-byte UDP and ping through each, repeats every test, and prints
the medians and the ratio of each switch to the kernel bridge measured in
the same run. Switches: the Linux bridge, tapswitch with veth ports,
tapswitch with TAP ports, and vde_switch and Open vSwitch (userspace
datapath) when they are installed. Run as root:

    tools/bench/bench.py            # full: 3 repetitions, 5 s per iperf3 test
    tools/bench/bench.py --quick    # short: 3 repetitions, 1 s per test
    tools/bench/bench.py --runs 5   # 5 whole runs: the spread of every ratio
    tools/bench/bench.py --idle-ports 64,256   # + tapswitch with idle ports

During every test it samples where the threads of the switch and of the
endpoints ran (tsbench/placement.py); with --runs N the report shows each
run's ratio next to its placement and flags a run that differs.

Everything it creates lives in namespaces named tsb-<pid>-*, which it
deletes on the way out (also on Ctrl-C or SIGTERM); all traffic stays in
them. Raw outputs (iperf3 JSON, ping, switch logs, run.json, the tables)
are kept in the results directory it prints.
"""

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from tsbench import outbound, placement, report, spread, switches, two_hosts  # noqa: E402
from tsbench.measure import IperfServer, Meter, Tests  # noqa: E402
from tsbench.neighbour import LIMIT_S, Neighbour  # noqa: E402
from tsbench.options import (  # noqa: E402
    TESTS,
    mtu_list,
    outbound_test_list,
    percent,
    port_counts,
    test_list,
)
from tsbench.system import (  # noqa: E402
    CLK_TCK,
    BenchError,
    Cleanup,
    ForeignLoad,
    cpu_ticks,
    delete_namespace,
    ignore_signals,
    install_signal_handlers,
    log,
    rss_kib,
    run,
    run_ns,
    stale_namespaces,
)
from tsbench.topology import Topology  # noqa: E402

PREFIX = "tsb"
REPO = os.path.dirname(os.path.dirname(HERE))
IDLE_PORT_TESTS = ("tcp1", "udp")  # between the two busy ports, the others idle
REQUIRED = {"ip": "iproute2", "iperf3": "iperf3", "ping": "iputils-ping"}


def parse_args():
    p = argparse.ArgumentParser(
        description="Measure tapswitch side by side with the Linux bridge, vde_switch and "
        "Open vSwitch (run as root)."
    )
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra argument for `tapswitch serve` (repeatable), e.g. --serve-arg=--busy-poll=0",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="short run: 1 s per iperf3 test, 200 pings, less waiting for quiet",
    )
    p.add_argument(
        "--reps",
        type=int,
        help="repetitions of every test (default 3, at least 3 for a median worth reading)",
    )
    p.add_argument("--duration", type=float, help="seconds per iperf3 test (default 5; quick 1)")
    p.add_argument("--pings", type=int, help="pings per repetition (default 500; quick 200)")
    p.add_argument(
        "--tests",
        type=test_list,
        default=TESTS,
        metavar="T[,T...]",
        help="which tests, comma-separated, e.g. --tests ping for a short latency run, or "
        "--tests tcp1 for the spread of one figure over many --runs in little time "
        f"(default: all of {','.join(TESTS)})",
    )
    p.add_argument(
        "--switches",
        default=",".join(s.key for s in switches.ALL),
        help="which switches, comma-separated (default: all of %(default)s)",
    )
    p.add_argument(
        "--tapswitch",
        default=os.path.join(REPO, "target/release/tapswitch"),
        help="the tapswitch binary (default: %(default)s)",
    )
    p.add_argument(
        "--tap-floor",
        default=os.path.join(REPO, "target/release/examples/tap_floor"),
        help="the floor forwarder for TAP ports, tools/examples/tap_floor.rs (default: "
        "%(default)s)",
    )
    p.add_argument(
        "--baseline",
        metavar="BINARY",
        help="another tapswitch binary (the build before a change) measured in the same run "
        "beside every tapswitch column, e.g. --baseline /tmp/before/tapswitch (the file must "
        "be named tapswitch: the benchmark finds the switch's process by its name)",
    )
    p.add_argument(
        "--baseline-label",
        default="baseline",
        help="what the baseline columns are called (e.g. its commit; default: %(default)s)",
    )
    p.add_argument(
        "--results", help="directory for raw outputs (default: /tmp/tapswitch-bench-<time>)"
    )
    p.add_argument("--markdown", action="store_true", help="print the tables in Markdown")
    p.add_argument(
        "--no-mac-fill",
        action="store_true",
        help="skip the memory test (4 ports, MAC table filled to capacity)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="record a perf profile of tapswitch during the first TCP and UDP tests",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait for other processes to calm down before each test "
        "(default 20; quick 3)",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="whole runs (each: every switch, every test, its repetitions, on switches set up "
        "afresh); the report gives the spread of every ratio over them (default: %(default)s)",
    )
    p.add_argument(
        "--idle-ports",
        type=port_counts,
        default=[],
        metavar="K[,K...]",
        help="also measure tapswitch with K veth ports of which K-2 are idle, TCP 1 stream and "
        "UDP 64 B between the two busy ones, against the same switch with only the two "
        "ports, plus idle CPU and memory per port, e.g. --idle-ports 64,256 (default: off)",
    )
    p.add_argument(
        "--outbound",
        action="store_true",
        help="only the outbound tests (issue 14): iperf3 from a container to a routed remote "
        "namespace through tapswitch's gateway, through slirp4netns, and from the host itself, "
        "and from the remote into the container through a published port (slirp4netns: "
        "add_hostfwd), at MTU 1500 and 65520 (--outbound-mtus); --baseline runs beside",
    )
    p.add_argument(
        "--outbound-tests",
        type=outbound_test_list,
        default=list(outbound.TESTS),
        metavar="T[,T...]",
        help="with --outbound, which of its tests: out (iperf3 from the container), published "
        "(iperf3 into the container through a published port), iperf (both), connect "
        "(new TCP connections per second from the container to the remote, short "
        "connections from a few clients; at the lowest MTU only) (default: all)",
    )
    p.add_argument(
        "--outbound-mtus",
        type=mtu_list,
        default=list(outbound.MTUS),
        metavar="M[,M...]",
        help="with --outbound, the MTUs of the iperf3 tests "
        f"(default: {','.join(str(m) for m in outbound.MTUS)})",
    )
    p.add_argument(
        "--neighbour",
        type=percent,
        metavar="PCT",
        help="a busy neighbour: a process that keeps PCT %% of one CPU busy at random moments "
        "through every test, the same for every switch (a shared machine, made on purpose)",
    )
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="only delete namespaces left by a benchmark run that was killed",
    )
    args = p.parse_args()
    args.reps = args.reps or 3
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.reps < 3:
        print(
            f"note: with {args.reps} repetition(s) the figures are not medians of 3",
            file=sys.stderr,
        )
    args.duration = args.duration or (1 if args.quick else 5)
    args.pings = args.pings or (200 if args.quick else 500)
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (3 if args.quick else 20)
    args.idle_seconds = 3 if args.quick else 5
    return args


def check_environment(args):
    if os.geteuid() != 0:
        raise BenchError("run as root: the benchmark creates network namespaces")
    cleanup_only = args.cleanup
    needed = {"ip": REQUIRED["ip"]} if cleanup_only else dict(REQUIRED)
    if args.profile:
        needed["perf"] = "linux-perf"
    for program, package in needed.items():
        if shutil.which(program) is None:
            raise BenchError(f"{program} is missing: install it with `apt-get install {package}`")
    stale = stale_namespaces(PREFIX)
    if stale and not cleanup_only:
        log(
            f"namespaces left by an earlier, killed run: {' '.join(stale)} "
            f"(remove them with {sys.argv[0]} --cleanup)"
        )


def source_commit():
    """The commit of the tree the benchmark runs from (where the tapswitch
    binary is normally built), with -dirty if it has local changes."""
    out = run(["git", "-C", REPO, "describe", "--always", "--dirty"], check=False).strip()
    return out or "?"


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), Linux {os.uname().release}"


class Candidate:
    """One switch in the run: its topology, tests, samples."""

    def __init__(self, switch, topo, workdir, tests):
        self.switch, self.topo = switch, topo
        self.outdir = os.path.join(workdir, switch.key)
        os.makedirs(self.outdir, exist_ok=True)
        self.tests = None
        self.samples = {t: [] for t in tests}
        self.idle_cpu_pct = self.idle_run_pct = self.idle_rss_kib = None


def chosen_switches(args):
    """The switch classes to measure, in order (with their --baseline twins)."""
    wanted = [k.strip() for k in args.switches.split(",") if k.strip()]
    # The two-host switches (they need etcd) and NAMED_ONLY are measured only
    # when named.
    known = {cls.key: cls for cls in switches.ALL + switches.NAMED_ONLY + two_hosts.ALL}
    for key in wanted:
        if key not in known:
            raise BenchError(f"unknown switch {key!r}; choose from {', '.join(known)}")
    switches.Tapswitch.binary = args.tapswitch
    switches.Tapswitch.serve_args = tuple(args.serve_arg)
    switches.TapFloor.binary = args.tap_floor
    if args.baseline and not os.access(args.baseline, os.X_OK):
        raise BenchError(f"--baseline {args.baseline}: no such executable")
    chosen = []
    for key in wanted:
        chosen.append(known[key])
        if args.baseline and issubclass(known[key], switches.Tapswitch):
            chosen.append(switches.baseline_of(known[key], args.baseline, args.baseline_label))
    return chosen


def set_up(classes, tests, workdir, cleanup, entries):
    """Builds every switch on its own topology; `entries` (run.json's
    per-switch entries) get their title, version or why they were skipped.
    A switch that is not installed or does not come up is reported and
    left out."""
    candidates = []
    for cls in classes:
        switch = cls()
        key = switch.key
        entry = entries.setdefault(key, {})
        entry["title"] = switch.title
        why = switch.missing()
        if why:
            log(f"{switch.title}: skipped, {why}")
            entry["skipped"] = why
            continue
        entry.setdefault("version", switches.describe(switch))
        topo = Topology(f"{PREFIX}-{os.getpid()}-{key}", 2, cleanup)
        cand = Candidate(switch, topo, workdir, tests)
        try:
            log(f"{switch.title}: setting up in {topo.switch_ns}")
            topo.create_namespaces()
            switch.start(topo, cand.outdir, cleanup)
            server = IperfServer(topo, cand.outdir, cleanup)
            server.start()
            cand.tests = Tests(topo, server, cand.outdir)
            cand.tests.warm_up()
        except BenchError as err:
            log(f"{switch.title}: could not be set up, left out: {err}")
            entry["skipped"] = f"setup failed: {err}"
            continue
        entry.pop("skipped", None)
        candidates.append(cand)
    return candidates


def measure_idle(candidates, seconds):
    """The switches' CPU use with no traffic at all (all of them at once),
    in clock ticks as the tests count it and in nanoseconds run (schedstat,
    fine enough to divide by a port count), and their RSS before any test."""
    busy = [c for c in candidates if c.switch.pids]
    before = {c.switch.key: (cpu_ticks(c.switch.pids), run_ns(c.switch.pids)) for c in busy}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    for c in busy:
        ticks, ns = before[c.switch.key]
        c.idle_cpu_pct = (cpu_ticks(c.switch.pids) - ticks) / CLK_TCK / seconds * 100
        now = run_ns(c.switch.pids)
        c.idle_run_pct = (
            (now - ns) / 1e9 / wall * 100 if now is not None and ns is not None else None
        )
        c.idle_rss_kib = rss_kib(c.switch.pids[0])


def profiled(args, cand, test, rep, fn):
    """Wraps a test so that perf records the switch while it runs (only
    tapswitch and the TAP floor, first repetition, TCP 1 stream and UDP)."""
    if not (
        args.profile
        and rep == 0
        and test in ("tcp1", "udp")
        and isinstance(cand.switch, (switches.Tapswitch, switches.TapFloor))
    ):
        return fn
    data = os.path.join(cand.outdir, f"perf-{test}.data")

    def with_perf():
        perf = subprocess.Popen(
            [
                "perf",
                "record",
                "-q",
                "-g",
                "-F",
                "999",
                "-o",
                data,
                "-p",
                str(cand.switch.pids[0]),
                "--",
                "sleep",
                str(args.duration),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return fn()
        finally:
            perf.wait(timeout=args.duration + 30)
            with open(os.path.join(cand.outdir, f"perf-{test}.txt"), "w") as out:
                subprocess.run(
                    [
                        "perf",
                        "report",
                        "-i",
                        data,
                        "--stdio",
                        "--no-children",
                        "--percent-limit",
                        "1",
                        "--sort",
                        "sym",
                    ],
                    stdout=out,
                    stderr=subprocess.DEVNULL,
                    timeout=300,
                )
            log(f"profile of {cand.switch.title} during {test}: {out.name}")

    return with_perf


def measure_all(args, candidates, meter, tests, first_run):
    """Every repetition runs every test on every switch before the next
    repetition starts, so slow drifts in the machine's load hit all
    switches alike."""
    for rep in range(args.reps):
        for cand in candidates:
            for test in tests:
                label = f"{cand.switch.title}, {test}, repetition {rep + 1}/{args.reps}"
                test_fn = functools.partial(run_test, cand.tests, test, rep, args)
                if first_run:
                    test_fn = profiled(args, cand, test, rep, test_fn)
                test_fn = with_switch_info(cand, with_placement(cand, test, test_fn))
                try:
                    sample = meter.measure(cand.switch.pids, test_fn, label)
                except BenchError as err:
                    log(f"{label}: failed: {err}")
                    sample = None
                cand.samples[test].append(sample)
                log(f"{label}: {brief(test, sample)}")


def with_switch_info(cand, fn):
    """Wraps a test so that its sample keeps what a tapswitch's `info` says
    before and after it:
    - `reading_changes`: how often the switch changed how it reads its
      ports while the test ran. Into reading by port and back is a bulk
      test's due; in a ping test it is a switch gone heavy with only pings
      flowing.
    - `shortcut_ports`: how many ports the kernel shortcut served at the
      end. Frames between them never reach the switch's threads, so its CPU
      figures leave that work out."""

    def counted():
        before = switch_info(cand.switch)
        result = fn()
        after = switch_info(cand.switch)
        if before and after:
            result["reading_changes"] = after["reading_changes"] - before["reading_changes"]
        if after:
            result["shortcut_ports"] = (after.get("kernel_shortcut") or {}).get("ports", 0)
        return result

    return counted


def switch_info(switch):
    """A tapswitch's `info` on its control socket; None for other switches,
    or when it does not answer."""
    control = getattr(switch, "control", None)
    if not control:
        return None
    try:
        return switches.control_call(control, {"cmd": "info"})
    except (OSError, ValueError, BenchError):
        return None


def with_placement(cand, test, fn):
    """Wraps a test so that the placement of the switch's threads and the
    endpoints' is sampled while it runs (see tsbench/placement.py); the
    sample gets it under "placement"."""

    def sampled():
        sampler = placement.Sampler()
        sampler.watch(cand.switch.pids, "switch")
        if test != "ping" and cand.tests.server.proc:  # ping's receiver is the kernel
            sampler.watch([cand.tests.server.proc.pid], "receiver")
        cand.tests.on_start = lambda pid: sampler.watch([pid], "sender")
        try:
            with sampler:
                result = fn()
        finally:
            cand.tests.on_start = None
        result["placement"] = sampler.summary()
        return result

    return sampled


def run_test(tests, test, rep, args):
    """One repetition of one test; its raw output is named after both."""
    name = f"{test}-{rep + 1}"
    if test == "tcp1":
        return tests.tcp(name, 1, args.duration)
    if test == "tcp2":
        return tests.tcp(name, 2, args.duration)
    if test == "udp":
        return tests.udp(name, args.duration)
    return tests.ping(name, args.pings)


def brief(test, s):
    if s is None:
        return "no result"
    cpu = ""
    if s["switch_cpu_s"] is not None:
        cpu = f", switch CPU {s['switch_cpu_s'] / s['wall_s'] * 100:.0f}%"
    other = f", others {s['foreign_pct']:.0f}%"
    if s.get("steal_pct", 0) >= 1:
        other += f", steal {s['steal_pct']:.0f}%"
    if test.startswith("tcp"):
        return f"{s['gbps']:.2f} Gbit/s{cpu}{other}"
    if test == "udp":
        return f"{s['pps'] / 1000:.0f} kpps delivered, {s['loss_pct']:.1f}% lost{cpu}{other}"
    return f"median {s['median_us']:.0f} µs, p99 {s['p99_us']:.0f} µs{cpu}{other}"


def mac_fill(workdir, cleanup):
    """tapswitch with 4 veth ports: RSS before and after its MAC table is
    filled to capacity by frames from distinct source MACs."""
    switch = switches.TapswitchVeth()
    topo = Topology(f"{PREFIX}-{os.getpid()}-fill", 4, cleanup)
    outdir = os.path.join(workdir, "mac-fill")
    os.makedirs(outdir, exist_ok=True)
    log(f"memory test: tapswitch with 4 ports in {topo.switch_ns}")
    topo.create_namespaces()
    switch.start(topo, outdir, cleanup)
    Tests(topo, None, outdir).warm_up()
    pid = switch.pids[0]
    before = switches.control_call(switch.control, {"cmd": "fdb"})["stats"]
    rss_before = rss_kib(pid)
    count = before["capacity"]
    h1, h2 = topo.hosts[0], topo.hosts[1]
    run(
        [
            sys.executable,
            os.path.join(HERE, "tsbench", "macfill.py"),
            h1.ifname,
            h2.mac,
            str(count),
        ],
        ns=h1.ns,
        timeout=60,
    )
    time.sleep(0.5)
    after = switches.control_call(switch.control, {"cmd": "fdb"})["stats"]
    return {
        "ports": len(topo.hosts),
        "sent": count,
        "capacity": after["capacity"],
        "entries_before": before["entries"],
        "entries_after": after["entries"],
        "refused": after.get("refused", 0),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_kib(pid),
    }


def main():
    args = parse_args()
    try:
        check_environment(args)
    except BenchError as err:
        print(f"bench.py: {err}", file=sys.stderr)
        return 1
    if args.cleanup:
        for ns in stale_namespaces(PREFIX):
            log(f"deleting {ns}")
            delete_namespace(ns)
        return 0
    workdir = args.results or f"/tmp/tapswitch-bench-{time.strftime('%Y%m%d-%H%M%S')}"
    os.makedirs(workdir, exist_ok=True)
    cleanup = Cleanup()
    install_signal_handlers()
    try:
        if args.outbound:
            results = outbound.measure(
                f"{PREFIX}-{os.getpid()}",
                args.tapswitch,
                os.path.join(workdir, "outbound"),
                cleanup,
                args.duration,
                args.reps,
                mtus=tuple(args.outbound_mtus),
                baseline=args.baseline,
                tests=args.outbound_tests,
            )
            with open(os.path.join(workdir, "outbound.json"), "w") as f:
                json.dump(results, f, indent=1)
            print()
            label = args.baseline_label
            print(outbound.render_all(results, markdown=args.markdown, baseline=label))
            print(f"raw results: {workdir}")
            return 0
        run_info = benchmark(args, workdir, cleanup)
        print()
        print(report.render(run_info, markdown=args.markdown))
        print(f"raw results: {workdir}")
        return 0
    except BenchError as err:
        print(f"bench.py: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        ignore_signals()
        cleanup.run_all()
        leftovers = [
            ns
            for ns in run(["ip", "netns", "list"], check=False).split()
            if ns.startswith(f"{PREFIX}-{os.getpid()}-")
        ]
        if leftovers:
            log(f"could not delete: {' '.join(leftovers)}")


def benchmark(args, workdir, cleanup):
    """The whole run: set up, measure, write the results; returns run.json's content."""
    classes = chosen_switches(args)
    run_info = {
        "started": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "commit": source_commit(),
        "settings": {
            "reps": args.reps,
            "duration": args.duration,
            "pings": args.pings,
            "tests": list(args.tests),
            "quick": args.quick,
            "runs": args.runs,
            "idle_ports": args.idle_ports,
            "neighbour": args.neighbour,
        },
        "switches": {},
    }
    per_run = {}
    args.neighbour_used = []  # % of a CPU the neighbour took, per run
    idle_classes = [switches.with_ports(n) for n in [2, *args.idle_ports]]
    idle_entries, idle_per_run = {}, {}
    for index in range(args.runs):
        rundir = workdir if args.runs == 1 else os.path.join(workdir, f"run-{index + 1}")
        if args.runs > 1:
            log(f"run {index + 1} of {args.runs}")
        order = switches.measuring_order(classes, index)
        results = one_run(args, index, order, args.tests, rundir, cleanup, run_info["switches"])
        if not results and index == 0:
            raise BenchError("no switch could be set up; nothing to measure")
        spread.add_run(per_run, results, index)
        if args.idle_ports:
            idle_dir = os.path.join(rundir, "idle-ports")
            results = one_run(
                args, index, idle_classes, IDLE_PORT_TESTS, idle_dir, cleanup, idle_entries
            )
            spread.add_run(idle_per_run, results, index)
    spread.pool(run_info["switches"], per_run, args.runs, keep_runs=args.runs > 1)
    if args.idle_ports:
        spread.pool(idle_entries, idle_per_run, args.runs, keep_runs=args.runs > 1)
        run_info["idle_ports"] = {
            "reference": idle_classes[0].key,
            "tests": list(IDLE_PORT_TESTS),
            "switches": idle_entries,
        }
    if not args.no_mac_fill and "tapswitch-veth" in per_run:
        try:
            run_info["mac_fill"] = mac_fill(workdir, cleanup)
        except BenchError as err:
            log(f"memory test failed: {err}")
    if args.neighbour:
        run_info["settings"]["neighbour_used"] = args.neighbour_used
    with open(os.path.join(workdir, "run.json"), "w") as f:
        json.dump(run_info, f, indent=1)
    for markdown, name in ((False, "report.txt"), (True, "report.md")):
        with open(os.path.join(workdir, name), "w") as f:
            f.write(report.render(run_info, markdown=markdown))
    return run_info


def one_run(args, index, classes, tests, workdir, cleanup, entries):
    """One whole run of some switches: set them up, measure their idle CPU,
    every test and its repetitions, then take them down again. Returns
    {switch key: its figures in this run}."""
    mark = cleanup.mark()
    candidates = set_up(classes, tests, workdir, cleanup, entries)
    if not candidates:
        return {}
    namespaces = [ns for c in candidates for ns in c.topo.namespaces]
    prefixes = [f"{c.topo.name}-" for c in candidates]
    meter = Meter(
        ForeignLoad(namespaces, prefixes), quiet_pct=10, quiet_wait=args.quiet_wait, retries=1
    )
    log(f"idle CPU of the switches over {args.idle_seconds} s")
    measure_idle(candidates, args.idle_seconds)
    neighbour = None
    if args.neighbour:
        neighbour = Neighbour(args.neighbour, LIMIT_S)
        neighbour.start()
        cleanup.push("the busy neighbour", neighbour.stop)
        log(f"a neighbour keeps {args.neighbour:g} % of a CPU busy (pid {neighbour.proc.pid})")
    measure_all(args, candidates, meter, tests, first_run=index == 0)
    if neighbour:
        neighbour.stop()
        args.neighbour_used.append(round(neighbour.used_pct(), 1))
        log(f"the neighbour used {neighbour.used_pct():.0f} % of a CPU")
    results = {}
    for cand in candidates:
        results[cand.switch.key] = {
            "samples": cand.samples,
            "idle_cpu_pct": cand.idle_cpu_pct,
            "idle_resolution_pct": 100 / CLK_TCK / args.idle_seconds,
            "rss_kib": rss_kib(cand.switch.pids[0]) if cand.switch.pids else None,
            "idle_run_pct": cand.idle_run_pct,
            "idle_rss_kib": cand.idle_rss_kib,
        }
        if isinstance(cand.switch, switches.TapswitchVethIdlePorts):
            results[cand.switch.key].update(
                ports=cand.switch.ports, setup_s=round(cand.switch.setup_s, 3)
            )
    cleanup.run_back_to(mark)
    return results


if __name__ == "__main__":
    sys.exit(main())
