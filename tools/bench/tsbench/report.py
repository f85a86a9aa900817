"""Turning the samples of a run into the two tables it prints.

A run holds, per switch, the samples of every repetition of every test.
Each figure is the median of the repetitions, with min–max beside it; each
ratio divides a switch's median by the Linux bridge's median from the same
run (throughput: higher is better; latency: lower is better).

The tables are transposed (one column per switch) so they fit a terminal
and a README. `render(run, markdown=True)` gives the same tables in Markdown.

With several runs (`bench.py --runs N`, see spread.py) two more tables
follow: the spread of every ratio over the runs, and the runs one by one,
each figure next to the arrangement its test mostly had on the CPUs, a run
whose arrangement differs from most runs' flagged. With `--idle-ports`, one
more: tapswitch with idle ports against the same switch with two.
"""

import statistics
from dataclasses import dataclass

from . import spread


@dataclass
class Metric:
    key: str
    label: str
    test: str  # which samples it comes from (or "" for a per-switch figure)
    decimals: int
    ratio: bool  # shown in the ratio table

    def values(self, samples):
        """One value per repetition, None where the test failed."""
        return [self.extract(s) for s in samples]

    def extract(self, s):
        if s is None:
            return None
        if self.key in ("tcp1", "tcp2"):
            return s["gbps"]
        if self.key == "udp_kpps":
            return s["pps"] / 1000
        if self.key == "udp_loss":
            return s["loss_pct"]
        if self.key == "udp_sent":
            return s["sent_pps"] / 1000
        if self.key == "ping_median":
            return s["median_us"]
        if self.key == "ping_p99":
            return s["p99_us"]
        if self.key == "cpu_gbit":  # CPU milliseconds per gigabit delivered
            cpu, gbit = s.get("switch_cpu_s"), s["gbps"] * s["seconds"]
            return cpu * 1000 / gbit if cpu is not None and gbit > 0 else None
        if self.key == "cpu_mframe":  # CPU seconds per million frames delivered
            cpu, frames = s.get("switch_cpu_s"), s["frames"]
            return cpu / (frames / 1e6) if cpu is not None and frames > 0 else None
        if self.key == "ping_wakeups":  # the switch's sleeps per reply
            sleeps, replies = s.get("switch_sleeps"), s.get("replies")
            return sleeps / replies if sleeps is not None and replies else None
        raise KeyError(self.key)


METRICS = [
    Metric("tcp1", "TCP, 1 stream (Gbit/s)", "tcp1", 2, True),
    Metric("tcp2", "TCP, 2 streams (Gbit/s)", "tcp2", 2, True),
    Metric("udp_kpps", "UDP 64 B delivered (kpps)", "udp", 0, True),
    Metric("udp_loss", "UDP 64 B loss (%)", "udp", 1, False),
    Metric("udp_sent", "UDP 64 B sent (kpps)", "udp", 0, False),
    Metric("ping_median", "ping median (µs)", "ping", 0, True),
    Metric("ping_p99", "ping p99 (µs)", "ping", 0, True),
    Metric("cpu_gbit", "switch CPU per Gbit, TCP 1 (ms)", "tcp1", 1, False),
    Metric("cpu_mframe", "switch CPU per M frames, UDP (s)", "udp", 2, False),
    Metric("ping_wakeups", "switch wake-ups per ping round trip", "ping", 2, False),
]
REFERENCE = "kernel"
# The reference measured a second time as another switch (switches.KernelBridgeAgain).
AGAIN = "kernel-again"


