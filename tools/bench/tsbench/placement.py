"""Where the threads of a test ran: which CPU, how often they moved, how long they waited.

On a machine with two CPUs the switch's workers, the sender and the receiver
share two run queues, and a test's figure depends on who shares a CPU with
whom. While a test runs, a `Sampler` thread reads every 100 ms, for every
thread of the processes it watches (the switch, the sending iperf3 or ping,
the receiving iperf3):

- /proc/PID/task/TID/stat field 39, `processor`: the CPU it last ran on;
- /proc/PID/task/TID/status: voluntary and nonvoluntary context switches;
- /proc/PID/task/TID/sched: `se.nr_migrations` and the policy (when the
  kernel has it: CONFIG_SCHED_DEBUG);
- /proc/PID/task/TID/schedstat: time run and time spent waiting on a run
  queue, in nanoseconds.

`summary()` keeps, per thread, the CPU of every sample and the counters'
growth over the test; `arrangement()` turns that into one word per sample,
e.g. "[S W] [R]" (sender and the busiest switch thread on one CPU, receiver on
the other), and `dominant()` says which arrangement a test mostly had, so
runs that differ can be flagged. The parsing and the aggregation are pure
functions of text and numbers, tested without a kernel.

Sampling is bounded: at most MAX_SAMPLES samples per test, and a thread
stops being read once it is gone.
"""

import threading
import time
from collections import Counter

from .system import threads

INTERVAL_S = 0.1
MAX_SAMPLES = 1200  # two minutes at 100 ms; tests are far shorter
ROLE_LETTERS = {"sender": "S", "receiver": "R", "switch": "W"}


# ------------------------------------------------------------------ parsing


def parse_stat_processor(text):
    """Field 39 of /proc/.../stat (the CPU the task last ran on). The
    command name (field 2) may contain spaces and parentheses, so fields
    are counted after its closing parenthesis, where field 3 is index 0."""
    return int(text.rsplit(")", 1)[1].split()[36])


def parse_status_switches(text):
    """(voluntary, nonvoluntary) context switches from /proc/.../status."""
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            found[name] = int(value)
    return found.get("voluntary_ctxt_switches"), found.get("nonvoluntary_ctxt_switches")


