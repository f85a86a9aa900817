"""The traffic tests and what is measured around each of them.

Every test runs from host 1 to host 2 and is bounded in time (iperf3 -t,
ping -c, and a timeout around each command):

- tcp:  `iperf3 -c H2 -t DUR [-P 2]`; the value is the receiver's Gbit/s.
- udp:  `iperf3 -u -l 64 -b 0 -t DUR`: 64-byte payloads (106-byte frames) as
        fast as the sender can; the value is datagrams delivered per second
        ((packets - lost) / seconds at the receiver) and the loss.
- ping: `ping -c N -i 0.005`; median and 99th percentile round trip.

Around each test the meter records the switch's CPU time (utime + stime of
its processes, all threads) and how often its threads went to sleep (their
voluntary context switches: one per wake-up), the whole machine's busy
time, and the CPU used by processes outside this benchmark, so a test that
another workload disturbed can be repeated. Wake-ups per ping round trip
are a count, not a time: other load on the machine barely moves them.
"""

import json
import math
import os
import re
import statistics
import subprocess
import time

from .placement import parse_status_switches
from .system import (
    CLK_TCK,
    BenchError,
    cpu_ticks,
    in_ns,
    log,
    machine_ticks,
    start,
    stop,
    threads,
)

UDP_PAYLOAD = 64
PING_INTERVAL = 0.005  # root may ping faster than 0.2 s


