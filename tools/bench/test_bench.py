"""Unit tests for the benchmark's parsing and reporting (no root, no network):

python3 -m unittest discover -s tools/bench
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
from tsbench import (  # noqa: E402
    connrate,
    neighbour,
    options,
    outbound,
    placement,
    report,
    spread,
    switches,
    system,
)
from tsbench.measure import parse_iperf, parse_ping, percentile  # noqa: E402
from tsbench.system import BenchError, ForeignLoad, steal_of  # noqa: E402
from tsbench.topology import Topology  # noqa: E402

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


class Outbound(unittest.TestCase):
    def test_ratios_to_slirp4netns_and_the_host_and_a_dash_where_not_measured(self):
        text = outbound.render(
            {
                1500: {"host": 18.0, "slirp4netns": 0.9, "tapswitch": 4.5},
                65520: {"host": 26.0, "slirp4netns": 4.0, "tapswitch": None},
            }
        )
        lines = text.splitlines()
        self.assertEqual(lines[2].split(), ["1500", "18.00", "0.90", "4.50", "5.00x", "0.25x"])
        self.assertEqual(lines[3].split(), ["65520", "26.00", "4.00", "-", "-", "-"])

    def test_markdown_has_one_row_per_mtu(self):
        text = outbound.render({1500: {"host": 1.0, "slirp4netns": 1.0, "tapswitch": 2.0}}, True)
        self.assertIn("| 1500 | 1.00 | 1.00 | 2.00 | 2.00x | 2.00x |", text)

    def test_a_baseline_adds_its_column_and_ratio(self):
        text = outbound.render(
            {
                1500: {"host": 10.0, "slirp4netns": 1.0, "tapswitch": 4.0, "baseline": 2.0},
                65520: {"host": 20.0, "slirp4netns": 4.0, "tapswitch": 10.0},
            }
        )
        lines = text.splitlines()
        self.assertEqual(lines[1].split()[-1], "tapswitch/baseline")
        self.assertEqual(
            lines[2].split(), ["1500", "10.00", "1.00", "4.00", "2.00", "4.00x", "0.40x", "2.00x"]
        )
        self.assertEqual(
            lines[3].split(), ["65520", "20.00", "4.00", "10.00", "-", "2.50x", "0.50x", "-"]
        )

    def test_the_baseline_columns_carry_its_label(self):
        row = {65520: {"host": 20.0, "slirp4netns": 4.0, "tapswitch": 10.0, "baseline": 5.0}}
        text = outbound.render_all({"published": row}, baseline="start")
        lines = text.splitlines()
        self.assertEqual(lines[0], outbound.PUBLISHED_TITLE)
        self.assertNotIn(outbound.OUTBOUND_TITLE, text)
        self.assertEqual(lines[1].split()[4], "start")
        self.assertEqual(lines[1].split()[-1], "tapswitch/start")
        self.assertEqual(lines[2].split()[-1], "2.00x")

    def test_iperf_stands_for_both_directions_and_mtus_are_checked(self):
        self.assertEqual(bench.outbound_test_list("connect,iperf"), list(outbound.TESTS))
        self.assertEqual(bench.outbound_test_list("published"), ["published"])
        with self.assertRaises(argparse.ArgumentTypeError):
            bench.outbound_test_list("inbound")
        self.assertEqual(bench.mtu_list("65520,1500"), [1500, 65520])
        with self.assertRaises(argparse.ArgumentTypeError):
            bench.mtu_list("70000")

    def test_both_tables_under_their_titles(self):
        row = {1500: {"host": 2.0, "slirp4netns": 1.0, "tapswitch": 3.0}}
        text = outbound.render_all({"outbound": row, "published": row})
        self.assertIn(outbound.OUTBOUND_TITLE, text)
        self.assertIn(outbound.PUBLISHED_TITLE, text)
        self.assertEqual(text.count("3.00x"), 2)


def free_port_pair():
    """A port p of the loopback such that p and p + 1 are both free now."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two free ports in a row on the loopback")