def parse_sched(text):
    """{'migrations': N, 'policy': P} from /proc/.../sched, the keys that exist."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        if name == "se.nr_migrations":
            found["migrations"] = int(float(value))
        elif name == "policy":
            found["policy"] = int(float(value))
    return found


def parse_schedstat(text):
    """(run_ns, wait_ns) from /proc/.../schedstat."""
    fields = text.split()
    return int(fields[0]), int(fields[1])


# ----------------------------------------------------------------- sampling


def _read(path):
    with open(path) as f:
        return f.read()


def read_thread(pid, tid):
    """One reading of a thread, or None when it is gone."""
    base = f"/proc/{pid}/task/{tid}"
    try:
        stat = _read(f"{base}/stat")
        status = _read(f"{base}/status")
        schedstat = _read(f"{base}/schedstat")
    except OSError:
        return None
    try:
        sched = parse_sched(_read(f"{base}/sched"))
    except OSError:
        sched = {}
    voluntary, nonvoluntary = parse_status_switches(status)
    run_ns, wait_ns = parse_schedstat(schedstat)
    return {
        "comm": stat.split("(", 1)[1].rsplit(")", 1)[0],
        "cpu": parse_stat_processor(stat),
        "voluntary": voluntary,
        "nonvoluntary": nonvoluntary,
        "run_ns": run_ns,
        "wait_ns": wait_ns,
        **sched,
    }


class Thread:
    """What the sampler saw of one thread: first and last reading and the
    CPU of every sample (None for samples before it existed)."""

    def __init__(self, role, pid, tid, first, tick):
        self.role, self.pid, self.tid = role, pid, tid
        self.first = self.last = first
        self.cpus = [None] * tick + [first["cpu"]]

    def record(self, reading, tick):
        self.last = reading
        self.cpus += [None] * (tick - len(self.cpus)) + [reading["cpu"]]

    def summary(self):
        def grew(key):
            a, b = self.first.get(key), self.last.get(key)
            return b - a if a is not None and b is not None else None

        return {
            "role": self.role,
            "pid": self.pid,
            "tid": self.tid,
            "comm": self.last["comm"],
            "cpus": self.cpus,
            "migrations": grew("migrations"),
            "voluntary": grew("voluntary"),
            "nonvoluntary": grew("nonvoluntary"),
            "run_ms": grew("run_ns") / 1e6,
            "wait_ms": grew("wait_ns") / 1e6,
            "policy": self.last.get("policy"),
        }


class Sampler:
    """Samples the threads of the watched processes every `interval`
    seconds while the test runs (`with sampler: test()`). Processes can be
    added while it runs (the sender is started by the test)."""

    def __init__(self, interval=INTERVAL_S, max_samples=MAX_SAMPLES):
        self.interval, self.max_samples = interval, max_samples
        self._pids = {}  # pid -> role
        self._threads = {}  # (pid, tid) -> Thread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker = None
        self.ticks = 0
        self.wall_s = 0.0

    def watch(self, pids, role):
        with self._lock:
            for pid in pids:
                self._pids.setdefault(pid, role)

    def __enter__(self):
        self._t0 = time.monotonic()
        self._worker = threading.Thread(target=self._loop, name="placement", daemon=True)
        self._worker.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._worker.join()
        self.sample()  # the counters' state at the very end
        self.wall_s = time.monotonic() - self._t0
        return False

    def _loop(self):
        while not self._stop.is_set() and self.ticks < self.max_samples:
            self.sample()
            self._stop.wait(self.interval)

    def sample(self):
        with self._lock:
            pids = dict(self._pids)
        tick = self.ticks
        for pid, tid in threads(pids):
            reading = read_thread(pid, tid)
            if reading is None:
                continue
            known = self._threads.get((pid, tid))
            if known is None:
                self._threads[(pid, tid)] = Thread(pids[pid], pid, tid, reading, tick)
            else:
                known.record(reading, tick)
        self.ticks += 1

    def summary(self):
        threads = [t.summary() for t in self._threads.values()]
        return {
            "interval_s": self.interval,
            "samples": self.ticks,
            "wall_s": round(self.wall_s, 3),
            "threads": threads,
            "arrangements": dict(arrangement_counts(threads)),
        }


# -------------------------------------------------------------- aggregation


def busiest(threads, role):
    """The thread of `role` that ran longest, or None."""
    mine = [t for t in threads if t["role"] == role]
    return max(mine, key=lambda t: t["run_ms"] or 0, default=None)


def arrangement(cpus_by_letter):
    """One sample's arrangement: letters grouped by CPU, e.g. {"S": 0, "W":
    0, "R": 1} -> "[S W] [R]". Groups are ordered by their letters (S, W,
    R), not by CPU number, so the same sharing on swapped CPUs reads the
    same. (No `|`: the word goes into Markdown tables.)"""
    order = "SWR"
    groups = {}
    for letter, cpu in cpus_by_letter.items():
        groups.setdefault(cpu, []).append(letter)
    words = sorted(
        (" ".join(sorted(g, key=order.index)) for g in groups.values()),
        key=lambda w: order.index(w[0]),
    )
    return " ".join(f"[{w}]" for w in words)


def arrangement_counts(threads):
    """How many samples had each arrangement of the busiest sender,
    receiver and switch thread (those of them that exist)."""
    picked = {}
    for role, letter in ROLE_LETTERS.items():
        t = busiest(threads, role)
        if t is not None:
            picked[letter] = t["cpus"]
    counts = Counter()
    length = max((len(c) for c in picked.values()), default=0)
    for i in range(length):
        now = {k: c[i] for k, c in picked.items() if i < len(c) and c[i] is not None}
        if len(now) == len(picked) and now:
            counts[arrangement(now)] += 1
    return counts


def dominant(counts):
    """(arrangement, share of samples) of the most frequent arrangement, or None."""
    total = sum(counts.values())
    if not total:
        return None
    word, n = max(sorted(counts.items()), key=lambda kv: kv[1])
    return word, n / total


def merged(placements):
    """The arrangement counts of several placements (the repetitions of one
    test in one run) added up; None entries are skipped."""
    total = Counter()
    for p in placements:
        if p:
            total.update(p.get("arrangements", {}))
    return total


def role_totals(placement, role):
    """Migrations, context switches and run-queue wait of all threads of
    `role` in one test, per second of the test."""
    wall = placement.get("wall_s") or 0
    mine = [t for t in placement.get("threads", []) if t["role"] == role]
    if not wall or not mine:
        return None

    def per_s(key):
        values = [t[key] for t in mine if t.get(key) is not None]
        return sum(values) / wall if values else None

    return {
        "migrations_per_s": per_s("migrations"),
        "switches_per_s": (per_s("voluntary") or 0) + (per_s("nonvoluntary") or 0),
        "wait_pct": sum(t["wait_ms"] for t in mine) / 10 / wall,
        "run_pct": sum(t["run_ms"] for t in mine) / 10 / wall,
    }


def odd_ones_out(words):
    """Indexes of the runs whose dominant arrangement differs from the one
    most runs had (nothing is odd when there is no majority to differ from,
    or fewer than three runs have a word)."""
    present = [w for w in words if w]
    if len(present) < 3:
        return set()
    common, n = Counter(present).most_common(1)[0]
    if n * 2 <= len(present):
        return set()
    return {i for i, w in enumerate(words) if w and w != common}
