"""Sends frames from COUNT distinct source MACs out of one interface, so a
learning switch fills its MAC table. Runs inside a host namespace of the
benchmark (`ip netns exec NS python3 macfill.py IFNAME DST_MAC COUNT`).

The frames are unicast to DST_MAC (a host the switch already knows), so they
are not flooded; they carry the local experimental EtherType 0x88b5 and a
zero payload, and their sources are locally administered unicast MACs
(02:ee:xx:xx:xx:xx). Bounded: COUNT frames, sent in bursts with short pauses
so the switch's receive queue does not overflow.
"""

import socket
import sys
import time

ETHERTYPE = b"\x88\xb5"  # IEEE 802 local experimental
BURST = 128


def source_mac(i):
    return bytes([0x02, 0xEE, (i >> 24) & 0xFF, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF])


def main(ifname, dst, count):
    dst_mac = bytes.fromhex(dst.replace(":", ""))
    payload = bytes(46)  # minimum Ethernet payload
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        for i in range(count):
            s.send(dst_mac + source_mac(i) + ETHERTYPE + payload)
            if i % BURST == BURST - 1:
                time.sleep(0.002)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} IFNAME DST_MAC COUNT")
    main(sys.argv[1], sys.argv[2], min(int(sys.argv[3]), 1 << 20))
