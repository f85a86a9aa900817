"""The outbound test (issue 14): iperf3 from a container to a "remote"
namespace reached by routing, through tapswitch's gateway (user space, no
kernel NAT), through slirp4netns on the same path, and from the switch's
namespace itself (the ceiling: the kernel's own TCP over the uplink).

    sw (the "host")  --veth uplink 10.203.0.1/24--  remote 10.203.0.2 (iperf3 -s)
    |- tapswitch serve: container tsb<pid>out (172.17.0.x) -> gateway -> host sockets
    |- slirp4netns: namespace <prefix>-sl (10.0.2.100) -> tap0 -> host sockets

Rows per MTU (the uplink and slirp4netns's tap0 at that MTU). tapswitch
runs only at 1500: the containers' interfaces and the gateway's frames do
not follow `network create --mtu` yet (docs/gateway-services.md).
"""

import os
import time

from tsbench.measure import parse_iperf
from tsbench.system import BenchError, create_namespace, log, run, start, stop

REMOTE_IP = "10.203.0.2"
UPLINK_IP = "10.203.0.1"
SLIRP_IP = "10.0.2.100"
TAPSWITCH_MTUS = (1500,)


def measure(prefix, tapswitch, workdir, cleanup, duration, reps, mtus=(1500, 65520)):
    """Returns {mtu: {path: median Gbit/s or None}} for the paths host,
    slirp4netns and tapswitch; raw iperf3 JSON stays in `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    sw, remote, slirp_ns = f"{prefix}-osw", f"{prefix}-orm", f"{prefix}-osl"
    for ns in (sw, remote, slirp_ns):
        create_namespace(ns, cleanup)
    run(["ip", "-n", remote, "link", "add", "eth0", "type", "veth", "peer", "name", "uplink"])
    run(["ip", "-n", remote, "link", "set", "uplink", "netns", sw])
    run(["ip", "-n", remote, "addr", "add", f"{REMOTE_IP}/24", "dev", "eth0"])
    run(["ip", "-n", sw, "addr", "add", f"{UPLINK_IP}/24", "dev", "uplink"])
    for ns, dev in ((remote, "eth0"), (sw, "uplink")):
        run(["ip", "-n", ns, "link", "set", dev, "up"])
    server = start(
        ["iperf3", "-s", "-B", REMOTE_IP],
        remote,
        os.path.join(workdir, "iperf3-server.log"),
        "iperf3",
    )
    cleanup.push("iperf3 server (outbound)", lambda: stop(server))
    time.sleep(0.3)

    container = tapswitch_container(prefix, tapswitch, sw, workdir, cleanup)
    results = {}
    for mtu in mtus:
        for ns, dev in ((remote, "eth0"), (sw, "uplink")):
            run(["ip", "-n", ns, "link", "set", dev, "mtu", str(mtu)])
        slirp = start_slirp(sw, slirp_ns, mtu, workdir)
        try:
            paths = {"host": ["ip", "netns", "exec", sw], "slirp4netns": in_slirp(slirp_ns)}
            if container and mtu in TAPSWITCH_MTUS:
                paths["tapswitch"] = ["ip", "netns", "exec", container]
            row = {}
            for path, prefix_argv in paths.items():
                samples = []
                for rep in range(reps):
                    out = os.path.join(workdir, f"{path}-mtu{mtu}-{rep}.json")
                    iperf(prefix_argv, duration, out)
                    samples.append(parse_iperf(out, udp=False)["gbps"])
                samples.sort()
                row[path] = samples[len(samples) // 2]
                log(f"outbound mtu {mtu} {path}: {row[path]:.2f} Gbit/s")
            row.setdefault("tapswitch", None)
            results[mtu] = row
        finally:
            stop(slirp)
    return results


def iperf(prefix_argv, duration, out):
    argv = [*prefix_argv, "iperf3", "-c", REMOTE_IP, "-t", str(duration), "-J"]
    text = run(argv, timeout=duration + 30, check=False)
    with open(out, "w") as f:
        f.write(text)


def in_slirp(ns):
    return ["ip", "netns", "exec", ns]


def start_slirp(sw, slirp_ns, mtu, workdir):
    """slirp4netns for `slirp_ns`, running in the switch's namespace (so its
    sockets are the host's), its tap0 configured at `mtu`."""
    # A tap0 left by the previous MTU goes with its slirp4netns.
    run(["ip", "-n", slirp_ns, "link", "del", "tap0"], check=False)
    proc = start(
        [
            "slirp4netns",
            "--configure",
            f"--mtu={min(mtu, 65520)}",
            "--disable-host-loopback",
            "--netns-type=path",
            f"/run/netns/{slirp_ns}",
            "tap0",
        ],
        sw,
        os.path.join(workdir, f"slirp4netns-{mtu}.log"),
        "slirp4netns",
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if SLIRP_IP in run(["ip", "-n", slirp_ns, "addr", "show"], check=False):
            return proc
        time.sleep(0.05)
    stop(proc)
    raise BenchError("slirp4netns did not configure tap0 within 5 s")


def tapswitch_container(prefix, tapswitch, sw, workdir, cleanup):
    """A tapswitch switch in `sw` and a container on its default network;
    the container's namespace name, or None if tapswitch could not set up."""
    state = os.path.join(workdir, "state")
    control = os.path.join(workdir, "switch.sock")
    name = prefix.replace("-", "") + "out"
    serve = start(
        [tapswitch, "serve", "--network", "bridge", "--state-dir", state, "--control", control],
        sw,
        os.path.join(workdir, "tapswitch.log"),
        "tapswitch",
    )
    cleanup.push("tapswitch serve (outbound)", lambda: stop(serve))
    deadline = time.monotonic() + 10
    while not os.path.exists(control) and time.monotonic() < deadline:
        time.sleep(0.05)
    # nsenter enters only the network namespace: `ip netns exec` would make a
    # mount namespace of its own, and the container's namespace mount would
    # stay in it.
    nsenter = ["nsenter", f"--net=/run/netns/{sw}"]
    common = ["--state-dir", state]
    try:
        run([*nsenter, tapswitch, "container", "create", name, "--control", control, *common])
    except BenchError as err:
        log(f"tapswitch: no container for the outbound test: {err}")
        return None
    cleanup.push(
        f"container {name}",
        lambda: run([*nsenter, tapswitch, "container", "rm", name, *common], check=False),
    )
    return f"tapswitch-{name}"


def render(results, markdown=False):
    """The outbound table: Gbit/s per path and MTU, and each path's ratio
    to slirp4netns and to the host."""
    head = ["MTU", "host", "slirp4netns", "tapswitch", "tapswitch/slirp", "tapswitch/host"]
    rows = []
    for mtu, row in sorted(results.items()):
        ts, sl, host = row.get("tapswitch"), row.get("slirp4netns"), row.get("host")

        def gb(v):
            return "-" if v is None else f"{v:.2f}"

        def ratio(a, b):
            return "-" if a is None or not b else f"{a / b:.2f}x"

        rows.append([str(mtu), gb(host), gb(sl), gb(ts), ratio(ts, sl), ratio(ts, host)])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
        lines = [
            "  ".join(x.rjust(w) for x, w in zip(r, widths, strict=True)) for r in [head, *rows]
        ]
    return "outbound TCP, Gbit/s (iperf3 -c remote, 1 stream)\n" + "\n".join(lines)
