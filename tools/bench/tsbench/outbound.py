"""The outbound and published-port tests (issue 14): iperf3 between a
container and a "remote" namespace reached by routing, through tapswitch's
gateway (user space, no kernel NAT), through slirp4netns on the same path,
and the switch's namespace itself (the ceiling: the kernel's own TCP over
the uplink).

    sw (the "host")  --veth uplink 10.203.0.1/24--  remote 10.203.0.2 (iperf3 -s)
    |- tapswitch serve per MTU: container (network create --mtu M, -p) -> gateway -> host sockets
    |- slirp4netns: namespace <prefix>-osl (10.0.2.100) -> tap0 -> host sockets

Outbound: `iperf3 -c remote` from the container (its data leaves through
the gateway). Published: `iperf3 -c 10.203.0.1:PORT` from the remote, into
an iperf3 server in the container through `-p 10.203.0.1:PORT:5201` (for
slirp4netns: `add_hostfwd` through its API socket; for the host: a server
in the switch's namespace). Rows per MTU: the uplink, slirp4netns's tap0
and tapswitch's network at that MTU. With a baseline binary (the build
before a change) its switch runs beside at every MTU (a build that cannot
set the MTU up leaves a dash).
"""

import json
import os
import socket
import time

from tsbench import connrate
from tsbench.measure import parse_iperf
from tsbench.system import BenchError, create_namespace, log, run, start, stop, wait_until

REMOTE_IP = "10.203.0.2"
UPLINK_IP = "10.203.0.1"
SLIRP_IP = "10.0.2.100"
IPERF_PORT = 5201
# The connection-rate server in the remote namespace.
CONNECT_PORT = 5300
# Ports the connection-rate server listens on: one per round and path
# (see connrate.py: TIME_WAIT of one round must not meet the next).
CONNECT_PORTS = 64
# Its lifetime: longer than any run's measuring, shorter than forever if
# the bench is killed without its cleanup.
CONNECT_SERVER_SECONDS = 900
CONNECT_CLIENTS = 4
CONNECT_SECONDS = 5
# "out" and "published" are iperf3's two directions ("iperf": both).
TESTS = ("out", "published", "connect")
IPERF_TESTS = ("out", "published")
MTUS = (1500, 65520)
# Published host ports on the uplink address, one per path (tapswitch's
# switches take the ones from FIRST_SWITCH_PORT, one per build and MTU).
HOST_PORT = 5210
SLIRP_PORT = 5211
FIRST_SWITCH_PORT = 5212

OUTBOUND_TITLE = "outbound TCP, Gbit/s (iperf3 -c remote, 1 stream)"
PUBLISHED_TITLE = "published-port TCP into the container, Gbit/s (iperf3 -c from the remote)"
CONNECT_TITLE = (
    f"new outbound TCP connections per second ({CONNECT_CLIENTS} clients, "
    f"{CONNECT_SECONDS} s: connect, {len(connrate.REQUEST)} B each way, close)"
)


