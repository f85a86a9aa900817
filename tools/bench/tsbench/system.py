"""Commands, network namespaces and the processes the benchmark starts.

Everything the benchmark creates is registered with a `Cleanup` stack the
moment it exists, so that any way out of the run (the end, an error, Ctrl-C,
SIGTERM) removes it again, newest first. Processes are stopped by the PID we
got when we started them, and only while /proc/PID/comm still names the
program we started: never by name.
"""

import os
import signal
import subprocess
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A one-line message that says what failed and what to do."""


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def in_ns(ns, argv):
    """`argv` run inside network namespace `ns` (ip netns exec execs it,
    so the PID of the started process is the program's own)."""
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def run(argv, ns=None, timeout=60, check=True):
    """Runs a short command and returns its stdout. Raises BenchError with
    the command's stderr when it fails and `check` is set."""
    argv = in_ns(ns, argv)
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"`{' '.join(argv)}` did not finish within {timeout} s") from err
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise BenchError(f"`{' '.join(argv)}` failed: {detail[-1] if detail else done.returncode}")
    return done.stdout


def run_batch(ns, lines, timeout=120):
    """Runs `ip` commands (one per line, without the leading `ip`) in one
    `ip -n NS -batch -`, which stops at the first that fails."""
    argv = ["ip", "-n", ns, "-batch", "-"]
    try:
        done = subprocess.run(
            argv,
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"`{' '.join(argv)}` did not finish within {timeout} s") from err
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise BenchError(f"`{' '.join(argv)}` failed: {detail[-1] if detail else done.returncode}")


def wait_until(condition, timeout, interval, as_long_as=None):
    """Asks `condition()` every `interval` seconds until it returns something
    truthy, and returns that. Returns None after `timeout` seconds, or at once
    when `as_long_as()` turns false (the process we wait for died: waiting
    longer cannot help). None rather than an error, because only the caller
    knows what to tell the user (and some carry on). The condition may raise
    to end the wait with its own error.

    The condition is asked once more after the last pause, so what became
    true during it still counts."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if as_long_as is not None and not as_long_as():
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


class Cleanup:
    """A stack of undo actions, run newest first. An action that fails is
    reported and the others still run."""

    def __init__(self):
        self._actions = []

    def push(self, what, action):
        self._actions.append((what, action))

    def mark(self):
        """A point to undo back to with `run_back_to` (one run of several)."""
        return len(self._actions)

    def run_back_to(self, mark):
        """Undoes the actions pushed since `mark`, newest first."""
        while len(self._actions) > mark:
            self._run_one()

    def _run_one(self):
        what, action = self._actions.pop()
        try:
            action()
        except Exception as err:  # keep undoing the rest
            log(f"cleanup: {what}: {err}")

    def run_all(self):
        self.run_back_to(0)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def install_signal_handlers():
    """SIGINT, SIGTERM and SIGHUP unwind the run, so `finally` blocks clean
    up. SIGINT is set explicitly: a shell starts background jobs with it
    ignored, and Python would then never raise KeyboardInterrupt."""

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in STOP_SIGNALS:
        signal.signal(signum, interrupt)


def ignore_signals():
    """While cleaning up, a second Ctrl-C must not cut the cleanup short."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


# ---------------------------------------------------------------- processes


@dataclass
class Process:
    """A process this benchmark started: its PID and the program name
    /proc/PID/comm had right after the start."""

    pid: int
    comm: str
    popen: object = None  # subprocess.Popen when we are its parent

    def alive(self):
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return read_comm(self.pid) == self.comm


def read_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def start(argv, ns, log_path, expect_comm):
    """Starts a long-running program in namespace `ns`, output to `log_path`."""
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            in_ns(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # Ctrl-C reaches it through our cleanup, in order
        )

    def running():
        if popen.poll() is not None:
            raise BenchError(f"{argv[0]} exited at once: {tail(log_path)}")
        return read_comm(popen.pid) == expect_comm

    # `ip netns exec` needs a moment before it execs the program.
    try:
        if wait_until(running, 5, 0.01):
            return Process(popen.pid, expect_comm, popen)
    except BaseException:
        # Stopped here (Ctrl-C, SIGTERM) before the caller could register
        # the process for cleanup: it would outlive the benchmark.
        stop(Process(popen.pid, read_comm(popen.pid) or "?", popen))
        raise
    stop(Process(popen.pid, read_comm(popen.pid) or "?", popen))
    raise BenchError(f"{argv[0]} did not start within 5 s: {tail(log_path)}")


def adopt(pidfile, expect_comm, timeout=10):
    """A daemon that forked away from us (vde_switch -d, ovs --detach): the
    PID it wrote to its pidfile, checked against the program name."""

    def from_pidfile():
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        return Process(pid, expect_comm) if pid and read_comm(pid) == expect_comm else None

    proc = wait_until(from_pidfile, timeout, 0.05)
    if proc:
        return proc
    raise BenchError(f"{expect_comm} wrote no usable pidfile {pidfile} within {timeout} s")


def stop(proc, grace=5.0):
    """SIGTERM, then SIGKILL after `grace` seconds; only if PID and program
    name still match what we started."""
    if not proc.alive():
        _reap(proc)
        return
    os.kill(proc.pid, signal.SIGTERM)
    ended = wait_until(lambda: not proc.alive(), grace, 0.02)
    if not ended and proc.alive():
        os.kill(proc.pid, signal.SIGKILL)
    _reap(proc)


