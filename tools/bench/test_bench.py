"""Unit tests for the benchmark's parsing and reporting (no root, no network):

python3 -m unittest discover -s tools/bench
"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tsbench import report  # noqa: E402
from tsbench.measure import parse_iperf, parse_ping, percentile  # noqa: E402
from tsbench.system import BenchError, ForeignLoad  # noqa: E402

_TMP = tempfile.TemporaryDirectory()  # removed when the tests end


def write(text):
    path = os.path.join(_TMP.name, f"out-{len(os.listdir(_TMP.name))}")
    with open(path, "w") as f:
        f.write(text)
    return path


class ParseIperf(unittest.TestCase):
    def test_tcp_takes_the_receivers_rate(self):
        path = write(
            json.dumps(
                {
                    "end": {
                        "sum_sent": {"bits_per_second": 9e9, "retransmits": 12, "seconds": 5},
                        "sum_received": {"bits_per_second": 8e9, "seconds": 5.01},
                    }
                }
            )
        )
        got = parse_iperf(path, udp=False)
        self.assertAlmostEqual(got["gbps"], 8.0)
        self.assertEqual(got["retransmits"], 12)
        self.assertEqual(got["seconds"], 5.01)

    def test_udp_counts_delivered_datagrams(self):
        path = write(
            json.dumps(
                {
                    "end": {
                        "sum_sent": {"packets": 1000, "seconds": 2},
                        "sum_received": {
                            "packets": 1000,
                            "lost_packets": 250,
                            "lost_percent": 25.0,
                            "seconds": 2,
                        },
                    }
                }
            )
        )
        got = parse_iperf(path, udp=True)
        self.assertEqual(got["frames"], 750)
        self.assertEqual(got["pps"], 375)
        self.assertEqual(got["loss_pct"], 25.0)
        self.assertEqual(got["sent_pps"], 500)

    def test_iperf_error_is_reported(self):
        path = write(json.dumps({"error": "the server is busy running a test"}))
        with self.assertRaisesRegex(BenchError, "busy"):
            parse_iperf(path, udp=False)

    def test_output_that_is_not_json_is_reported(self):
        with self.assertRaisesRegex(BenchError, "no JSON"):
            parse_iperf(write("iperf3: error - unable to connect"), udp=False)


class ParsePing(unittest.TestCase):
    def test_median_and_p99_in_microseconds(self):
        lines = [
            f"64 bytes from 172.17.0.3: icmp_seq={i} ttl=64 time=0.0{i % 10}0 ms"
            for i in range(1, 101)
        ]
        got = parse_ping(write("\n".join(lines)))
        self.assertEqual(got["replies"], 100)
        self.assertAlmostEqual(got["median_us"], 45.0)
        self.assertAlmostEqual(got["p99_us"], 90.0)

    def test_no_replies_is_an_error(self):
        with self.assertRaisesRegex(BenchError, "no replies"):
            parse_ping(write("100 packets transmitted, 0 received, 100% packet loss"))

    def test_percentile_is_nearest_rank(self):
        values = list(range(1, 501))
        self.assertEqual(percentile(values, 0.99), 495)
        self.assertEqual(percentile(values, 0.5), 250)
        self.assertEqual(percentile([7], 0.99), 7)


class Foreign(unittest.TestCase):
    def test_ticks_between_counts_deltas_and_new_processes(self):
        before = {"10": ("100", 50), "11": ("200", 5)}
        after = {"10": ("100", 80), "12": ("300", 7), "11": ("999", 4)}  # 11 is a new process
        self.assertEqual(ForeignLoad.ticks_between(before, after), 30 + 7 + 4)


def sample_run():
    def tcp(g):
        return {"gbps": g, "seconds": 5, "switch_cpu_s": 2.0, "foreign_pct": 3}

    def udp(k):
        return {
            "pps": k * 1000,
            "frames": k * 5000,
            "loss_pct": 1.0,
            "seconds": 5,
            "sent_pps": k * 1000,
            "switch_cpu_s": 1.0,
            "foreign_pct": 0,
        }

    def ping(m):
        return {"median_us": m, "p99_us": 2 * m, "foreign_pct": 0}

    kernel = {
        "title": "kernel",
        "samples": {
            "tcp1": [dict(tcp(g), switch_cpu_s=None) for g in (18, 20, 19)],
            "tcp2": [dict(tcp(g), switch_cpu_s=None) for g in (20, 22, 21)],
            "udp": [dict(udp(k), switch_cpu_s=None) for k in (500, 520, 510)],
            "ping": [ping(m) for m in (6, 8, 7)],
        },
    }
    mine = {
        "title": "mine",
        "idle_cpu_pct": 0.2,
        "rss_kib": 4096,
        "samples": {
            "tcp1": [tcp(9), tcp(10), None],  # the third repetition failed
            "tcp2": [tcp(g) for g in (10, 11, 12)],
            "udp": [udp(k) for k in (250, 260, 255)],
            "ping": [ping(m) for m in (14, 12, 13)],
        },
    }
    return {
        "started": "now",
        "machine": "test",
        "settings": {"reps": 3, "duration": 5, "pings": 500},
        "switches": {
            "kernel": kernel,
            "mine": mine,
            "absent": {"title": "absent", "skipped": "not installed"},
        },
    }


class Report(unittest.TestCase):
    def test_ratios_divide_medians_by_the_kernel_bridge(self):
        header, rows = report.ratio_table(sample_run())
        self.assertEqual(header, ["× Linux bridge", "kernel", "mine"])
        by_name = {r[0]: r[1:] for r in rows}
        self.assertEqual(by_name["TCP, 1 stream"], ["1.00×", "0.50×"])  # median of 9, 10 over 19
        self.assertEqual(by_name["UDP 64 B delivered"], ["1.00×", "0.50×"])
        self.assertEqual(by_name["ping median"], ["1.00×", "1.86×"])  # 13 / 7

    def test_absolute_table_shows_median_and_range(self):
        _, rows = report.absolute_table(sample_run())
        by_name = {r[0]: r[1:] for r in rows}
        self.assertEqual(
            by_name["TCP, 2 streams (Gbit/s)"], ["21.00 (20.00–22.00)", "11.00 (10.00–12.00)"]
        )
        self.assertEqual(
            by_name["switch CPU per Gbit, TCP 1 (ms)"][0], "—"
        )  # the kernel has no process
        # 2 s of CPU for 9 and 10 Gbit/s over 5 s: 44.4 and 40 ms per Gbit
        self.assertTrue(by_name["switch CPU per Gbit, TCP 1 (ms)"][1].startswith("42.2 "))
        self.assertEqual(by_name["switch RSS after the run (MiB)"], ["—", "4.0"])
        self.assertEqual(by_name["UDP 64 B sent (kpps)"][0], "510 (500–520)")
        self.assertEqual(by_name["switch CPU when idle (% of a CPU)"], ["—", "0.2"])

    def test_idle_cpu_below_one_tick_shows_the_resolution(self):
        run = sample_run()
        run["switches"]["mine"].update(idle_cpu_pct=0.0, idle_resolution_pct=0.2)
        _, rows = report.absolute_table(run)
        self.assertEqual(
            dict((r[0], r[1:]) for r in rows)["switch CPU when idle (% of a CPU)"], ["—", "< 0.2"]
        )

    def test_render_names_skipped_switches_in_both_formats(self):
        for markdown in (False, True):
            text = report.render(sample_run(), markdown=markdown)
            self.assertIn("absent: not measured, not installed", text)
            self.assertIn("Ratio to the Linux bridge", text)
        self.assertIn(
            "| TCP, 1 stream | 1.00× | 0.50× |", report.render(sample_run(), markdown=True)
        )

    def test_no_ratio_table_without_the_kernel_bridge(self):
        run = sample_run()
        del run["switches"]["kernel"]
        self.assertIsNone(report.ratio_table(run))
        self.assertNotIn("Ratio to the Linux bridge", report.render(run))


if __name__ == "__main__":
    unittest.main()