def measure(
    prefix,
    tapswitch,
    workdir,
    cleanup,
    duration,
    reps,
    mtus=MTUS,
    baseline=None,
    tests=TESTS,
):
    """Returns {"outbound": {mtu: row}, "published": {mtu: row}} for the
    "out" and "published" tests, each row {path: median Gbit/s or None} for host,
    slirp4netns, tapswitch (and baseline), and for the "connect" test
    {"connect": {mtu: {path: connections/s or None}}, "connect_detail":
    {path: counts}}; raw iperf3 JSON stays in `workdir`. The connection
    rate is measured at the lowest MTU only (it does not depend on the
    MTU)."""
    iperf_tests = [t for t in tests if t in IPERF_TESTS]
    if not iperf_tests:
        mtus = (1500,)
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
    servers = [
        (remote, ["iperf3", "-s", "-B", REMOTE_IP], "remote"),
        (sw, ["iperf3", "-s", "-B", UPLINK_IP, "-p", str(HOST_PORT)], "host"),
        (slirp_ns, ["iperf3", "-s", "-p", str(IPERF_PORT)], "slirp"),
    ]
    for ns, argv, label in servers:
        iperf_server(ns, argv, label, workdir, cleanup)
    if "connect" in tests:
        argv = connrate.server_argv(
            REMOTE_IP, f"{CONNECT_PORT}-{CONNECT_PORT + CONNECT_PORTS - 1}", CONNECT_SERVER_SECONDS
        )
        server = start(
            argv,
            remote,
            os.path.join(workdir, "connrate-server.log"),
            os.path.basename(argv[0])[:15],
        )
        cleanup.push("connection-rate server", lambda: stop(server))

    builds = {"tapswitch": tapswitch}
    if baseline:
        builds["baseline"] = baseline
    containers = {}
    setups = {}
    for label, binary in builds.items():
        setup = setups[label] = Setup(prefix, label, binary, sw, workdir, cleanup)
        for mtu in mtus:
            port = FIRST_SWITCH_PORT + len(containers)
            container = setup.container(mtu, port)
            if container:
                iperf_server(container, ["iperf3", "-s"], container, workdir, cleanup)
                containers[(label, mtu)] = (container, port)
    time.sleep(0.3)

    results = {"outbound": {}, "published": {}}
    if "connect" in tests:
        results.update(connect={}, connect_detail={})
    for mtu in mtus:
        for ns, dev in ((remote, "eth0"), (sw, "uplink")):
            run(["ip", "-n", ns, "link", "set", dev, "mtu", str(mtu)])
        api = os.path.join(workdir, f"slirp4netns-{mtu}.sock")
        slirp = start_slirp(sw, slirp_ns, mtu, workdir, api)
        try:
            add_hostfwd(api, SLIRP_PORT)
            outbound = {"host": in_ns(sw), "slirp4netns": in_ns(slirp_ns)}
            published = {
                "host": (UPLINK_IP, HOST_PORT),
                "slirp4netns": (UPLINK_IP, SLIRP_PORT),
            }
            for label in builds:
                if (label, mtu) in containers:
                    container, port = containers[(label, mtu)]
                    outbound[label] = in_ns(container)
                    published[label] = (UPLINK_IP, port)
            if "connect" in tests and mtu == min(mtus):
                row, detail = connection_rates(outbound, setups, workdir, mtu, reps)
                results["connect"][mtu] = row
                results["connect_detail"] = detail
            if "out" in tests:
                results["outbound"][mtu] = medians(
                    outbound,
                    lambda argv: [*argv, "iperf3", "-c", REMOTE_IP],
                    duration,
                    reps,
                    workdir,
                    f"out-mtu{mtu}",
                )
            if "published" in tests:
                results["published"][mtu] = medians(
                    {path: in_ns(remote) for path in published},
                    None,
                    duration,
                    reps,
                    workdir,
                    f"pub-mtu{mtu}",
                    published,
                )
        finally:
            stop(slirp)
    return results


def connection_rates(paths, setups, workdir, mtu, rounds=1):
    """Connections per second of each path (prefix argv running a command
    in the path's client namespace), the paths taking turns for `rounds`
    rounds (a change of load touches all alike); the row and each path's
    counts summed over the rounds. Each tapswitch build's `stats` after its
    test stay in `workdir` (flows opened, refused, dropped)."""
    totals = {path: None for path in paths}
    for round_index in range(rounds):
        for index, (path, prefix_argv) in enumerate(paths.items()):
            port = connect_port(round_index, index, len(paths))
            summary = connrate.measure(
                prefix_argv, REMOTE_IP, port, CONNECT_SECONDS, CONNECT_CLIENTS, log
            )
            if not summary:
                continue
            log(f"connect {path}: {summary['rate']:.0f}/s this round")
            totals[path] = add_counts(totals[path], summary)
    row, detail = {}, {}
    for path, summary in totals.items():
        if path in setups:
            setups[path].save_stats(mtu, os.path.join(workdir, f"connect-stats-{path}.txt"))
        row[path] = summary["rate"] if summary else None
        detail[path] = summary
        if summary:
            log(
                f"connect {path}: {summary['rate']:.0f}/s "
                f"({summary['connections']} in {summary['seconds']:.1f} s, "
                f"{summary['failed']} failed, {summary['slow']} slower than "
                f"{connrate.SLOW_SECONDS} s)"
            )
    row.setdefault("tapswitch", None)
    return row, detail


def connect_port(round_index, path_index, paths):
    """The server port of one round of one path: a fresh one each time,
    so no round meets another's TIME_WAIT four-tuples (wrapping after
    CONNECT_PORTS rounds, far more than 60 s later)."""
    return CONNECT_PORT + (round_index * paths + path_index) % CONNECT_PORTS


def add_counts(total, summary):
    """Two rounds' connection counts as one: the rate over both."""
    if total is None:
        return dict(summary)
    merged = dict(total)
    for key in ("connections", "seconds", "failed", "slow"):
        merged[key] = total[key] + summary[key]
    merged["rate"] = merged["connections"] / merged["seconds"] if merged["seconds"] else 0.0
    return merged


