"""The switches under test: how each one is attached to the topology.

Each class builds its switch on a fresh `Topology` (see topology.py) and
registers everything it starts with the run's `Cleanup`. `processes` are the
switch's own processes, whose CPU time and memory are measured; the kernel
bridge has none (it forwards in softirq context of whoever sends).
"""

import json
import os
import shutil
import socket
import time

from .system import BenchError, adopt, log, run, start, stop, tail, wait_until
from .topology import GATEWAY_IP, GATEWAY_MAC, PREFIX_LEN

# The unprivileged user the rootless column runs as (nobody).
ROOTLESS_UID = 65534


class Switch:
    key = ""  # the name used on the command line (--switches)
    title = ""  # the row label in the tables
    needs = ()  # programs that must be installed
    install_hint = ""

    def __init__(self):
        self.processes = []

    def missing(self):
        """Why this switch cannot be measured here, or None."""
        absent = [p for p in self.needs if shutil.which(p) is None]
        if absent:
            return f"{', '.join(absent)} not installed (to measure it: {self.install_hint})"
        return None

    def start(self, topo, workdir, cleanup):
        raise NotImplementedError

    @property
    def pids(self):
        return [p.pid for p in self.processes]

    def _keep(self, proc, cleanup):
        self.processes.append(proc)
        cleanup.push(f"{proc.comm} pid {proc.pid}", lambda: stop(proc))


class KernelBridge(Switch):
    """The reference: a Linux bridge set up like Docker's docker0 (STP off,
    ageing 300 s, the gateway address on the bridge itself)."""

    key = "kernel"
    title = "Linux bridge (kernel)"

    def start(self, topo, workdir, cleanup):
        ns = topo.switch_ns
        run(["ip", "-n", ns, "link", "add", "br0", "address", GATEWAY_MAC, "type", "bridge"])
        for i in range(len(topo.hosts)):
            topo.add_veth(i)
            run(["ip", "-n", ns, "link", "set", topo.port_name(i), "master", "br0"])
            topo.configure_host(i)
        run(["ip", "-n", ns, "addr", "add", f"{GATEWAY_IP}/{PREFIX_LEN}", "dev", "br0"])
        run(["ip", "-n", ns, "link", "set", "br0", "up"])


class KernelBridgeAgain(KernelBridge):
    """The Linux bridge again, measured as if it were another switch: set up
    afresh in its own namespaces and measured in its own turn, as every
    switch is. Its ratio to the reference is the machine's own spread between
    two identical switches measured seconds apart; on a noisy machine a
    switch's ratio inside that spread says nothing about the switch."""

    key = "kernel-again"
    title = "Linux bridge, again (the machine's spread)"


class Tapswitch(Switch):
    """`tapswitch serve` with its defaults (gateway 172.17.0.1/16, one worker
    per CPU) and a private control socket."""

    binary = None  # set from --tapswitch before use
    serve_args = ()  # set from --serve-arg

    def missing(self):
        if not self.binary or not os.access(self.binary, os.X_OK):
            return f"{self.binary} not found (build it: cargo build --release)"
        return None

    @staticmethod
    def control_path(workdir):
        """The control socket in `workdir` (the switch's own directory): a
        short name, since a socket's path has room for 107 bytes and the
        switch binds a temporary name beside it first."""
        return os.path.join(workdir, "control.sock")

    def serve(self, topo, workdir, cleanup, port_args, extra=()):
        self.control = self.control_path(workdir)
        argv = [self.binary, "serve", *port_args, "--control", self.control]
        argv += [*extra, *self.serve_args]
        proc = start(argv, topo.switch_ns, os.path.join(workdir, f"{self.key}.log"), "tapswitch")
        self._keep(proc, cleanup)
        info = wait_until(lambda: _info(self.control), 20, 0.05, as_long_as=proc.alive)
        if info is None:
            raise BenchError(
                f"tapswitch serve did not answer on {self.control}; see {workdir}/{self.key}.log"
            )
        return info


