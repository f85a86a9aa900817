#!/usr/bin/env python3
"""Counts a tapswitch's work with N veth ports, two busy and N-2 idle.

    tools/bench/idle_ports.py BINARY NPORTS SECONDS udp|tcp|idle

Attaches NPORTS veth ends (`serve --iface`, default workers) in a namespace
of its own: p1 and p2 lead to two hosts (10.9.0.1 and .2), the others to
an idle namespace. Under 64-byte UDP or TCP (iperf3 from host 1 to host 2)
or no traffic, for SECONDS it counts the switch's system calls by kind
(`perf stat -e syscalls:sys_enter_*`), context switches, CPU ticks, frames
received and read-mode changes, and prints one JSON line with the RSS after
start-up. IPv6 is off in every namespace: its link-up chatter would be
flooded to every port. Needs root, perf and iperf3. Everything lives in
namespaces named idl-*-PID, deleted on every way out (also SIGINT/SIGTERM).
Counts are repeatable on a shared machine; the throughput figures are not.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

binary, nports, secs, load = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
tag = str(os.getpid())
SW, H1, H2, IDLE = (f"idl-{x}-{tag}" for x in ("sw", "h1", "h2", "idle"))
WORK = tempfile.mkdtemp(prefix="idle-ports-")
ctl = os.path.join(WORK, "switch.sock")
procs = []


def sh(*a, check=True, **kw):
    return subprocess.run(a, check=check, capture_output=True, text=True, **kw)


def cleanup(*_):
    for p in procs:
        try:
            p.kill()
            p.wait(timeout=5)
        except Exception:
            pass
    for ns in (SW, H1, H2, IDLE):
        sh("ip", "netns", "del", ns, check=False)
    try:
        os.unlink(ctl)
    except FileNotFoundError:
        pass


def on_signal(*_):
    cleanup()
    sys.exit(1)


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def call(cmd):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(ctl)
    s.sendall((json.dumps(cmd) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        buf += s.recv(65536)
    s.close()
    return json.loads(buf)["data"]


def proc_totals(pid):
    vol = invol = 0
    ticks = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                if line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
    return vol, invol, ticks


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])


SYSCALLS = [
    "setsockopt",
    "getsockopt",
    "recvmmsg",
    "sendmmsg",
    "epoll_wait",
    "bpf",
    "ioctl",
    "sched_yield",
    "sched_setaffinity",
    "sched_setscheduler",
    "futex",
    "read",
    "write",
    "recvfrom",
    "sendto",
]

try:
    for ns in (SW, H1, H2, IDLE):
        sh("ip", "netns", "add", ns)
        # No IPv6: its link-up chatter (DAD, RS, MLD) would be flooded
        # to every port and measure the floods, not the idle ports.
        for key in ("all", "default"):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
    for i, h in ((1, H1), (2, H2)):
        sh(
            "ip",
            "-n",
            h,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            f"p{i}",
            "netns",
            SW,
        )
        sh("ip", "-n", h, "addr", "add", f"10.9.0.{i}/24", "dev", "eth0")
        sh("ip", "-n", h, "link", "set", "eth0", "up")
        sh("ip", "-n", h, "link", "set", "lo", "up")
        sh("ip", "-n", SW, "link", "set", f"p{i}", "up")
    batch = []
    for i in range(3, nports + 1):
        batch.append(f"link add p{i} netns {SW} type veth peer name i{i}")
    if batch:
        subprocess.run(
            ["ip", "-n", IDLE, "-batch", "-"], input="\n".join(batch) + "\n", text=True, check=True
        )
        subprocess.run(
            ["ip", "-n", IDLE, "-batch", "-"],
            input="".join(f"link set i{i} up\n" for i in range(3, nports + 1)),
            text=True,
            check=True,
        )
        subprocess.run(
            ["ip", "-n", SW, "-batch", "-"],
            input="".join(f"link set p{i} up\n" for i in range(3, nports + 1)),
            text=True,
            check=True,
        )
    args = [a for i in range(1, nports + 1) for a in ("--iface", f"p{i}")]
    log = open(os.path.join(WORK, "serve.log"), "w")  # kept for a look afterwards
    sw = subprocess.Popen(
        ["ip", "netns", "exec", SW, binary, "serve", *args, "--no-gateway", "--control", ctl],
        stdout=log,
        stderr=log,
    )
    procs.append(sw)
    for _ in range(200):
        try:
            call({"cmd": "info"})
            break
        except Exception:
            time.sleep(0.05)
    pid = sw.pid  # `ip netns exec` execs the binary: same pid
    time.sleep(3)  # let IPv6 DAD/RS of the new links settle
    rss = rss_kib(pid)
    info0 = call({"cmd": "info"})
    if load != "idle":
        srv = subprocess.Popen(
            ["ip", "netns", "exec", H2, "iperf3", "-s", "-1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(srv)
        time.sleep(0.5)
    events = ",".join(f"syscalls:sys_enter_{s}" for s in SYSCALLS)
    perf = subprocess.Popen(
        ["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "--", "sleep", str(secs)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    c0 = proc_totals(pid)
    ports0 = {p["name"]: p for p in call({"cmd": "ports"})}
    client_out = ""
    if load == "udp":
        client_out = sh(
            "ip",
            "netns",
            "exec",
            H1,
            "iperf3",
            "-c",
            "10.9.0.2",
            "-u",
            "-l",
            "64",
            "-b",
            "0",
            "-t",
            str(secs - 1),
            "-J",
            check=False,
        ).stdout
    elif load == "tcp":
        client_out = sh(
            "ip",
            "netns",
            "exec",
            H1,
            "iperf3",
            "-c",
            "10.9.0.2",
            "-t",
            str(secs - 1),
            "-J",
            check=False,
        ).stdout
    _, err = perf.communicate()
    c1 = proc_totals(pid)
    ports1 = {p["name"]: p for p in call({"cmd": "ports"})}
    info1 = call({"cmd": "info"})
    counts = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2].startswith("syscalls:"):
            counts[parts[2].split("sys_enter_")[1]] = int(parts[0]) if parts[0].isdigit() else 0

    def rx(p, name):
        s = p[name].get("stats", p[name])
        return s.get("rx_frames", 0)

    frames = sum(rx(ports1, n) - rx(ports0, n) for n in ports1)
    result = {
        "ports": nports,
        "load": load,
        "secs": secs,
        "rss_kib": rss,
        "frames_in": frames,
        "mode_changes": info1.get("reading_changes", 0) - info0.get("reading_changes", 0),
        "ctxsw_vol": c1[0] - c0[0],
        "ctxsw_invol": c1[1] - c0[1],
        "cpu_ticks": c1[2] - c0[2],
        "syscalls": counts,
    }
    if client_out:
        try:
            j = json.loads(client_out)
            end = j["end"]
            if load == "udp":
                result["udp_rx_mbps"] = round(
                    end["sum"]["bits_per_second"] * (1 - end["sum"]["lost_percent"] / 100) / 1e6, 1
                )
            else:
                result["tcp_gbps"] = round(end["sum_received"]["bits_per_second"] / 1e9, 2)
        except Exception as e:
            result["client_error"] = str(e)[:100]
    print(json.dumps(result))
finally:
    cleanup()
