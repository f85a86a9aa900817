"""The topology every switch is measured on, built from scratch for each one.

    NAME-h1 (172.17.0.2) eth0 ─┐                      ┌─ eth0 NAME-h2 (172.17.0.3)
                               p1   switch under test  p2
                               └──── in NAME-sw ──────┘
                                  gateway 172.17.0.1

Each host namespace has one interface, eth0, whose other end is a port of
the switch in NAME-sw: a veth pair for the kernel bridge, Open vSwitch and
tapswitch with --iface; a TAP device that the switch holds for tapswitch with
--tap and vde_switch (created in NAME-sw, then moved into the host). The
addresses and MACs are Docker's (172.17.0.0/16, 02:42:ac:11:xx:xx), offloads
are left as the kernel sets them, IPv6 is off. Nothing is created outside
these namespaces, and all traffic stays between them.
"""

from dataclasses import dataclass

from .system import BenchError, create_namespace, run, run_batch, wait_until

GATEWAY_IP = "172.17.0.1"
GATEWAY_MAC = "02:42:ac:11:00:01"
PREFIX_LEN = 16


@dataclass
class Host:
    ns: str
    ip: str
    mac: str
    ifname: str = "eth0"


class Topology:
    def __init__(self, name, host_count, cleanup):
        self.name = name
        self.cleanup = cleanup
        self.switch_ns = f"{name}-sw"
        self.hosts = [
            Host(f"{name}-h{i + 1}", f"172.17.0.{i + 2}", f"02:42:ac:11:00:{i + 2:02x}")
            for i in range(host_count)
        ]

    @property
    def namespaces(self):
        return [self.switch_ns] + [h.ns for h in self.hosts]

    @staticmethod
    def port_name(index):
        """The switch-side name of host `index`'s port: p1, p2, ..."""
        return f"p{index + 1}"

    def create_namespaces(self):
        for ns in self.namespaces:
            create_namespace(ns, self.cleanup)

    def add_veth(self, index, holder_pid=None):
        """A veth pair: eth0 in host `index`, port p<index+1> in the switch
        namespace, or in the network namespace of process `holder_pid`
        (up, no address)."""
        host, port = self.hosts[index], self.port_name(index)
        peer_ns = str(holder_pid) if holder_pid else self.switch_ns
        run(
            [
                "ip",
                "-n",
                host.ns,
                "link",
                "add",
                host.ifname,
                "address",
                host.mac,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                peer_ns,
            ]
        )
        if holder_pid:
            run(["nsenter", f"--net=/proc/{holder_pid}/ns/net", "ip", "link", "set", port, "up"])
        else:
            run(["ip", "-n", self.switch_ns, "link", "set", port, "up"])

    @staticmethod
    def idle_port_names(count):
        """The switch-side names of `count` idle ports and of their peers:
        (i1, j1), (i2, j2), ... (both ends stay in the switch namespace)."""
        return [(f"i{n + 1}", f"j{n + 1}") for n in range(count)]

    def add_idle_veths(self, count):
        """`count` veth pairs inside the switch namespace, both ends up and
        without addresses, so one end can be a switch port that no host
        uses. One `ip -batch` for all of them: hundreds of separate `ip`
        runs would take seconds. Deleted with the namespace."""
        pairs = self.idle_port_names(count)
        lines = [f"link add {a} type veth peer name {b}" for a, b in pairs]
        lines += [f"link set {name} up" for pair in pairs for name in pair]
        run_batch(self.switch_ns, lines)
        return [a for a, _ in pairs]

    def adopt_tap(self, index, tap_name=None):
        """Moves the switch's TAP device into host `index` as its eth0 (the
        switch keeps reading and writing it through its file descriptor)."""
        host, tap = self.hosts[index], tap_name or self.port_name(index)
        run(["ip", "-n", self.switch_ns, "link", "set", tap, "netns", host.ns])
        run(["ip", "-n", host.ns, "link", "set", tap, "name", host.ifname])
        run(["ip", "-n", host.ns, "link", "set", host.ifname, "address", host.mac])

    def configure_host(self, index):
        """Address, link up and a default route via the gateway, as Docker
        configures a container's eth0."""
        host = self.hosts[index]
        run(["ip", "-n", host.ns, "addr", "add", f"{host.ip}/{PREFIX_LEN}", "dev", host.ifname])
        run(["ip", "-n", host.ns, "link", "set", host.ifname, "up"])
        run(["ip", "-n", host.ns, "route", "add", "default", "via", GATEWAY_IP])

    def wait_for_link(self, ifname, timeout=10):
        link = ["ip", "-n", self.switch_ns, "link", "show", ifname]
        if wait_until(lambda: run(link, check=False), timeout, 0.05):
            return
        raise BenchError(
            f"interface {ifname} did not appear in {self.switch_ns} within {timeout} s"
        )