class TapswitchVeth(Tapswitch):
    key = "tapswitch-veth"
    title = "tapswitch, veth ports"

    def start(self, topo, workdir, cleanup):
        ports = []
        for i in range(len(topo.hosts)):
            topo.add_veth(i)
            ports += ["--iface", topo.port_name(i)]
        for name in self.idle_ports(topo):
            ports += ["--iface", name]
        self.serve(topo, workdir, cleanup, ports)
        for i in range(len(topo.hosts)):
            topo.configure_host(i)

    def idle_ports(self, topo):
        """Interfaces attached besides the hosts' ports (none here)."""
        return []


class TapswitchVethIdlePorts(TapswitchVeth):
    """tapswitch with veth ports, `ports` of them in all: the two hosts'
    and ports - 2 idle ones (veth pairs inside the switch namespace that
    carry nothing but the floods), all given to one `tapswitch serve`.
    `setup_s` is how long the switch took from the first `ip` command to
    the control socket's first answer."""

    ports = 2

    def start(self, topo, workdir, cleanup):
        t0 = time.monotonic()
        super().start(topo, workdir, cleanup)
        self.setup_s = time.monotonic() - t0

    def idle_ports(self, topo):
        return topo.add_idle_veths(self.ports - len(topo.hosts)) if self.ports > 2 else []


def with_ports(ports):
    """The idle-ports test's switch with `ports` ports (2: the reference)."""

    class WithPorts(TapswitchVethIdlePorts):
        key = f"tapswitch-veth-{ports}p"
        title = f"tapswitch, veth, {ports} ports" + (f" ({ports - 2} idle)" if ports > 2 else "")

    WithPorts.ports = ports
    WithPorts.__name__ = f"TapswitchVeth{ports}Ports"
    return WithPorts


class TapswitchVethBusyPoll(TapswitchVeth):
    """tapswitch with veth ports and `--busy-poll 20000`: workers keep
    polling for 20 ms after the last frame instead of sleeping, trading CPU
    for latency."""

    key = "tapswitch-veth-busy"
    title = "tapswitch, veth, --busy-poll 20000"

    def serve(self, topo, workdir, cleanup, port_args, extra=()):
        return super().serve(topo, workdir, cleanup, port_args, ("--busy-poll", "20000", *extra))


class TapswitchVethWorkers(TapswitchVeth):
    """tapswitch with veth ports and `--no-kernel-shortcut`: every frame
    goes through the workers, as before the kernel shortcut (and as in
    rootless mode, which cannot load it)."""

    key = "tapswitch-veth-workers"
    title = "tapswitch, veth, --no-kernel-shortcut"

    def serve(self, topo, workdir, cleanup, port_args, extra=()):
        return super().serve(topo, workdir, cleanup, port_args, ("--no-kernel-shortcut", *extra))


class TapswitchTap(Tapswitch):
    key = "tapswitch-tap"
    title = "tapswitch, TAP ports"

    def start(self, topo, workdir, cleanup):
        ports = []
        for i in range(len(topo.hosts)):
            ports += ["--tap", topo.port_name(i)]
        self.serve(topo, workdir, cleanup, ports)
        for i in range(len(topo.hosts)):
            topo.adopt_tap(i)
            topo.configure_host(i)


class TapFloor(Switch):
    """The floor for TAP ports: tools/examples/tap_floor.rs, a forwarder that
    opens its two TAPs as tapswitch does and does nothing but pass every
    frame from one to the other (no table, no gateway), one thread per
    direction. Its ratio to the bridge is what the TAP itself costs on this
    machine; tapswitch's TAP ports above it are the switch's own cost."""

    key = "tap-floor"
    title = "floor: TAP read/write, a thread per direction"
    binary = None  # set from --tap-floor before use
    extra = ()

    def missing(self):
        if not self.binary or not os.access(self.binary, os.X_OK):
            return (
                f"{self.binary} not found (build it: "
                "cargo build --release -p tools --example tap_floor)"
            )
        return None

    def start(self, topo, workdir, cleanup):
        taps = [topo.port_name(i) for i in range(len(topo.hosts))]
        argv = [self.binary, *self.extra, *taps]
        log_path = os.path.join(workdir, f"{self.key}.log")
        proc = start(argv, topo.switch_ns, log_path, "tap_floor")
        self._keep(proc, cleanup)
        # Both devices are open and up once it says so; not before, or
        # moving one away would fail its set-up.
        forwarding = wait_until(
            lambda: _says(log_path, "forwarding "), 10, 0.05, as_long_as=proc.alive
        )
        if not forwarding:
            raise BenchError(f"tap_floor did not start: {tail(log_path)} (see {log_path})")
        for i in range(len(topo.hosts)):
            topo.adopt_tap(i)
            topo.configure_host(i)