class ConnectionRate(unittest.TestCase):
    def test_clients_are_summed_over_the_longest_clients_time(self):
        outputs = [
            '{"connections": 6000, "failed": 1, "slow": 2, "seconds": 5.0}\n',
            'noise\n{"connections": 4000, "failed": 0, "slow": 3, "seconds": 5.2}\n',
        ]
        summary = connrate.parse_clients(outputs)
        self.assertEqual(summary["connections"], 10000)
        self.assertEqual(summary["failed"], 1)
        self.assertEqual(summary["slow"], 5)
        self.assertEqual(summary["seconds"], 5.2)
        self.assertAlmostEqual(summary["rate"], 10000 / 5.2)

    def test_no_client_reporting_is_an_error_not_a_zero(self):
        with self.assertRaises(ValueError):
            connrate.parse_clients(["Traceback (most recent call last):", ""])

    def test_the_table_has_whole_connections_per_second_and_ratios(self):
        results = {
            "connect": {1500: {"host": 20000.4, "slirp4netns": 2500.0, "tapswitch": 5000.0}},
            "connect_detail": {
                "host": {"failed": 0},
                "slirp4netns": {"failed": 3},
                "tapswitch": {"failed": 0},
            },
        }
        text = outbound.render_all(results)
        lines = text.splitlines()
        self.assertEqual(lines[0], outbound.CONNECT_TITLE)
        self.assertNotIn(outbound.OUTBOUND_TITLE, text)
        self.assertEqual(lines[2].split(), ["1500", "20000", "2500", "5000", "2.00x", "0.25x"])
        self.assertEqual(lines[3], "failed connections: host 0, slirp4netns 3, tapswitch 0")

    def test_a_real_server_and_client_on_loopback(self):
        # The two programs as the bench runs them (no namespace: loopback).
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(connrate.server_argv("127.0.0.1", port, 5))
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.02)
            summary = connrate.measure([], "127.0.0.1", port, 0.3, 2, print)
        finally:
            server.kill()
            server.wait()
        self.assertIsNotNone(summary)
        self.assertGreater(summary["connections"], 0)
        self.assertEqual(summary["failed"], 0)

    def test_every_round_of_every_path_gets_a_port_of_its_own(self):
        # The paths share a source address: a port reused within TIME_WAIT's
        # 60 s made every round after the first crawl.
        ports = [outbound.connect_port(r, p, 4) for r in range(3) for p in range(4)]
        self.assertEqual(len(set(ports)), 12)
        self.assertTrue(
            all(
                p
                in connrate.parse_ports(
                    f"{outbound.CONNECT_PORT}-{outbound.CONNECT_PORT + outbound.CONNECT_PORTS - 1}"
                )
                for p in ports
            )
        )
        self.assertEqual(list(connrate.parse_ports("5300")), [5300])
        self.assertEqual(list(connrate.parse_ports("5300-5302")), [5300, 5301, 5302])

    def test_a_server_on_a_range_answers_on_each_port(self):
        port = free_port_pair()
        server = subprocess.Popen(connrate.server_argv("127.0.0.1", f"{port}-{port + 1}", 5))
        try:
            for each in (port, port + 1):
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    with socket.socket() as s:
                        if s.connect_ex(("127.0.0.1", each)) == 0:
                            break
                    time.sleep(0.02)
                summary = connrate.measure([], "127.0.0.1", each, 0.2, 1, print)
                self.assertIsNotNone(summary)
                self.assertGreater(summary["connections"], 0)
                self.assertEqual(summary["failed"], 0)
        finally:
            server.kill()
            server.wait()

    def test_rounds_add_up_to_one_rate(self):
        first = {"rate": 100.0, "connections": 500, "seconds": 5.0, "failed": 1, "slow": 0}
        second = {"rate": 300.0, "connections": 1500, "seconds": 5.0, "failed": 0, "slow": 2}
        total = outbound.add_counts(outbound.add_counts(None, first), second)
        self.assertEqual(total["connections"], 2000)
        self.assertEqual((total["failed"], total["slow"]), (1, 2))
        self.assertAlmostEqual(total["rate"], 200.0)
        self.assertEqual(first["connections"], 500, "the first round's counts stay as they were")

    def test_outbound_tests_option(self):
        self.assertEqual(bench.outbound_test_list("connect"), ["connect"])
        self.assertEqual(bench.outbound_test_list("connect,iperf"), ["out", "published", "connect"])
        for bad in ("", "tcp1", "connect,tcp1"):
            with self.assertRaises(argparse.ArgumentTypeError):
                bench.outbound_test_list(bad)


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

    def test_a_namespace_made_later_with_our_prefix_is_ours(self):
        # The two-host tests' second switch lives in a namespace made when
        # the switch starts: its CPU is the switch's, not another load's.
        from tsbench import system

        load = ForeignLoad(["b-1-sw"], ["b-1-"])
        names = ["b-1-sw", "b-1-sw2", "other-sw2", "b-10-sw"]
        inodes = {"b-1-sw": 11, "b-1-sw2": 12, "other-sw2": 13, "b-10-sw": 14}
        listdir, inode = system.os.listdir, system.netns_inode
        system.os.listdir = lambda path: names
        system.netns_inode = inodes.get
        try:
            self.assertEqual(load._our_inodes(), {11, 12})
        finally:
            system.os.listdir, system.netns_inode = listdir, inode


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
        return {"median_us": m, "p99_us": 2 * m, "foreign_pct": 0, "replies": 200}

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
            "ping": [dict(ping(m), switch_sleeps=s) for m, s in ((14, 204), (12, 212), (13, 200))],
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
        # 200-212 sleeps over 200 replies
        self.assertEqual(by_name["switch wake-ups per ping round trip"], ["—", "1.02 (1.00–1.06)"])

    def test_idle_cpu_below_one_tick_shows_the_resolution(self):
        phrase = report.neighbour_phrase({"neighbour": 30.0, "neighbour_used": [30.8]})
        self.assertTrue(phrase.endswith("; it used 31 %"), phrase)
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

    def test_steal_is_noted_only_when_the_hypervisor_took_time(self):
        self.assertNotIn("steal", report.render(sample_run()))
        run = sample_run()
        run["switches"]["mine"]["samples"]["ping"][1]["steal_pct"] = 12.4
        text = report.render(run)
        self.assertIn("(steal, % of a CPU", text)
        self.assertIn("kernel 0%, mine 12%", text)
        cpu = "cpu  4261535 108043 2420231 4657143 26988 0 577082 5998 0 0"
        self.assertEqual(steal_of(cpu), 5998)
        self.assertEqual(steal_of("cpu  1 2 3 4"), 0)

    def test_no_ratio_table_without_the_kernel_bridge(self):
        run = sample_run()
        del run["switches"]["kernel"]
        self.assertIsNone(report.ratio_table(run))
        self.assertNotIn("Ratio to the Linux bridge", report.render(run))


