"""A busy neighbour: another workload on the machine, made on purpose.

Issue 13's user measured on a shared machine of two CPUs where other
programs took a CPU at moments of their own; there every switch's figures
spread more than on a quiet machine, and the switch's more than the
bridge's. `bench.py --neighbour PCT` brings that to a quiet machine: one
process keeps PCT % of a CPU busy, in bursts of BURST_S at random moments,
through every test of a run and for every switch alike. It is an ordinary
program left to the scheduler (not pinned, ordinary priority), does nothing
but spin and sleep (no network, no files), and ends by itself after its
time limit, so a benchmark killed with SIGKILL leaves it behind for an
hour at most (every other ending stops it at once).

It is started in the benchmark's session, so the foreign-load check
(`system.ForeignLoad`) does not count it; `used_pct()` says how much CPU it
really took.
"""

import os
import random
import subprocess
import sys
import time

from .system import CLK_TCK, cpu_ticks

# A burst: long enough to be a real competitor for a CPU (a few scheduler
# ticks' worth of slices), short enough that every test sees many.
BURST_S = 0.002

# The longest a neighbour lives if nobody stops it (a whole run takes less).
LIMIT_S = 3600

# tools/bench, from where `python3 -m tsbench.neighbour` finds the package.
BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pause_after_burst(pct, rng=random.random):
    """The sleep after a burst: on average the one that makes the busy share
    `pct` %, drawn uniformly between half and one and a half of it so the
    bursts come at random moments."""
    mean = BURST_S * (100 - pct) / pct
    return mean * (0.5 + rng())


def keep_busy(pct, seconds):
    """The neighbour's own loop: busy `pct` % of the time for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        while time.perf_counter() - start < BURST_S:
            pass
        time.sleep(pause_after_burst(pct))


class Neighbour:
    """The neighbour process of one run: `start()`, then `stop()` (also
    through the benchmark's cleanup stack, so it ends when the run fails)."""

    def __init__(self, pct, limit_s):
        self.pct, self.limit_s = pct, limit_s
        self.proc = None
        self.started = None
        # Its CPU time and lifetime, kept by `stop()`.
        self.ticks = 0
        self.seconds = 0.0

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tsbench.neighbour", str(self.pct), str(self.limit_s)],
            cwd=BENCH_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        self.started = time.monotonic()

    def stop(self):
        """Ends the process (by its PID, through its Popen) and keeps its CPU time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.ticks = cpu_ticks([self.proc.pid])
        self.seconds = time.monotonic() - self.started
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def used_pct(self):
        """% of one CPU the neighbour used while it ran (after `stop()`)."""
        return self.ticks / CLK_TCK / self.seconds * 100 if self.seconds else 0.0


if __name__ == "__main__":
    keep_busy(float(sys.argv[1]), float(sys.argv[2]))