class TapFloorAnswerAtOnce(TapFloor):
    """The floor for a round trip through TAP ports: the same forwarder with
    one real-time thread that reads each frame's answer right after writing
    the frame, one wake-up per round trip (as tapswitch's light mode)."""

    key = "tap-floor-ping"
    title = "floor: TAP read/write, one thread, answer read at once"
    extra = ("--answer-at-once",)


class TapFloorOrdinary(TapFloor):
    """The same one thread at ordinary priority, as a worker without
    CAP_SYS_NICE runs: set beside `tap-floor-ping`, what real-time priority
    under load is worth."""

    key = "tap-floor-ordinary"
    title = "floor: one ordinary thread, answer read at once"
    extra = ("--answer-at-once", "--ordinary")


class TapswitchRootless(Tapswitch):
    """tapswitch with veth ports, run by an unprivileged user (rootless
    mode): the same hosts, but the switch's ends of the veth pairs live in a
    network namespace of the user's own user namespace (held by `unshare
    --user --map-root-user --net sleep`), and `serve`, running as that user,
    reads them through packet sockets a helper opens in there and passes to
    it (the `port_add_in` control request). Its workers run at ordinary
    priority: an unprivileged user gets no real-time priority."""

    key = "tapswitch-rootless"
    title = f"tapswitch, veth, rootless (uid {ROOTLESS_UID})"
    needs = ("setpriv", "unshare")
    install_hint = "apt install util-linux"

    def missing(self):
        return super().missing() or Switch.missing(self)

    def start(self, topo, workdir, cleanup):
        home = os.path.join("/tmp", f"tsbench-rootless-{os.getpid()}")
        os.makedirs(home, mode=0o700, exist_ok=True)
        os.chown(home, ROOTLESS_UID, ROOTLESS_UID)
        cleanup.push(f"remove {home}", lambda: shutil.rmtree(home, ignore_errors=True))
        as_user = [
            "setpriv",
            f"--reuid={ROOTLESS_UID}",
            f"--regid={ROOTLESS_UID}",
            "--clear-groups",
            "--",
            "env",
            f"HOME={home}",
            f"XDG_RUNTIME_DIR={home}/run",
            f"XDG_DATA_HOME={home}/data",
        ]
        holder = start(
            [*as_user, "unshare", "--user", "--map-root-user", "--net", "sleep", "infinity"],
            None,
            os.path.join(workdir, f"{self.key}-netns.log"),
            "sleep",
        )
        cleanup.push(f"sleep pid {holder.pid}", lambda: stop(holder))
        netns = f"/proc/{holder.pid}/ns/net"
        for i in range(len(topo.hosts)):
            # Root makes the pair (as a container runtime would): eth0 in the
            # host, the switch's end in the user's namespace.
            topo.add_veth(i, holder_pid=holder.pid)
        self.control = os.path.join(home, f"{self.key}.sock")
        argv = [*as_user, self.binary, "serve", "--control", self.control, *self.serve_args]
        proc = start(argv, topo.switch_ns, os.path.join(workdir, f"{self.key}.log"), "tapswitch")
        self._keep(proc, cleanup)
        if not wait_until(lambda: _info(self.control), 20, 0.05, as_long_as=proc.alive):
            raise BenchError(
                f"rootless tapswitch serve did not answer; see {workdir}/{self.key}.log"
            )
        for i in range(len(topo.hosts)):
            control_call(
                self.control,
                {"cmd": "port_add_in", "iface": topo.port_name(i), "netns": netns},
            )
            topo.configure_host(i)