STAT = (
    "4242 (tokio-rt (w) 1) S 1 4242 4242 0 -1 4194368 100 0 0 0 7 3 0 0 20 0 3 0 "
    "500 1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
)
STATUS = "Name:\tworker\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n"
SCHED = (
    "worker (4242, #threads: 3)\n"
    "-------------------------------------------------------------------\n"
    "se.exec_start                                :       4158348.480359\n"
    "se.nr_migrations                             :                   10\n"
    "nr_switches                                  :                  111\n"
    "policy                                       :                    1\n"
)


class Waiting(unittest.TestCase):
    """`wait_until` on a fake clock that only its fake sleep moves: no real time passes."""

    def wait(self, condition, timeout, as_long_as=None):
        now = [100.0]
        self.slept = []

        def sleep(seconds):
            self.slept.append(seconds)
            now[0] += seconds

        with (
            mock.patch.object(system.time, "monotonic", lambda: now[0]),
            mock.patch.object(system.time, "sleep", sleep),
        ):
            return system.wait_until(condition, timeout, 0.05, as_long_as)

    def test_returns_what_the_condition_returned_once_it_holds(self):
        answers = iter([None, 0, {"ports": 2}])
        self.assertEqual(self.wait(lambda: next(answers), 1), {"ports": 2})
        self.assertEqual(self.slept, [0.05, 0.05])

    def test_gives_up_at_the_deadline_after_one_last_look(self):
        asked = []
        self.assertIsNone(self.wait(lambda: asked.append("asked"), 0.12))
        # Asked at 0, 0.05, 0.10 and, after the pause that passed the deadline, 0.15.
        self.assertEqual(len(asked), 4)
        self.assertEqual(self.slept, [0.05, 0.05, 0.05])

    def test_gives_up_at_once_when_waiting_cannot_help(self):
        self.assertIsNone(self.wait(lambda: False, 20, as_long_as=lambda: False))
        self.assertEqual(self.slept, [])


class Starting(unittest.TestCase):
    def test_a_program_interrupted_while_it_starts_is_stopped(self):
        log_path = os.path.join(_TMP.name, "start.log")
        started = []
        real_popen = subprocess.Popen

        def popen(*args, **kwargs):
            started.append(real_popen(*args, **kwargs))
            return started[-1]

        real_sleep = time.sleep
        signals = ["SIGTERM"]

        def interrupted(seconds):
            # The signal lands in the first wait; the cleanup's waits are real.
            if signals:
                raise KeyboardInterrupt(signals.pop())
            real_sleep(seconds)

        with (
            mock.patch.object(system.subprocess, "Popen", popen),
            mock.patch.object(system.time, "sleep", interrupted),
            self.assertRaises(KeyboardInterrupt),
        ):
            # Never the expected name: the wait is where the signal lands.
            system.start(["sleep", "30"], None, log_path, "not-sleep")
        self.assertEqual(len(started), 1)
        self.assertIsNotNone(started[0].poll(), "the program was ended")


