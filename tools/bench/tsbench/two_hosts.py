"""Two hosts joined by VXLAN: the same two containers as every other test,
but each behind its own host's switch, the hosts joined by an underlay.

    NAME-h1 ─ p1 ─ switch in NAME-sw ═ ul0 ══ underlay ══ ul0 ═ switch in NAME-sw2 ─ p2 ─ NAME-h2
                   (10.199.0.1)                                  (10.199.0.2)

- `kernel-vxlan`: on each host a Linux bridge with the container's veth and
  a kernel `vxlan` device (VNI 4242, port 4789), flooding to the other host
  (`bridge fdb append 00:00:00:00:00:00`), as docs/overlay.md's recipe.
- `tapswitch-vxlan`: on each host `tapswitch serve --network ov --underlay
  IP` with the container's veth as `--iface`, the network and the
  registrations in an etcd started in NAME-sw (its CPU is not counted).
  The network's subnet is another than the containers' (the store has
  172.17.0.0/16 as the default bridge already): the containers keep the
  topology's addresses and talk on-link, the gateway is not used.

The underlay is a veth pair with MTU 1550 so the containers keep their
1500 bytes (a jumbo underlay, as VXLAN deployments use), for both switches
alike. The switches' CPU is both hosts' switch processes (none for the
kernel, which forwards in softirq context).
"""

import os
import shutil
import time

from .switches import Switch, Tapswitch, control_call
from .system import BenchError, create_namespace, run, start, stop, wait_until
from .topology import GATEWAY_IP, PREFIX_LEN

VNI = "4242"
UNDERLAY = ("10.199.0.1", "10.199.0.2")
UNDERLAY_MTU = "1550"
ETCD = "/usr/bin/etcd"


def second_switch_ns(topo):
    return f"{topo.name}-sw2"


def build_hosts(topo, cleanup):
    """The second host's switch namespace, the underlay between the two,
    and each container's veth into its own host's switch namespace."""
    sw1, sw2 = topo.switch_ns, second_switch_ns(topo)
    create_namespace(sw2, cleanup)
    run(["ip", "-n", sw1, "link", "add", "ul0", "mtu", UNDERLAY_MTU, "type", "veth",
         "peer", "name", "ul0", "mtu", UNDERLAY_MTU, "netns", sw2])  # fmt: skip
    for ns, ip in zip((sw1, sw2), UNDERLAY, strict=True):
        run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "ul0"])
        run(["ip", "-n", ns, "link", "set", "ul0", "up"])
    for index, ns in enumerate((sw1, sw2)):
        host, port = topo.hosts[index], topo.port_name(index)
        run(["ip", "-n", host.ns, "link", "add", host.ifname, "address", host.mac, "type",
             "veth", "peer", "name", port, "netns", ns])  # fmt: skip
        run(["ip", "-n", ns, "link", "set", port, "up"])
    return sw1, sw2


class KernelVxlan(Switch):
    key = "kernel-vxlan"
    title = "two hosts, kernel vxlan + Linux bridges"

    def start(self, topo, workdir, cleanup):
        namespaces = build_hosts(topo, cleanup)
        for index, ns in enumerate(namespaces):
            local, other = UNDERLAY[index], UNDERLAY[1 - index]
            run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", ns, "link", "add", "vx0", "mtu", "1500", "type", "vxlan", "id", VNI,
                 "dstport", "4789", "local", local, "dev", "ul0"])  # fmt: skip
            run(["bridge", "-n", ns, "fdb", "append", "00:00:00:00:00:00", "dev", "vx0",
                 "dst", other])  # fmt: skip
            for dev in ("vx0", topo.port_name(index)):
                run(["ip", "-n", ns, "link", "set", dev, "master", "br0", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{GATEWAY_IP}/{PREFIX_LEN}", "dev", "br0"])
            run(["ip", "-n", ns, "link", "set", "br0", "up"])
        for i in range(len(topo.hosts)):
            topo.configure_host(i)


class TapswitchVxlan(Tapswitch):
    key = "tapswitch-vxlan"
    title = "two hosts, tapswitch VXLAN"

    def missing(self):
        if not os.access(ETCD, os.X_OK) and not shutil.which("etcd"):
            return "etcd not installed (to measure it: apt install etcd-server)"
        return super().missing()

    def start(self, topo, workdir, cleanup):
        namespaces = build_hosts(topo, cleanup)
        store = f"etcd://{UNDERLAY[0]}:2379"
        etcd = start(
            [
                shutil.which("etcd") or ETCD,
                "--name=bench",
                f"--data-dir={os.path.join(workdir, 'etcd')}",
                f"--listen-client-urls=http://{UNDERLAY[0]}:2379",
                f"--advertise-client-urls=http://{UNDERLAY[0]}:2379",
                f"--listen-peer-urls=http://{UNDERLAY[0]}:2380",
                f"--initial-advertise-peer-urls=http://{UNDERLAY[0]}:2380",
                f"--initial-cluster=bench=http://{UNDERLAY[0]}:2380",
            ],
            namespaces[0],
            os.path.join(workdir, "etcd.log"),
            "etcd",
        )
        # Not a switch process: its CPU is the control plane's.
        cleanup.push(f"etcd pid {etcd.pid}", lambda: stop(etcd))
        create = [self.binary, "--store", store, "network", "create", "ov",
                  "--driver", "overlay", "--subnet", "10.88.0.0/16", "--vni", VNI,
                  "--mtu", "1500"]  # fmt: skip
        # etcd takes a moment to answer.
        for attempt in range(100):
            try:
                run(create, ns=namespaces[0])
                break
            except BenchError:
                if attempt == 99:
                    raise
                time.sleep(0.1)
        self.controls = []
        for index, ns in enumerate(namespaces):
            control = os.path.join(workdir, f"{self.key}-{index}.sock")
            argv = [self.binary, "--store", store, "serve", "--network", "ov", "--underlay",
                    UNDERLAY[index], "--iface", topo.port_name(index), "--control", control,
                    *self.serve_args]  # fmt: skip
            log_path = os.path.join(workdir, f"{self.key}-{index}.log")
            self._keep(start(argv, ns, log_path, "tapswitch"), cleanup)
            self.controls.append(control)
        self.control = self.controls[0]
        for control in self.controls:
            wait_for_member(control)
        for i in range(len(topo.hosts)):
            topo.configure_host(i)


def wait_for_member(control, timeout=20):
    """Until the switch floods to the other host."""

    def members():
        try:
            tunnel = control_call(control, {"cmd": "tunnel"})
        except (OSError, ValueError, BenchError):
            return None
        return tunnel and tunnel.get("members")

    if wait_until(members, timeout, 0.1):
        return
    raise BenchError(f"the switch at {control} found no other member within {timeout} s")


ALL = [KernelVxlan, TapswitchVxlan]