def in_ns(ns):
    return ["ip", "netns", "exec", ns]


def medians(paths, client, duration, reps, workdir, tag, targets=None):
    """The median Gbit/s of each path: `client(prefix_argv)` makes the
    iperf3 client's command; with `targets`, the client connects to each
    path's (address, port) from the path's namespace instead. Repetitions
    take turns (each path once, then again), so a change in the machine's
    load during the test touches every path alike."""
    argvs = {}
    for path, prefix_argv in paths.items():
        if targets:
            address, port = targets[path]
            argvs[path] = [*prefix_argv, "iperf3", "-c", address, "-p", str(port)]
        else:
            argvs[path] = client(prefix_argv)
    samples = {path: [] for path in paths}
    for rep in range(reps):
        for path, argv in argvs.items():
            out = os.path.join(workdir, f"{path}-{tag}-{rep}.json")
            try:
                iperf(argv, duration, out)
                samples[path].append(parse_iperf(out, udp=False)["gbps"])
            except BenchError as err:
                # One path failing (a build with a bug) leaves a dash, not
                # the whole run.
                log(f"{tag} {path}: failed: {err}")
    row = {}
    for path, values in samples.items():
        if not values:
            row[path] = None
            continue
        values.sort()
        row[path] = values[len(values) // 2]
        log(f"{tag} {path}: {row[path]:.2f} Gbit/s ({', '.join(f'{v:.2f}' for v in values)})")
    row.setdefault("tapswitch", None)
    return row


def iperf(argv, duration, out):
    text = run([*argv, "-t", str(duration), "-J"], timeout=duration + 15, check=False)
    with open(out, "w") as f:
        f.write(text)


def iperf_server(ns, argv, label, workdir, cleanup):
    server = start(argv, ns, os.path.join(workdir, f"iperf3-server-{label}.log"), "iperf3")
    cleanup.push(f"iperf3 server ({label})", lambda: stop(server))


def start_slirp(sw, slirp_ns, mtu, workdir, api):
    """slirp4netns for `slirp_ns`, running in the switch's namespace (so its
    sockets are the host's), its tap0 configured at `mtu`, its API socket
    at `api`."""
    # A tap0 left by the previous MTU goes with its slirp4netns.
    run(["ip", "-n", slirp_ns, "link", "del", "tap0"], check=False)
    if os.path.exists(api):
        os.unlink(api)
    proc = start(
        [
            "slirp4netns",
            "--configure",
            f"--mtu={min(mtu, 65520)}",
            "--disable-host-loopback",
            f"--api-socket={api}",
            "--netns-type=path",
            f"/run/netns/{slirp_ns}",
            "tap0",
        ],
        sw,
        os.path.join(workdir, f"slirp4netns-{mtu}.log"),
        "slirp4netns",
    )

    def configured():
        addresses = run(["ip", "-n", slirp_ns, "addr", "show"], check=False)
        return SLIRP_IP in addresses and os.path.exists(api)

    if wait_until(configured, 5, 0.05):
        return proc
    stop(proc)
    raise BenchError("slirp4netns did not configure tap0 within 5 s")


def add_hostfwd(api, host_port):
    """slirp4netns's port forwarding: UPLINK_IP:host_port to the guest's
    iperf3 port, through its API socket."""
    request = {
        "execute": "add_hostfwd",
        "arguments": {
            "proto": "tcp",
            "host_addr": UPLINK_IP,
            "host_port": host_port,
            "guest_port": IPERF_PORT,
        },
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(api)
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        answer = s.recv(4096).decode()
    if "error" in answer:
        raise BenchError(f"slirp4netns add_hostfwd: {answer.strip()}")


class Setup:
    """One tapswitch build's switch and container on a network of its own
    per MTU, in the switch's namespace."""

    def __init__(self, prefix, label, binary, sw, workdir, cleanup):
        self.binary, self.sw, self.cleanup = binary, sw, cleanup
        self.label = label
        self.dir = os.path.join(workdir, label)
        os.makedirs(self.dir, exist_ok=True)
        self.name = prefix.replace("-", "") + label[0]
        # nsenter enters only the network namespace: `ip netns exec` would
        # make a mount namespace of its own, and the container's namespace
        # mount would stay in it.
        self.nsenter = ["nsenter", f"--net=/run/netns/{sw}"]

    def tapswitch(self, *args, state):
        return run([*self.nsenter, self.binary, *args, "--state-dir", state])

    def save_stats(self, mtu, path):
        """The switch's `tapswitch stats` at `mtu`, written to `path`."""
        control = os.path.join(self.dir, f"switch-{mtu}.sock")
        text = run([self.binary, "stats", "--control", control], check=False)
        with open(path, "w") as f:
            f.write(text)

    def container(self, mtu, host_port):
        """A network at `mtu`, its switch and a container publishing
        `host_port` to its iperf3 port; the container's namespace name, or
        None if this build could not set up."""
        state = os.path.join(self.dir, f"state-{mtu}")
        control = os.path.join(self.dir, f"switch-{mtu}.sock")
        network = f"{self.name}m{mtu}"
        container = f"{self.name}c{mtu}"
        try:
            self.tapswitch(
                "network",
                "create",
                network,
                "--subnet",
                "172.30.0.0/24",
                "--mtu",
                str(mtu),
                state=state,
            )
            serve = start(
                [
                    self.binary,
                    "serve",
                    "--network",
                    network,
                    "--state-dir",
                    state,
                    "--control",
                    control,
                ],
                self.sw,
                os.path.join(self.dir, f"tapswitch-{mtu}.log"),
                "tapswitch",
            )
            self.cleanup.push(f"tapswitch serve ({self.label} {mtu})", lambda: stop(serve))
            # No error of our own if it never appears: `container create`
            # then fails with the switch's reason.
            wait_until(lambda: os.path.exists(control), 10, 0.05)
            self.tapswitch(
                "container",
                "create",
                container,
                "--network",
                network,
                "--control",
                control,
                "-p",
                f"{UPLINK_IP}:{host_port}:{IPERF_PORT}",
                state=state,
            )
        except BenchError as err:
            log(f"{self.label}: no container at MTU {mtu}: {err}")
            return None
        self.cleanup.push(
            f"container {container}",
            lambda: run(
                [*self.nsenter, self.binary, "container", "rm", container, "--state-dir", state],
                check=False,
            ),
        )
        return f"tapswitch-{container}"


def render(results, markdown=False, title=OUTBOUND_TITLE, number="{:.2f}", baseline="baseline"):
    """A table: Gbit/s (or what `number` formats) per path and MTU, and
    tapswitch's ratio to slirp4netns and to the host (and to the baseline,
    when measured, its columns called `baseline`)."""
    with_baseline = any(row.get("baseline") is not None for row in results.values())
    head = ["MTU", "host", "slirp4netns", "tapswitch"]
    head += [baseline] if with_baseline else []
    head += ["tapswitch/slirp", "tapswitch/host"]
    head += [f"tapswitch/{baseline}"] if with_baseline else []
    rows = []

    def gb(v):
        return "-" if v is None else number.format(v)

    def ratio(a, b):
        return "-" if a is None or not b else f"{a / b:.2f}x"

    for mtu, row in sorted(results.items()):
        ts, sl, host, base = (row.get(k) for k in ("tapswitch", "slirp4netns", "host", "baseline"))
        cells = [str(mtu), gb(host), gb(sl), gb(ts)]
        cells += [gb(base)] if with_baseline else []
        cells += [ratio(ts, sl), ratio(ts, host)]
        cells += [ratio(ts, base)] if with_baseline else []
        rows.append(cells)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
        lines = [
            "  ".join(x.rjust(w) for x, w in zip(r, widths, strict=True)) for r in [head, *rows]
        ]
    return title + "\n" + "\n".join(lines)


def render_all(results, markdown=False, baseline="baseline"):
    """The tables of a `measure` run: throughput out and in (when the iperf
    test ran) and connections per second (when the connect test ran)."""
    tables = []
    if results.get("outbound"):
        tables.append(render(results["outbound"], markdown, OUTBOUND_TITLE, baseline=baseline))
    if results.get("published"):
        tables.append(render(results["published"], markdown, PUBLISHED_TITLE, baseline=baseline))
    if results.get("connect"):
        tables.append(
            render(results["connect"], markdown, CONNECT_TITLE, "{:.0f}", baseline=baseline)
        )
        failed = {p: d["failed"] for p, d in results.get("connect_detail", {}).items() if d}
        if any(failed.values()):
            tables[-1] += "\nfailed connections: " + ", ".join(
                f"{p} {n}" for p, n in failed.items()
            )
    return "\n\n".join(tables)