class PlacementParsing(unittest.TestCase):
    def test_processor_is_field_39_even_with_parentheses_in_the_name(self):
        self.assertEqual(placement.parse_stat_processor(STAT), 1)
        self.assertEqual(placement.parse_stat_processor(STAT.replace(" 17 1 0", " 17 0 0")), 0)

    def test_context_switches_from_status(self):
        self.assertEqual(placement.parse_status_switches(STATUS), (120, 7))
        self.assertEqual(placement.parse_status_switches("Name:\tx\n"), (None, None))

    def test_migrations_and_policy_from_sched(self):
        self.assertEqual(placement.parse_sched(SCHED), {"migrations": 10, "policy": 1})
        self.assertEqual(placement.parse_sched("no such keys\n"), {})

    def test_run_and_wait_from_schedstat(self):
        self.assertEqual(placement.parse_schedstat("2500000 1500000 42\n"), (2500000, 1500000))


def reading(cpu, run_ns=0, wait_ns=0, migrations=0, voluntary=0):
    return {
        "comm": "t",
        "cpu": cpu,
        "voluntary": voluntary,
        "nonvoluntary": 0,
        "run_ns": run_ns,
        "wait_ns": wait_ns,
        "migrations": migrations,
    }


def thread(role, cpus, run_ms=10.0, **extra):
    return dict({"role": role, "cpus": cpus, "run_ms": run_ms, "wait_ms": 0.0}, **extra)


class PlacementAggregation(unittest.TestCase):
    def test_a_thread_keeps_its_cpus_and_the_counters_growth(self):
        t = placement.Thread("switch", 1, 2, reading(0, 1_000_000, 0, 3, 5), tick=2)
        t.record(reading(1, 5_000_000, 2_000_000, 4, 9), tick=3)
        t.record(reading(1, 6_000_000, 2_500_000, 6, 10), tick=5)
        got = t.summary()
        self.assertEqual(got["cpus"], [None, None, 0, 1, None, 1])
        self.assertEqual(got["migrations"], 3)
        self.assertEqual(got["voluntary"], 5)
        self.assertAlmostEqual(got["run_ms"], 5.0)
        self.assertAlmostEqual(got["wait_ms"], 2.5)

    def test_arrangement_groups_by_cpu_and_ignores_which_cpu(self):
        self.assertEqual(placement.arrangement({"S": 0, "W": 0, "R": 1}), "[S W] [R]")
        self.assertEqual(placement.arrangement({"R": 0, "W": 0, "S": 1}), "[S] [W R]")
        self.assertEqual(placement.arrangement({"W": 1, "S": 1, "R": 1}), "[S W R]")

    def test_counts_use_the_busiest_thread_of_each_role(self):
        threads = [
            thread("sender", [0, 0, 0, None]),
            thread("receiver", [1, 1, 0, 1]),
            thread("switch", [0, 1, 1, 1], run_ms=50.0),
            thread("switch", [1, 1, 1, 1], run_ms=0.1),  # an idle worker: not W
        ]
        counts = placement.arrangement_counts(threads)
        # the last sample has no sender reading and is left out
        self.assertEqual(counts, {"[S W] [R]": 1, "[S] [W R]": 1, "[S R] [W]": 1})
        self.assertIsNone(placement.dominant({}))
        self.assertEqual(placement.dominant({"[S W] [R]": 1, "[S] [W R]": 3}), ("[S] [W R]", 0.75))

    def test_merged_adds_up_repetitions(self):
        merged = placement.merged([{"arrangements": {"a": 2}}, None, {"arrangements": {"a": 1}}])
        self.assertEqual(merged, {"a": 3})

    def test_role_totals_are_per_second_of_the_test(self):
        p = {
            "wall_s": 2.0,
            "threads": [
                thread(
                    "switch",
                    [0],
                    run_ms=1000.0,
                    wait_ms=200.0,
                    migrations=4,
                    voluntary=100,
                    nonvoluntary=20,
                ),
                thread(
                    "switch",
                    [1],
                    run_ms=0.0,
                    wait_ms=0.0,
                    migrations=None,
                    voluntary=0,
                    nonvoluntary=0,
                ),
                thread("sender", [0], run_ms=2000.0, wait_ms=0.0),
            ],
        }
        got = placement.role_totals(p, "switch")
        self.assertEqual(got["migrations_per_s"], 2)
        self.assertEqual(got["switches_per_s"], 60)
        self.assertAlmostEqual(got["wait_pct"], 10.0)
        self.assertAlmostEqual(got["run_pct"], 50.0)
        self.assertIsNone(placement.role_totals(p, "receiver"))

    def test_the_run_that_differs_from_most_is_odd(self):
        self.assertEqual(placement.odd_ones_out(["a", "a", "b", None, "a"]), {2})
        self.assertEqual(placement.odd_ones_out(["a", "b", "c"]), set())  # no majority
        self.assertEqual(placement.odd_ones_out(["a", "b"]), set())  # too few to tell

    def test_sampler_reads_its_own_threads(self):
        with placement.Sampler(interval=0.01, max_samples=5) as sampler:
            sampler.watch([os.getpid()], "switch")
            for _ in range(500):  # at most 5 s on a very busy machine
                if sampler.ticks >= 3:
                    break
                time.sleep(0.01)
        got = sampler.summary()
        self.assertLessEqual(got["samples"], 6)  # bounded: 5 in the loop, 1 at the end
        roles = {t["role"] for t in got["threads"]}
        self.assertEqual(roles, {"switch"})
        main = [t for t in got["threads"] if t["tid"] == os.getpid()][0]
        self.assertTrue(all(c is None or c >= 0 for c in main["cpus"]))
        self.assertGreaterEqual(main["run_ms"], 0)