def summary(values):
    """(median, min, max) of the values that exist, or None."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return statistics.median(present), min(present), max(present)


def fmt(value, decimals):
    return "—" if value is None else f"{value:,.{decimals}f}"


def ratio_table(run):
    reference = run["switches"].get(REFERENCE)
    if not reference or not reference.get("samples"):
        return None
    header = ["× Linux bridge"] + [sw["title"] for sw in measured(run)]
    rows = []
    for m in METRICS:
        if not m.ratio:
            continue
        ref = summary(m.values(reference["samples"].get(m.test, [])))
        row = [m.label.split(" (")[0]]
        for sw in measured(run):
            own = summary(m.values(sw["samples"].get(m.test, [])))
            row.append("—" if not own or not ref or not ref[0] else f"{own[0] / ref[0]:.2f}×")
        rows.append(row)
    return header, rows


FLAG = "⚑"


def spread_table(run):
    """min / median / max over the runs of every ratio to the kernel bridge."""
    reference = run["switches"].get(REFERENCE)
    if not reference or not reference.get("samples"):
        return None
    header = ["× Linux bridge, per run: min / median / max"]
    header += [sw["title"] for sw in measured(run)]
    rows = []
    for m in METRICS:
        if not m.ratio:
            continue
        row = [m.label.split(" (")[0]]
        for sw in measured(run):
            row.append(fmt_spread(spread.min_median_max(spread.per_run_ratios(m, sw, reference))))
        rows.append(row)
    return header, rows


def again_phrase(run):
    """What the Linux bridge measured again tells, when it was."""
    again = run["switches"].get(AGAIN)
    if not again or not again.get("samples"):
        return ""
    return (
        f"; {again['title'].split(' (')[0]} is the same bridge measured as another switch: "
        "its spread is the machine's own, and another switch's ratio inside it is noise"
    )


def fmt_spread(s):
    return "—" if s is None else f"{s[0]:.2f} / {s[1]:.2f} / {s[2]:.2f}×"


def runs_table(run):
    """Every run's ratio with the arrangement of its test beside it."""
    reference = run["switches"].get(REFERENCE)
    if not reference or not reference.get("samples"):
        return None
    count = run["settings"].get("runs", 1)
    header = ["ratio and placement"] + [f"run {i + 1}" for i in range(count)]
    rows = []
    for sw in measured(run):
        for m in METRICS:
            if not m.ratio or m.key == "ping_p99":
                continue
            ratios = spread.per_run_ratios(m, sw, reference)
            words, odd = spread.placements_by_run(sw, m.test)
            row = [f"{sw['title']}: {m.label.split(' (')[0]}"]
            for i in range(count):
                ratio = ratios[i] if i < len(ratios) else None
                word = words[i] if i < len(words) else None
                cell = "—" if ratio is None else f"{ratio:.2f}×"
                if word:
                    cell += f" {word[0]} {word[1] * 100:.0f}%"
                if i in odd:
                    cell += f" {FLAG}"
                row.append(cell)
            rows.append(row)
    return header, rows


def load_table(run):
    """Per run, what the switch's own threads went through during each test."""
    count = run["settings"].get("runs", 1)
    header = [
        "switch threads, per s: migrations, context switches, run-queue wait; "
        "changes of read mode in the run's repetitions"
    ]
    header += [f"run {i + 1}" for i in range(count)]
    rows = []
    for sw in measured(run):
        for test in sorted({m.test for m in METRICS}, key=TEST_ORDER.index):
            loads = [spread.run_switch_load(r, test) for r in spread.runs_of(sw)]
            if not any(loads):
                continue
            row = [f"{sw['title']}: {test}"]
            for load in loads:
                row.append(fmt_load(load))
            rows.append(row)
    return (header, rows) if rows else None


TEST_ORDER = ["tcp1", "tcp2", "udp", "ping"]


def fmt_load(load):
    if not load:
        return "—"
    migrations = load["migrations_per_s"]
    moved = "?" if migrations is None else f"{migrations:.0f}"
    text = f"{moved} migr, {load['switches_per_s']:,.0f} cs, wait {load['wait_pct']:.0f}%"
    changes = load.get("mode_changes")
    if changes:
        text += f", read mode changed {changes}×"
    return text


IDLE_PORT_METRICS = [m for m in METRICS if m.key in ("tcp1", "udp_kpps")]


