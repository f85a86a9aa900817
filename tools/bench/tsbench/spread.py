"""Several whole runs of the benchmark, and what varies between them.

A ratio to the kernel bridge measured once can be a lucky or an unlucky
draw of the scheduler (on two CPUs: who shares a CPU with whom). With
`bench.py --runs N` every switch is set up afresh and measured N times; each
run gives its own ratio (the switch's median over the run's repetitions
divided by the kernel bridge's median in the same run), and the report
shows their spread: min, median and max over the runs.

run.json keeps, per switch, the samples of all runs pooled (what the
single-run tables read) and, with N > 1, `runs`: one entry per run (None
where the switch could not be set up in that run). Nothing here imports
the report; the report imports this.
"""

import statistics

from . import placement


def add_run(per_run, results, index):
    """Files one run's results ({key: figures}) under their run index."""
    for key, figures in results.items():
        per_run.setdefault(key, {})[index] = figures


def pool(entries, per_run, runs, keep_runs):
    """Fills every switch's run.json entry from its runs: all samples of
    all runs per test, the median idle CPU and setup time, the last RSS."""
    for key, by_index in per_run.items():
        listed = [by_index.get(i) for i in range(runs)]
        present = [r for r in listed if r]
        entry = entries[key]
        tests = present[0]["samples"].keys()
        entry["samples"] = {t: [s for r in present for s in r["samples"][t]] for t in tests}
        idle = [r["idle_cpu_pct"] for r in present if r.get("idle_cpu_pct") is not None]
        entry["idle_cpu_pct"] = statistics.median(idle) if idle else None
        entry["idle_resolution_pct"] = present[0].get("idle_resolution_pct")
        rss = [r["rss_kib"] for r in present if r.get("rss_kib")]
        entry["rss_kib"] = rss[-1] if rss else None
        for key in ("idle_run_pct", "idle_rss_kib"):  # medians over the runs
            values = [r[key] for r in present if r.get(key) is not None]
            entry[key] = statistics.median(values) if values else None
        if "ports" in present[0]:
            entry["ports"] = present[0]["ports"]
            entry["setup_s"] = statistics.median(r["setup_s"] for r in present)
        if keep_runs:
            entry["runs"] = listed


def runs_of(entry):
    """The entry's runs, or the entry itself as its only run."""
    return entry.get("runs") or [entry]


def run_median(metric, one_run):
    """The median of a metric over one run's repetitions, or None."""
    if not one_run:
        return None
    values = [v for v in metric.values(one_run["samples"].get(metric.test, [])) if v is not None]
    return statistics.median(values) if values else None


def per_run_ratios(metric, entry, reference):
    """One ratio per run: the entry's median over its reference's median
    in the same run (None where either is missing)."""
    ratios = []
    for own_run, ref_run in zip(runs_of(entry), runs_of(reference), strict=False):
        own, ref = run_median(metric, own_run), run_median(metric, ref_run)
        ratios.append(own / ref if own is not None and ref else None)
    return ratios


def min_median_max(values):
    present = [v for v in values if v is not None]
    if not present:
        return None
    return min(present), statistics.median(present), max(present)


def run_placement(one_run, test):
    """The arrangement a test mostly had in one run, over its repetitions:
    (word, share of samples), or None."""
    if not one_run:
        return None
    samples = one_run["samples"].get(test, [])
    return placement.dominant(placement.merged(s.get("placement") for s in samples if s))


def run_switch_load(one_run, test):
    """The switch threads' migrations and context switches per second and
    run-queue wait (% of a CPU) in one run: medians over its repetitions;
    and how often it changed its read mode in all of them (None where the
    switch does not say)."""
    if not one_run:
        return None
    samples = [s for s in one_run["samples"].get(test, []) if s]
    totals = [
        placement.role_totals(s["placement"], "switch") for s in samples if s.get("placement")
    ]
    totals = [t for t in totals if t]
    if not totals:
        return None
    keys = ("migrations_per_s", "switches_per_s", "wait_pct", "run_pct")
    out = {}
    for k in keys:
        values = [t[k] for t in totals if t[k] is not None]
        out[k] = statistics.median(values) if values else None
    changes = [s["reading_changes"] for s in samples if s.get("reading_changes") is not None]
    out["mode_changes"] = sum(changes) if changes else None
    return out


def placements_by_run(entry, test):
    """Per run: (word, share) or None, and the indexes of runs whose word
    differs from most runs'."""
    found = [run_placement(r, test) for r in runs_of(entry)]
    odd = placement.odd_ones_out([f[0] if f else None for f in found])
    return found, odd