def multi_run():
    """Three runs of sample_run's switches; in run 3 mine is slower and
    its worker sat with the receiver instead of the sender."""

    def placed(sample, word):
        return dict(sample, placement={"wall_s": 1.0, "threads": [], "arrangements": {word: 9}})

    base = sample_run()
    per_run = {}
    for index, factor in enumerate((1.0, 1.0, 0.5)):
        results = {}
        for key in ("kernel", "mine"):
            samples = base["switches"][key]["samples"]
            word = "[S W] [R]" if index < 2 or key == "kernel" else "[S] [W R]"
            scaled = {}
            for test, xs in samples.items():
                scaled[test] = [
                    None
                    if x is None
                    else placed(
                        dict(x, gbps=x["gbps"] * factor) if "gbps" in x and key == "mine" else x,
                        word,
                    )
                    for x in xs
                ]
            results[key] = {
                "samples": scaled,
                "idle_cpu_pct": 0.1 * (index + 1),
                "idle_run_pct": [0.3, None, 0.1][index],
                "rss_kib": 4096,
            }
        spread.add_run(per_run, results, index)
    run = dict(base, settings=dict(base["settings"], runs=3))
    spread.pool(run["switches"], per_run, 3, keep_runs=True)
    return run


class Spread(unittest.TestCase):
    def test_pool_keeps_every_run_and_all_samples(self):
        run = multi_run()
        mine = run["switches"]["mine"]
        self.assertEqual(len(mine["runs"]), 3)
        self.assertEqual(len(mine["samples"]["tcp1"]), 9)
        self.assertAlmostEqual(mine["idle_cpu_pct"], 0.2)
        self.assertAlmostEqual(mine["idle_run_pct"], 0.2)  # the median of the runs that have it
        self.assertEqual(run["switches"]["absent"].get("samples"), None)

    def test_ratios_per_run_and_their_spread(self):
        run = multi_run()
        metric = report.METRICS[0]  # TCP 1 stream
        ratios = spread.per_run_ratios(metric, run["switches"]["mine"], run["switches"]["kernel"])
        self.assertEqual([round(r, 3) for r in ratios], [0.5, 0.5, 0.25])
        self.assertEqual(spread.min_median_max(ratios), (0.25, 0.5, 0.5))
        self.assertIsNone(spread.min_median_max([None]))

    def test_a_single_run_is_its_own_only_run(self):
        run = sample_run()
        metric = report.METRICS[0]
        ratios = spread.per_run_ratios(metric, run["switches"]["mine"], run["switches"]["kernel"])
        self.assertEqual([round(r, 2) for r in ratios], [0.5])

    def test_the_run_with_another_placement_is_flagged(self):
        run = multi_run()
        words, odd = spread.placements_by_run(run["switches"]["mine"], "tcp1")
        self.assertEqual([w[0] for w in words], ["[S W] [R]", "[S W] [R]", "[S] [W R]"])
        self.assertEqual(odd, {2})

    def test_report_shows_spread_and_flags_with_several_runs(self):
        run = multi_run()
        header, rows = report.spread_table(run)
        by_name = {r[0]: r[1:] for r in rows}
        self.assertEqual(by_name["TCP, 1 stream"], ["1.00 / 1.00 / 1.00×", "0.25 / 0.50 / 0.50×"])
        _, rows = report.runs_table(run)
        by_name = {r[0]: r[1:] for r in rows}
        self.assertEqual(
            by_name["mine: TCP, 1 stream"],
            ["0.50× [S W] [R] 100%", "0.50× [S W] [R] 100%", "0.25× [S] [W R] 100% ⚑"],
        )
        text = report.render(run, markdown=True)
        self.assertIn("Ratio spread over 3 runs", text)
        self.assertIn("3 runs × 3 repetitions", text)

    def test_the_bridge_measured_again_shows_the_machines_own_spread(self):
        run = multi_run()
        self.assertNotIn("the machine's own", report.render(run, markdown=True))
        kernel = run["switches"]["kernel"]
        run["switches"][report.AGAIN] = dict(
            kernel, title=switches.KernelBridgeAgain.title, runs=kernel["runs"]
        )
        header, rows = report.spread_table(run)
        self.assertIn(switches.KernelBridgeAgain.title, header)
        by_name = {r[0]: r[1:] for r in rows}
        column = header.index(switches.KernelBridgeAgain.title) - 1
        self.assertEqual(by_name["TCP, 1 stream"][column], "1.00 / 1.00 / 1.00×")
        text = report.render(run, markdown=True)
        self.assertIn("is the same bridge measured as another switch", text)

    def test_the_bridge_again_is_set_up_as_the_bridge_and_measured_by_default(self):
        self.assertTrue(issubclass(switches.KernelBridgeAgain, switches.KernelBridge))
        self.assertEqual(switches.KernelBridgeAgain.key, report.AGAIN)
        keys = [cls.key for cls in switches.ALL]
        self.assertEqual(keys[:2], [report.REFERENCE, report.AGAIN])
        self.assertEqual(len(keys), len(set(keys)), "every key once")

    def test_the_tap_floor_is_measured_by_default_and_its_ordinary_twin_when_named(self):
        keys = [cls.key for cls in switches.ALL]
        self.assertIn("tap-floor", keys)
        self.assertIn("tap-floor-ping", keys)
        self.assertNotIn("tap-floor-ordinary", keys)
        every = keys + [cls.key for cls in switches.NAMED_ONLY]
        self.assertEqual(len(every), len(set(every)), "every key once")
        with mock.patch.object(
            sys, "argv", ["bench.py", "--switches", "kernel,tap-floor-ordinary"]
        ):
            chosen = bench.chosen_switches(bench.parse_args())
        self.assertEqual([cls.key for cls in chosen], ["kernel", "tap-floor-ordinary"])
        self.assertEqual(switches.TapFloorOrdinary.extra, ("--answer-at-once", "--ordinary"))

    def test_the_control_socket_fits_for_the_longest_switch_in_a_run_of_many(self):
        # `--runs 5 --baseline`: results/run-N/<key>-base/, where a socket
        # named after the key did not fit (binding it failed).
        longest = max((cls.key for cls in switches.ALL + switches.NAMED_ONLY), key=len)
        workdir = f"/tmp/tapswitch-bench-20261207-130722/run-10/{longest}-base"
        path = switches.Tapswitch.control_path(workdir)
        self.assertLess(len(f"{path}.4194304"), 108, path)

    def test_every_switch_takes_turns_at_going_first_and_a_baseline_with_its_switch(self):
        tap, veth = switches.TapswitchTap, switches.TapswitchVeth
        tap_base = switches.baseline_of(tap, "/before/tapswitch", "before")
        veth_base = switches.baseline_of(veth, "/before/tapswitch", "before")
        classes = [switches.KernelBridge, tap, tap_base, veth, veth_base, switches.TapFloor]
        keys = lambda order: [cls.key for cls in order]  # noqa: E731
        self.assertEqual(keys(switches.measuring_order(classes, 0)), keys(classes))
        self.assertEqual(
            keys(switches.measuring_order(classes, 1)),
            [
                "tapswitch-tap-base",
                "tapswitch-tap",
                "tapswitch-veth-base",
                "tapswitch-veth",
                "tap-floor",
                "kernel",
            ],
        )
        self.assertEqual(
            keys(switches.measuring_order(classes, 2)),
            [
                "tapswitch-veth",
                "tapswitch-veth-base",
                "tap-floor",
                "kernel",
                "tapswitch-tap",
                "tapswitch-tap-base",
            ],
        )
        firsts = {keys(switches.measuring_order(classes, i))[0] for i in range(4)}
        self.assertEqual(firsts, {"kernel", "tapswitch-tap-base", "tapswitch-veth", "tap-floor"})
        self.assertEqual(switches.measuring_order([], 3), [])

    def test_a_missing_tap_floor_says_how_to_build_it(self):
        with mock.patch.object(switches.TapFloor, "binary", "/nonexistent/tap_floor"):
            why = switches.TapFloorAnswerAtOnce().missing()
        self.assertIn("/nonexistent/tap_floor not found", why)
        self.assertIn("cargo build --release -p tools --example tap_floor", why)

    def test_the_tap_floor_is_started_once_its_log_says_so(self):
        log_path = os.path.join(_TMP.name, "tap-floor.log")
        self.assertFalse(switches._says(log_path, "forwarding "), "no log yet")
        write_to = Path(log_path)
        write_to.write_text("starting\n")
        self.assertFalse(switches._says(log_path, "forwarding "))
        write_to.write_text("starting\nforwarding p1 <-> p2\n")
        self.assertTrue(switches._says(log_path, "forwarding "))

    def test_read_mode_changes_are_summed_over_a_runs_repetitions_and_shown(self):
        switch_threads = {
            "wall_s": 1.0,
            "threads": [thread("switch", [0], voluntary=200, nonvoluntary=0, migrations=1)],
        }
        one_run = {
            "samples": {
                "ping": [
                    {"placement": switch_threads, "reading_changes": 2},
                    None,
                    {"placement": switch_threads, "reading_changes": 0},
                ],
                "tcp1": [{"placement": switch_threads}],
            }
        }
        ping = spread.run_switch_load(one_run, "ping")
        self.assertEqual(ping["mode_changes"], 2)
        self.assertEqual(report.fmt_load(ping), "1 migr, 200 cs, wait 0%, read mode changed 2×")
        tcp1 = spread.run_switch_load(one_run, "tcp1")
        self.assertIsNone(tcp1["mode_changes"], "a switch that does not say")
        self.assertEqual(report.fmt_load(tcp1), "1 migr, 200 cs, wait 0%")

    def test_a_test_records_the_read_mode_changes_a_tapswitch_reports(self):
        class Kernel:
            pass

        class Tapswitch:
            control = None

        class Cand:
            switch = Tapswitch()

        def serve(server, answers):
            for changes in answers:
                conn, _ = server.accept()
                with conn:
                    conn.recv(1 << 16)
                    data = {"reading_changes": changes, "kernel_shortcut": {"ports": 2}}
                    reply = {"ok": True, "data": data}
                    conn.sendall(json.dumps(reply).encode() + b"\n")

        with tempfile.TemporaryDirectory() as tmp:
            Tapswitch.control = os.path.join(tmp, "control.sock")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
                server.bind(Tapswitch.control)
                server.listen(2)
                answering = threading.Thread(target=serve, args=(server, [3, 5]))
                answering.start()
                got = bench.with_switch_info(Cand, dict)()
                answering.join()
        self.assertEqual(got, {"reading_changes": 2, "shortcut_ports": 2})
        self.assertIsNone(bench.switch_info(Kernel()))

    def test_the_cpu_per_gbit_of_a_switch_the_kernel_forwarded_for_says_so(self):
        run = sample_run()
        for sample in run["switches"]["mine"]["samples"]["tcp1"]:
            if sample:
                sample["shortcut_ports"] = 2
        _, rows = report.absolute_table(run)
        cells = {r[0]: r[1:] for r in rows}["switch CPU per Gbit, TCP 1 (ms)"]
        self.assertTrue(cells[-1].endswith(", the kernel forwards"), cells)
        run["switches"]["mine"]["samples"]["tcp1"][0]["shortcut_ports"] = 0
        _, rows = report.absolute_table(run)
        cells = {r[0]: r[1:] for r in rows}["switch CPU per Gbit, TCP 1 (ms)"]
        self.assertNotIn("kernel", cells[-1])

    def test_a_single_run_report_has_no_spread(self):
        text = report.render(sample_run(), markdown=True)
        self.assertNotIn("spread", text)
        self.assertNotIn("run 1", text)