def _reap(proc):
    if proc.popen is not None:
        try:
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def tail(path, lines=3):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no log)"


# --------------------------------------------------------------- namespaces


def create_namespace(name, cleanup):
    run(["ip", "netns", "add", name])
    cleanup.push(f"namespace {name}", lambda: delete_namespace(name))
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    # IPv6 neighbour discovery and MLD reports would add stray frames.
    run(
        [
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
        ns=name,
    )


# Programs the benchmark runs inside its namespaces. A process found in one of
# our namespaces at cleanup time that runs anything else is left alone.
OUR_PROGRAMS = {
    "tapswitch",
    "iperf3",
    "ping",
    "slirp4netns",
    "vde_switch",
    "ovs-vswitchd",
    "ovsdb-server",
    "python3",
    "python",
    "perf",
    "ip",
}


def delete_namespace(name):
    """Stops what is still running inside (only our programs), then deletes it."""
    pids = run(["ip", "netns", "pids", name], check=False).split()
    for pid in map(int, pids):
        comm = read_comm(pid)
        if comm in OUR_PROGRAMS:
            log(f"stopping leftover {comm} (pid {pid}) in {name}")
            stop(Process(pid, comm))
        elif comm is not None:
            log(f"namespace {name}: pid {pid} ({comm}) is not ours; left alone")
    run(["ip", "netns", "del", name], check=False)


def stale_namespaces(prefix):
    """Namespaces named PREFIX-PID-... whose PID no longer runs: left over
    by a benchmark run that was killed with SIGKILL."""
    stale = []
    for line in run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        parts = name.split("-")
        if len(parts) >= 3 and parts[0] == prefix and parts[1].isdigit():
            if not os.path.exists(f"/proc/{parts[1]}"):
                stale.append(name)
    return stale


def netns_inode(name):
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


# ------------------------------------------------------------ /proc reading


def cpu_ticks(pids):
    """utime + stime of the processes (each includes all its threads), in
    clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total


def threads(pids):
    """(pid, tid) of every thread of the processes, as /proc lists them
    now (a process that is gone has none)."""
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            yield pid, int(tid)


def run_ns(pids):
    """Nanoseconds the processes' threads have run (schedstat), or None
    when the kernel does not keep it. Threads that ended are not counted."""
    total = 0
    for pid, tid in threads(pids):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            continue
        except (OSError, IndexError, ValueError):
            return None
    return total


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_ticks():
    """(busy, total, steal) clock ticks of all CPUs from /proc/stat: steal
    is the time the hypervisor gave other guests while this machine's CPUs
    wanted to run."""
    with open("/proc/stat") as f:
        line = f.readline()
    values = [int(v) for v in line.split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values), steal_of(line)


def steal_of(cpu_line):
    """The steal ticks of /proc/stat's "cpu" line (its 8th value; 0 on a
    kernel or machine without it)."""
    values = cpu_line.split()[1:]
    return int(values[7]) if len(values) > 7 else 0


class ForeignLoad:
    """CPU used by processes that are not part of this benchmark: outside our
    session and outside our namespaces. On a shared machine another workload
    distorts every figure, so runs wait for quiet and record what they saw."""

    def __init__(self, namespaces, prefixes=()):
        self.session = os.getsid(0)
        self.namespaces = list(namespaces)
        # Namespaces a switch makes when it starts (the second host of the
        # two-host tests) are ours too: named with a topology's prefix.
        self.prefixes = tuple(prefixes)
        self.inodes = set()

    def _our_inodes(self):
        names = set(self.namespaces)
        if self.prefixes:
            try:
                names.update(n for n in os.listdir("/run/netns") if n.startswith(self.prefixes))
            except OSError:
                pass
        return {netns_inode(n) for n in names} - {None}

    def snapshot(self):
        self.inodes = self._our_inodes()
        snap = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[6]) & 0x00200000:  # PF_KTHREAD
                    continue
                if int(fields[3]) == self.session:
                    continue
                if os.stat(f"/proc/{entry}/ns/net").st_ino in self.inodes:
                    continue
                snap[entry] = (fields[19], int(fields[11]) + int(fields[12]))
            except (OSError, IndexError, ValueError):
                continue
        return snap

    @staticmethod
    def ticks_between(before, after):
        """Ticks used in between by processes alive at the end (a process
        started in between counts with all its ticks)."""
        used = 0
        for pid, (start, ticks) in after.items():
            old = before.get(pid)
            used += ticks - old[1] if old and old[0] == start else ticks
        return used

    def percent_over(self, seconds):
        """% of one CPU used by other processes over the next `seconds`."""
        before = self.snapshot()
        time.sleep(seconds)
        return self.ticks_between(before, self.snapshot()) / CLK_TCK / seconds * 100

    def wait_quiet(self, limit_pct, max_wait):
        """Waits until other processes use under `limit_pct` % of a CPU, at
        most `max_wait` seconds. Returns the last load seen."""
        deadline = time.monotonic() + max_wait
        load = self.percent_over(0.5)
        while load > limit_pct and time.monotonic() < deadline:
            time.sleep(1)
            load = self.percent_over(0.5)
        return load