class VdeSwitch(Switch):
    """vde_switch (vde2) opening its own TAP devices (-t): one read() and one
    write() per frame, one thread. A third TAP, gw, carries the gateway."""

    key = "vde"
    title = "vde_switch, TAP ports"
    needs = ("vde_switch",)
    install_hint = "apt-get install vde2"

    def start(self, topo, workdir, cleanup):
        pidfile = os.path.join(workdir, "vde_switch.pid")
        taps = [topo.port_name(i) for i in range(len(topo.hosts))] + ["gw"]
        # -f /dev/null: no rc file from the system or the user.
        run(
            [
                "vde_switch",
                "-d",
                "-f",
                "/dev/null",
                "-n",
                "16",
                "-p",
                pidfile,
                "-s",
                os.path.join(workdir, "vde.ctl"),
                "-M",
                os.path.join(workdir, "vde.mgmt"),
                *[a for t in taps for a in ("-t", t)],
            ],
            ns=topo.switch_ns,
        )
        self._keep(adopt(pidfile, "vde_switch"), cleanup)
        for tap in taps:
            topo.wait_for_link(tap)
        for i in range(len(topo.hosts)):
            topo.adopt_tap(i)
            topo.configure_host(i)
        ns = topo.switch_ns
        run(["ip", "-n", ns, "link", "set", "gw", "address", GATEWAY_MAC])
        run(["ip", "-n", ns, "addr", "add", f"{GATEWAY_IP}/{PREFIX_LEN}", "dev", "gw"])
        run(["ip", "-n", ns, "link", "set", "gw", "up"])