def idle_ports_run():
    run = sample_run()
    mine = run["switches"]["mine"]
    two = dict(mine, title="2 ports", ports=2, idle_run_pct=0.2, idle_rss_kib=4096, setup_s=0.2)
    many = dict(
        mine, title="66 ports", ports=66, idle_run_pct=1.8, idle_rss_kib=4096 + 64 * 32, setup_s=0.9
    )
    many["samples"] = dict(
        mine["samples"], tcp1=[dict(s, gbps=s["gbps"] * 0.9) for s in mine["samples"]["tcp1"] if s]
    )
    run["idle_ports"] = {"reference": "two", "switches": {"two": two, "many": many}}
    return run


class IdlePorts(unittest.TestCase):
    def test_ratios_to_two_ports_and_costs_per_idle_port(self):
        header, rows = report.idle_ports_table(idle_ports_run())
        self.assertEqual(header, ["idle ports", "2 ports", "66 ports"])
        by_name = {r[0]: r[1:] for r in rows}
        self.assertEqual(
            by_name["TCP, 1 stream, × 2 ports (per run: min / median / max)"],
            ["1.00 / 1.00 / 1.00×", "0.90 / 0.90 / 0.90×"],
        )
        self.assertEqual(by_name["idle CPU per idle port (% of a CPU)"], ["—", "0.0250"])
        self.assertEqual(by_name["RSS per idle port, when idle (KiB)"], ["—", "32.0"])
        self.assertEqual(by_name["setup: first `ip` command to the switch's answer (s)"][1], "0.90")
        self.assertIn("Idle ports", report.render(idle_ports_run()))

    def test_tests_option(self):
        self.assertEqual(bench.test_list("ping, tcp1"), ["tcp1", "ping"])
        self.assertEqual(bench.test_list("ping"), ["ping"])
        for bad in ["", "tcp3", "tcp1,udp6", "ping,dns", ","]:
            with self.assertRaises(argparse.ArgumentTypeError):
                bench.test_list(bad)

    def test_port_counts_option(self):
        self.assertEqual(bench.port_counts("256,64"), [64, 256])
        for bad in ("2", "x", "64,5000", ""):
            with self.assertRaises(argparse.ArgumentTypeError):
                bench.port_counts(bad)

    def test_idle_port_names_fit_interface_names(self):
        names = Topology.idle_port_names(254)
        self.assertEqual(names[0], ("i1", "j1"))
        self.assertEqual(len({n for pair in names for n in pair}), 508)
        self.assertTrue(all(len(n) < 16 for pair in names for n in pair))


