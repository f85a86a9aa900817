"""What the benchmark's command-line values mean: the argparse types of its
lists and shares, each turning a bad value into one line that says what
is allowed."""

import argparse

from . import outbound

TESTS = ("tcp1", "tcp2", "udp", "ping")
MAX_IDLE_PORTS = 1024


def test_list(text):
    """--tests: names from TESTS, in TESTS' order."""
    asked = {t.strip() for t in text.split(",") if t.strip()}
    unknown = asked - set(TESTS)
    if not asked or unknown:
        raise argparse.ArgumentTypeError(
            f"tests are {', '.join(TESTS)}: {text!r}"
            + (f" ({', '.join(sorted(unknown))}?)" if unknown else "")
        )
    return [t for t in TESTS if t in asked]


def outbound_test_list(text):
    """--outbound-tests: names from outbound.TESTS, in its order ("iperf":
    both of its iperf3 directions)."""
    asked = {t.strip() for t in text.split(",") if t.strip()}
    if "iperf" in asked:
        asked = (asked - {"iperf"}) | set(outbound.IPERF_TESTS)
    unknown = asked - set(outbound.TESTS)
    if not asked or unknown:
        raise argparse.ArgumentTypeError(
            f"outbound tests are iperf, {', '.join(outbound.TESTS)}: {text!r}"
        )
    return [t for t in outbound.TESTS if t in asked]


def mtu_list(text):
    """--outbound-mtus: ascending MTUs from 1280 to 65520."""
    try:
        mtus = sorted({int(m) for m in text.split(",") if m.strip()})
    except ValueError:
        mtus = []
    if not mtus or mtus[0] < 1280 or mtus[-1] > 65520:
        raise argparse.ArgumentTypeError(f"MTUs from 1280 to 65520: {text!r}")
    return mtus


def port_counts(text):
    """--idle-ports: ascending port counts, each from 3 to MAX_IDLE_PORTS."""
    try:
        counts = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not counts or counts[0] < 3 or counts[-1] > MAX_IDLE_PORTS:
        raise argparse.ArgumentTypeError(f"port counts go from 3 to {MAX_IDLE_PORTS}: {text!r}")
    return counts


def percent(text):
    """argparse type of --neighbour: a share of one CPU, above 0 and at most 100."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a share of one CPU in % (above 0, at most 100)"
        )
    return value