def idle_ports_table(run):
    """tapswitch with idle ports against the same switch with two, in the same runs."""
    part = run.get("idle_ports")
    if not part:
        return None
    entries = [sw for sw in part["switches"].values() if sw.get("samples")]
    reference = part["switches"].get(part["reference"])
    if not reference or not reference.get("samples"):
        return None
    header = ["idle ports"] + [sw["title"] for sw in entries]
    rows = []
    for m in IDLE_PORT_METRICS:
        row = [m.label]
        for sw in entries:
            s = summary(m.values(sw["samples"].get(m.test, [])))
            row.append(
                "—"
                if s is None
                else f"{fmt(s[0], m.decimals)} ({fmt(s[1], m.decimals)}–{fmt(s[2], m.decimals)})"
            )
        rows.append(row)
    for m in IDLE_PORT_METRICS:
        row = [f"{m.label.split(' (')[0]}, × 2 ports (per run: min / median / max)"]
        for sw in entries:
            row.append(fmt_spread(spread.min_median_max(spread.per_run_ratios(m, sw, reference))))
        rows.append(row)
    rows.append(
        ["switch CPU when idle (% of a CPU, schedstat)"]
        + [fmt(sw.get("idle_run_pct"), 3) for sw in entries]
    )
    rows.append(
        ["idle CPU per idle port (% of a CPU)"]
        + [per_port(sw, reference, "idle_run_pct", 1, 4) for sw in entries]
    )
    rows.append(
        ["switch RSS when idle, before the tests (MiB)"]
        + [fmt(sw["idle_rss_kib"] / 1024 if sw.get("idle_rss_kib") else None, 1) for sw in entries]
    )
    rows.append(
        ["RSS per idle port, when idle (KiB)"]
        + [per_port(sw, reference, "idle_rss_kib", 1, 1) for sw in entries]
    )
    rows.append(
        ["switch RSS after the tests (MiB)"]
        + [fmt(sw["rss_kib"] / 1024 if sw.get("rss_kib") else None, 1) for sw in entries]
    )
    rows.append(
        ["setup: first `ip` command to the switch's answer (s)"]
        + [fmt(sw.get("setup_s"), 2) for sw in entries]
    )
    return header, rows


def per_port(sw, reference, key, scale, decimals):
    """(figure with idle ports - figure with two) / idle ports."""
    extra = (sw.get("ports") or 2) - (reference.get("ports") or 2)
    a, b = sw.get(key), reference.get(key)
    if extra <= 0 or a is None or b is None:
        return "—"
    return fmt((a - b) / extra / scale, decimals)


def absolute_table(run):
    header = ["median (min–max)"] + [sw["title"] for sw in measured(run)]
    rows = []
    for m in METRICS:
        row = [m.label]
        for sw in measured(run):
            s = summary(m.values(sw["samples"].get(m.test, [])))
            if s is None:
                row.append("—")
            else:
                cell = f"{fmt(s[0], m.decimals)} ({fmt(s[1], m.decimals)}–{fmt(s[2], m.decimals)})"
                if m.key == "cpu_gbit" and forwarded_by_the_kernel(sw["samples"].get(m.test, [])):
                    cell += ", the kernel forwards"
                row.append(cell)
        rows.append(row)
    rows.append(["switch CPU when idle (% of a CPU)"] + [idle(sw) for sw in measured(run)])
    rows.append(
        ["switch RSS after the run (MiB)"]
        + [fmt(sw["rss_kib"] / 1024 if sw.get("rss_kib") else None, 1) for sw in measured(run)]
    )
    return header, rows


def forwarded_by_the_kernel(samples):
    """Whether the kernel shortcut carried the test between the two ports
    in every repetition: the forwarding then costs the senders' system
    calls, not the switch's threads, and its CPU figure is near zero."""
    present = [s for s in samples if s]
    return bool(present) and all((s.get("shortcut_ports") or 0) >= 2 for s in present)


def idle(sw):
    """Idle CPU is counted in clock ticks; none at all means less than one
    tick over the whole interval, which is what the cell then says."""
    if sw.get("idle_cpu_pct") is None:
        return "—"
    if sw["idle_cpu_pct"] == 0 and sw.get("idle_resolution_pct"):
        return f"< {sw['idle_resolution_pct']:.1f}"
    return fmt(sw["idle_cpu_pct"], 1)


def most_foreign_load(sw):
    return max(x["foreign_pct"] for xs in sw["samples"].values() for x in xs if x)


def most_steal(sw):
    return max(x.get("steal_pct", 0) for xs in sw["samples"].values() for x in xs if x)