class BusyNeighbour(unittest.TestCase):
    def test_the_share_is_above_0_and_at_most_a_cpu(self):
        self.assertEqual(options.percent("30"), 30.0)
        self.assertEqual(options.percent("100"), 100.0)
        for bad in ("0", "-5", "101", "half", ""):
            with self.assertRaises(argparse.ArgumentTypeError):
                options.percent(bad)

    def test_pauses_average_to_the_share_and_vary(self):
        burst = neighbour.BURST_S
        # The middle of the random range is the mean: busy 25 % means a
        # pause of three bursts.
        self.assertAlmostEqual(neighbour.pause_after_burst(25, rng=lambda: 0.5), 3 * burst)
        self.assertAlmostEqual(neighbour.pause_after_burst(25, rng=lambda: 0.0), 1.5 * burst)
        self.assertAlmostEqual(neighbour.pause_after_burst(25, rng=lambda: 1.0), 4.5 * burst)
        self.assertEqual(neighbour.pause_after_burst(100, rng=lambda: 0.5), 0)

    def test_the_neighbour_stops_when_told_and_by_itself(self):
        told = neighbour.Neighbour(50, limit_s=60)
        told.start()
        time.sleep(0.3)
        told.stop()
        self.assertIsNotNone(told.proc.poll(), "still running after stop()")
        self.assertGreaterEqual(told.used_pct(), 0)
        alone = neighbour.Neighbour(50, limit_s=0.2)
        alone.start()
        self.assertEqual(alone.proc.wait(timeout=10), 0, "did not end at its time limit")

    def test_the_report_says_what_the_neighbour_did(self):
        self.assertEqual(report.neighbour_phrase({"neighbour": None}), "")
        phrase = report.neighbour_phrase({"neighbour": 30.0, "neighbour_used": [28.4, 31.2]})
        self.assertEqual(
            phrase,
            "; a neighbour process kept 30 % of a CPU busy at random moments; it used 28–31 %",
        )
        run = sample_run()
        run["settings"]["neighbour"] = 30.0
        self.assertIn("kept 30 % of a CPU busy", report.render(run))


class CommandLine(unittest.TestCase):
    def test_every_option_parses_and_help_prints(self):
        # Two options of one name make argparse fail at start, whatever is asked.
        out = subprocess.run(
            [sys.executable, str(Path(bench.__file__)), "--help"],
            capture_output=True,
            text=True,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("--tests", out.stdout)


if __name__ == "__main__":
    unittest.main()
