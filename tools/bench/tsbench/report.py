"""Turning the samples of a run into the two tables it prints.

A run holds, per switch, the samples of every repetition of every test.
Each figure is the median of the repetitions, with min–max beside it; each
ratio divides a switch's median by the Linux bridge's median from the same
run (throughput: higher is better; latency: lower is better).

The tables are transposed (one column per switch) so they fit a terminal
and a README. `render(run, markdown=True)` gives the same tables in Markdown.
"""

import statistics
from dataclasses import dataclass


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
]
REFERENCE = "kernel"


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
                row.append(
                    f"{fmt(s[0], m.decimals)} ({fmt(s[1], m.decimals)}–{fmt(s[2], m.decimals)})"
                )
        rows.append(row)
    rows.append(["switch CPU when idle (% of a CPU)"] + [idle(sw) for sw in measured(run)])
    rows.append(
        ["switch RSS after the run (MiB)"]
        + [fmt(sw["rss_kib"] / 1024 if sw.get("rss_kib") else None, 1) for sw in measured(run)]
    )
    return header, rows


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


def render(run, markdown=False):
    s = run["settings"]
    parts = [
        f"tapswitch bench, {run['started']}, commit {run.get('commit', '?')}: "
        f"{s['reps']} repetitions, {s['duration']} s per iperf3 test, {s['pings']} pings; "
        f"{run['machine']}"
    ]
    ratios = ratio_table(run)
    if ratios:
        parts.append(
            "Ratio to the Linux bridge in the same run (medians; throughput: higher is "
            "better, latency: lower is better)\n\n" + render_table(*ratios, markdown)
        )
    parts.append("Absolute figures\n\n" + render_table(*absolute_table(run), markdown))
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
    noisy = [f"{sw['title']} {most_foreign_load(sw):.0f}%" for sw in measured(run)]
    notes.append("most CPU other processes used during one test (% of a CPU): " + ", ".join(noisy))
    repeated = sum(
        x.get("attempts", 1) - 1
        for sw in measured(run)
        for xs in sw["samples"].values()
        for x in xs
        if x
    )
    if repeated:
        notes.append(f"{repeated} test(s) were repeated because other processes disturbed them")
    parts.append("\n".join(("- " if markdown else "") + n for n in notes))
    return "\n\n".join(parts) + "\n"