def measured(run):
    return [sw for sw in run["switches"].values() if sw.get("samples")]


def render_table(header, rows, markdown):
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(r):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def runs_phrase(settings):
    runs = settings.get("runs", 1)
    return f"{runs} runs × " if runs > 1 else ""


def neighbour_phrase(settings):
    """What the busy neighbour (--neighbour) did, if there was one."""
    pct = settings.get("neighbour")
    if not pct:
        return ""
    used = settings.get("neighbour_used") or []
    took = ""
    if used:
        low, high = f"{min(used):.0f}", f"{max(used):.0f}"
        took = f"; it used {low} %" if low == high else f"; it used {low}–{high} %"
    return f"; a neighbour process kept {pct:g} % of a CPU busy at random moments{took}"


def render(run, markdown=False):
    s = run["settings"]
    parts = [
        f"tapswitch bench, {run['started']}, commit {run.get('commit', '?')}: "
        f"{runs_phrase(s)}{s['reps']} repetitions, {s['duration']} s per iperf3 test, "
        f"{s['pings']} pings; "
        f"{run['machine']}{neighbour_phrase(s)}"
    ]
    ratios = ratio_table(run)
    if ratios:
        parts.append(
            "Ratio to the Linux bridge in the same run (medians; throughput: higher is "
            "better, latency: lower is better)\n\n" + render_table(*ratios, markdown)
        )
    runs = s.get("runs", 1)
    if runs > 1 and ratios:
        parts.append(
            f"Ratio spread over {runs} runs (each run: every switch set up afresh, its "
            "repetitions' median over the Linux bridge's in the same run)"
            + again_phrase(run)
            + "\n\n"
            + render_table(*spread_table(run), markdown)
        )
        parts.append(
            "Runs one by one: the ratio, and where sender S, receiver R and the switch's "
            "busiest thread W mostly ran (`[S W] [R]`: S and W on one CPU, R on the other; "
            "% of the samples); "
            f"{FLAG} marks a run whose placement differs from most runs'\n\n"
            + render_table(*runs_table(run), markdown)
        )
        load = load_table(run)
        if load:
            parts.append(render_table(*load, markdown))
    parts.append("Absolute figures\n\n" + render_table(*absolute_table(run), markdown))
    idle_ports = idle_ports_table(run)
    if idle_ports:
        parts.append(
            "Idle ports: tapswitch (veth) with idle ports attached against the same switch with "
            "only the two busy ones, measured in the same run(s)\n\n"
            + render_table(*idle_ports, markdown)
        )
    if run.get("mac_fill"):
        f = run["mac_fill"]
        parts.append(
            f"Memory, tapswitch with {f['ports']} veth ports: "
            f"RSS {f['rss_before_kib'] / 1024:.1f} MiB with {f['entries_before']} MAC entries, "
            f"{f['rss_after_kib'] / 1024:.1f} MiB after "
            f"{f['sent']} source MACs were sent ({f['entries_after']} entries of {f['capacity']}; "
            f"{f['refused']} refused)"
        )
    notes = [
        f"{sw['title']}: not measured, {sw['skipped']}"
        for sw in run["switches"].values()
        if sw.get("skipped")
    ]
    every = measured(run) + [
        sw for sw in run.get("idle_ports", {}).get("switches", {}).values() if sw.get("samples")
    ]
    noisy = [f"{sw['title']} {most_foreign_load(sw):.0f}%" for sw in every]
    notes.append("most CPU other processes used during one test (% of a CPU): " + ", ".join(noisy))
    if any(most_steal(sw) >= 1 for sw in every):
        stolen = [f"{sw['title']} {most_steal(sw):.0f}%" for sw in every]
        notes.append(
            "most CPU the hypervisor gave other guests during one test (steal, % of a CPU; "
            "a disturbance the line above cannot see): " + ", ".join(stolen)
        )
    repeated = sum(
        x.get("attempts", 1) - 1 for sw in every for xs in sw["samples"].values() for x in xs if x
    )
    if repeated:
        notes.append(f"{repeated} test(s) were repeated because other processes disturbed them")
    parts.append("\n".join(("- " if markdown else "") + n for n in notes))
    return "\n\n".join(parts) + "\n"