def run_bounded(argv, ns, seconds, out_path, on_start=None):
    """Runs a test command with a hard time limit; output to `out_path`.
    `on_start(pid)` is told the command's PID (its own: `ip netns exec`
    execs it) as soon as it runs, for the placement sampler."""
    with open(out_path, "w") as out:
        proc = subprocess.Popen(
            in_ns(ns, argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            if on_start:
                on_start(proc.pid)
            return proc.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class IperfServer:
    """An iperf3 server in host 2, started (and restarted) by PID."""

    def __init__(self, topo, workdir, cleanup):
        self.host = topo.hosts[1]
        self.log = os.path.join(workdir, f"{topo.name}-iperf3-server.log")
        self.proc = None
        cleanup.push(f"iperf3 server in {self.host.ns}", self.stop)

    def start(self):
        self.proc = start(["iperf3", "-s", "-B", self.host.ip], self.host.ns, self.log, "iperf3")
        time.sleep(0.3)  # let it listen before the first client connects

    def stop(self):
        if self.proc:
            stop(self.proc)
            self.proc = None

    def restart(self):
        self.stop()
        self.start()


def parse_iperf(path, udp):
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except ValueError:
        raise BenchError(f"iperf3 wrote no JSON: {text.strip()[-200:]}") from None
    if "error" in data:
        raise BenchError(f"iperf3: {data['error']}")
    end = data.get("end", {})
    received, sent = end.get("sum_received", {}), end.get("sum_sent", {})
    if not received:
        raise BenchError("iperf3 reported nothing received")
    seconds = received.get("seconds") or 1
    if not udp:
        return {
            "gbps": received["bits_per_second"] / 1e9,
            "seconds": seconds,
            "retransmits": sent.get("retransmits"),
        }
    delivered = received.get("packets", 0) - received.get("lost_packets", 0)
    return {
        "pps": delivered / seconds,
        "frames": delivered,
        "seconds": seconds,
        "loss_pct": received.get("lost_percent", 0.0),
        "sent_pps": sent.get("packets", 0) / (sent.get("seconds") or 1),
    }


def sleeps(pids):
    """Voluntary context switches of every thread of the processes: each is
    a sleep, ended by a wake-up. Threads that ended are not counted."""
    total = 0
    for pid, tid in threads(pids):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                voluntary, _ = parse_status_switches(f.read())
        except OSError:
            continue
        total += voluntary or 0
    return total


def percentile(values, fraction):
    """The value below which `fraction` of the sorted values lie (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def parse_ping(path):
    with open(path) as f:
        text = f.read()
    rtts = [float(ms) * 1000 for ms in re.findall(r"time=([0-9.]+) ms", text)]
    if not rtts:
        raise BenchError(f"ping got no replies: {text.strip()[-200:]}")
    return {
        "median_us": statistics.median(rtts),
        "p99_us": percentile(rtts, 0.99),
        "replies": len(rtts),
    }


class Tests:
    """The three kinds of traffic test on one topology. `server` may be None
    when no iperf3 test will run (only warm_up and ping)."""

    def __init__(self, topo, server, outdir):
        self.topo, self.server, self.outdir = topo, server, outdir
        self.src, self.dst = topo.hosts[0], topo.hosts[1]
        self.on_start = None  # told the PID of each sending iperf3 or ping

    def warm_up(self):
        """Fills ARP caches and the switch's MAC table, and checks the path."""
        ping = ["ping", "-n", "-q", "-c", "3", "-i", "0.1", "-W", "2"]
        for _ in range(3):  # a switch may need a moment after its ports come up
            if run_bounded(ping + [self.dst.ip], self.src.ns, 5, os.devnull) == 0:
                break
            time.sleep(1)
        else:
            raise BenchError(f"{self.src.ns} cannot ping {self.dst.ip} through the switch")
        run_bounded(ping + [self.src.ip], self.dst.ns, 5, os.devnull)

    def iperf(self, name, args, duration, udp):
        out = os.path.join(self.outdir, f"{name}.json")
        argv = ["iperf3", "-c", self.dst.ip, "-t", str(duration), "-J", *args]
        for attempt in range(2):
            rc = run_bounded(argv, self.src.ns, duration, out, self.on_start)
            try:
                if rc is None:
                    raise BenchError(f"iperf3 did not finish within {duration + 30} s")
                return parse_iperf(out, udp)
            except BenchError as err:
                if attempt:
                    raise
                log(f"{name}: {err}; restarting the iperf3 server and trying again")
                self.server.restart()
        raise AssertionError("unreachable")

    def tcp(self, name, streams, duration):
        return self.iperf(name, ["-P", str(streams)] if streams > 1 else [], duration, udp=False)

    def udp(self, name, duration):
        return self.iperf(name, ["-u", "-l", str(UDP_PAYLOAD), "-b", "0"], duration, udp=True)

    def ping(self, name, count):
        out = os.path.join(self.outdir, f"{name}.txt")
        argv = ["ping", "-n", "-c", str(count), "-i", str(PING_INTERVAL), "-w", "60", self.dst.ip]
        run_bounded(argv, self.src.ns, 60, out, self.on_start)
        return parse_ping(out)


class Meter:
    """Runs one test with the accounting around it, and repeats a test that
    another workload on the machine disturbed (at most `retries` times)."""

    def __init__(self, foreign, quiet_pct, quiet_wait, retries):
        self.foreign, self.quiet_pct = foreign, quiet_pct
        self.quiet_wait, self.retries = quiet_wait, retries

    def measure(self, switch_pids, test, label):
        for attempt in range(self.retries + 1):
            self.foreign.wait_quiet(self.quiet_pct, self.quiet_wait)
            other0, sw0, sleeps0, (busy0, total0, steal0) = (
                self.foreign.snapshot(),
                cpu_ticks(switch_pids),
                sleeps(switch_pids),
                machine_ticks(),
            )
            t0 = time.monotonic()
            result = test()
            wall = time.monotonic() - t0
            other1, sw1, sleeps1, (busy1, total1, steal1) = (
                self.foreign.snapshot(),
                cpu_ticks(switch_pids),
                sleeps(switch_pids),
                machine_ticks(),
            )
            result["wall_s"] = wall
            result["attempts"] = attempt + 1
            result["switch_cpu_s"] = (sw1 - sw0) / CLK_TCK if switch_pids else None
            result["switch_sleeps"] = sleeps1 - sleeps0 if switch_pids else None
            result["machine_busy_pct"] = (busy1 - busy0) / max(total1 - total0, 1) * 100
            result["foreign_pct"] = (
                self.foreign.ticks_between(other0, other1) / CLK_TCK / wall * 100
            )
            # Time the hypervisor ran other guests instead of this machine:
            # invisible to `foreign_pct`, and it disturbs a test as much.
            result["steal_pct"] = (steal1 - steal0) / CLK_TCK / wall * 100
            if result["foreign_pct"] <= self.quiet_pct * 2 or attempt == self.retries:
                return result
            log(
                f"{label}: other processes used {result['foreign_pct']:.0f}% of a CPU "
                "during the test; repeating it"
            )
        raise AssertionError("unreachable")