class OvsNetdev(Switch):
    """Open vSwitch with the userspace datapath (datapath_type=netdev): veth
    ends are AF_PACKET ports polled by ovs-vswitchd's main thread, the bridge
    runs the NORMAL (learning) action. Userspace TSO is on, so it takes the
    veths' default offloads (PACKET_VNET_HDR); without it no TCP would pass.
    ovsdb-server and ovs-vswitchd run with private directories; only
    ovs-vswitchd's CPU time is the switch's."""

    key = "ovs"
    title = "Open vSwitch netdev (TSO)"
    needs = ("ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "ovsdb-tool")
    install_hint = "apt-get install openvswitch-switch"
    schema = "/usr/share/openvswitch/vswitch.ovsschema"

    def start(self, topo, workdir, cleanup):
        ns, d = topo.switch_ns, os.path.join(workdir, "ovs")
        os.makedirs(d, exist_ok=True)
        env_dirs = {k: d for k in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR")}
        os.environ.update(env_dirs)  # ovs-vsctl and the daemons find their files here
        db = f"unix:{d}/db.sock"

        def vsctl(*args):
            run(["ovs-vsctl", f"--db={db}", "--timeout=20", *args])

        for i in range(len(topo.hosts)):
            topo.add_veth(i)
            topo.configure_host(i)
        run(["ovsdb-tool", "create", f"{d}/conf.db", self.schema])
        run(
            [
                "ovsdb-server",
                f"{d}/conf.db",
                f"--remote=punix:{d}/db.sock",
                f"--unixctl={d}/ovsdb-server.ctl",
                f"--pidfile={d}/ovsdb-server.pid",
                f"--log-file={d}/ovsdb-server.log",
                "-vconsole:off",
                "--detach",
            ],
            ns=ns,
        )
        cleanup.push(
            "ovsdb-server", lambda: stop(adopt(f"{d}/ovsdb-server.pid", "ovsdb-server", 1))
        )
        vsctl("--no-wait", "init")
        vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=true")
        run(
            [
                "ovs-vswitchd",
                db,
                f"--unixctl={d}/ovs-vswitchd.ctl",
                f"--pidfile={d}/ovs-vswitchd.pid",
                f"--log-file={d}/ovs-vswitchd.log",
                "-vconsole:off",
                "--detach",
            ],
            ns=ns,
        )
        self._keep(adopt(f"{d}/ovs-vswitchd.pid", "ovs-vswitchd"), cleanup)
        vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
        for i in range(len(topo.hosts)):
            vsctl("add-port", "br0", topo.port_name(i))
        topo.wait_for_link("br0")
        run(["ip", "-n", ns, "link", "set", "br0", "address", GATEWAY_MAC], check=False)
        run(["ip", "-n", ns, "addr", "add", f"{GATEWAY_IP}/{PREFIX_LEN}", "dev", "br0"])
        run(["ip", "-n", ns, "link", "set", "br0", "up"])


class NoSwitch(Switch):
    """The ceiling: no switch at all. Host 1's and host 2's eth0 are the two
    ends of one veth pair, so the figures are what the two endpoints alone
    reach on this machine, which no switch, kernel or userspace, can beat
    (a frame still crosses a veth, with nothing in between)."""

    key = "veth-pair"
    title = "no switch: one veth pair (ceiling)"

    def start(self, topo, workdir, cleanup):
        h1, h2 = topo.hosts
        run(
            [
                "ip",
                "-n",
                h1.ns,
                "link",
                "add",
                h1.ifname,
                "address",
                h1.mac,
                "type",
                "veth",
                "peer",
                "name",
                h2.ifname,
                "address",
                h2.mac,
                "netns",
                h2.ns,
            ]
        )
        for i in range(len(topo.hosts)):
            topo.configure_host(i)


ALL = [
    KernelBridge,
    KernelBridgeAgain,
    TapswitchVeth,
    TapswitchTap,
    TapswitchVethWorkers,
    TapswitchVethBusyPoll,
    TapswitchRootless,
    VdeSwitch,
    OvsNetdev,
    NoSwitch,
    TapFloor,
    TapFloorAnswerAtOnce,
]

# Measured only when named in --switches.
NAMED_ONLY = [TapFloorOrdinary]


def _says(log_path, text):
    """Whether the log at `log_path` holds `text` yet."""
    try:
        with open(log_path, errors="replace") as f:
            return text in f.read()
    except OSError:
        return False


def baseline_of(cls, binary, label):
    """A copy of tapswitch switch `cls` that runs another binary (`bench.py
    --baseline`): the build before a change, measured in the same run as
    the build after it, so a refactor's before/after ratios share one
    kernel-bridge reference."""

    class Baseline(cls):
        key = f"{cls.key}-base"
        title = f"{cls.title} ({label})"

    Baseline.binary = binary
    Baseline.baseline_for = cls.key
    Baseline.__name__ = f"{cls.__name__}Baseline"
    return Baseline


def measuring_order(classes, run_index):
    """The order the switches of run `run_index` are set up and measured
    in. Whichever is measured after another often does differently (the
    machine's state after the one before), so over several runs no switch
    keeps one place: each run starts one switch later than the run before
    (as given in the first), and a `--baseline` twin, always beside its
    switch, goes after it in even runs and before it in odd ones."""
    units = []
    for cls in classes:
        if units and getattr(cls, "baseline_for", None) == units[-1][0].key:
            units[-1].append(cls)
        else:
            units.append([cls])
    if not units:
        return []
    turn = run_index % len(units)
    order = []
    for unit in units[turn:] + units[:turn]:
        order.extend(reversed(unit) if run_index % 2 else unit)
    return order


def control_call(path, request, timeout=10):
    """One request on tapswitch's control socket (a JSON line each way)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise BenchError(f"tapswitch control socket {path}: {reply.get('error')}")
    return reply.get("data")


def _info(control):
    """The switch's info, or None while its control socket does not answer
    yet: what the waits for a starting switch ask."""
    try:
        return control_call(control, {"cmd": "info"})
    except (OSError, ValueError, BenchError):
        return None


def describe(switch):
    """Version line of the switch program, for the report."""
    try:
        if isinstance(switch, Tapswitch):
            return run([switch.binary, "--version"]).strip()
        if isinstance(switch, VdeSwitch):
            return run(["vde_switch", "-v"], check=False).strip().splitlines()[0]
        if isinstance(switch, OvsNetdev):
            return run(["ovs-vswitchd", "--version"]).strip().splitlines()[0]
        if isinstance(switch, (KernelBridge, NoSwitch)):
            return f"Linux {os.uname().release}"
    except (BenchError, IndexError) as err:
        log(f"cannot tell the version of {switch.title}: {err}")
    return "?"
