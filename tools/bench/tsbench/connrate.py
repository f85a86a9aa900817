"""New TCP connections per second (issue 14's "5,000 new outbound TCP
connections per second"): short connections from a client namespace to a
server in the remote namespace, each one connect, a few bytes each way,
close, for a bounded time with a few concurrent clients.

The same file is the bench's side (`measure`, `parse_clients`) and the
program that runs in the namespaces (`python3 connrate.py server|client
...`): no tool outside the standard library, nothing downloaded.

The server answers and closes first, so TIME_WAIT stays on the remote's
side and the client's ephemeral ports are free again at once (a client
that closed first would run out of them at a few thousand a second). The
server listens on a range of ports and each round of each path gets a port
of its own: the paths share one source address (the switch's namespace),
so with one port a round met the TIME_WAIT entries (60 s) of the rounds
before it on the same four-tuples, and every path, the host's own
included, fell to a few hundred connections a second after the first
round.
"""

import json
import os
import selectors
import socket
import subprocess
import sys
import time

REQUEST = b"ping\n"
ANSWER = b"pong\n"
# Each client stops after this many connections even if time is left, so a
# run is bounded in count as well as in time.
MAX_PER_CLIENT = 200_000
CONNECT_TIMEOUT = 2.0
# A connection slower than this counts as slow: above a lost SYN's first
# retransmission (1 s) shows up here, far above a working one's time.
SLOW_SECONDS = 0.2


def interpreter():
    """The real interpreter (not a version manager's shell shim), so the
    started process's name is predictable for `system.start`."""
    return os.path.realpath(sys.executable)


def server_argv(address, port, seconds):
    return [interpreter(), os.path.abspath(__file__), "server", address, str(port), str(seconds)]


def client_argv(address, port, seconds):
    return [interpreter(), os.path.abspath(__file__), "client", address, str(port), str(seconds)]


def parse_clients(outputs):
    """The clients' JSON lines (one output text per client) summed: {"rate":
    connections per second over the longest client's time, "connections",
    "failed", "seconds"}. Raises ValueError when no client reported."""
    connections = failed = slow = 0
    seconds = 0.0
    reported = 0
    for text in outputs:
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            connections += int(record["connections"])
            failed += int(record["failed"])
            slow += int(record.get("slow", 0))
            seconds = max(seconds, float(record["seconds"]))
            reported += 1
    if not reported or seconds <= 0:
        raise ValueError("no client reported")
    return {
        "rate": connections / seconds,
        "connections": connections,
        "failed": failed,
        "slow": slow,
        "seconds": seconds,
    }


def measure(ns_argv, address, port, seconds, clients, log):
    """Runs `clients` client processes (each started with `ns_argv` in
    front, e.g. `ip netns exec NS`) against the server at address:port for
    `seconds`; returns `parse_clients`' summary, or None if none reported."""
    procs = [
        subprocess.Popen(
            [*ns_argv, *client_argv(address, port, seconds)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(clients)
    ]
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=seconds + 3 * CONNECT_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        outputs.append(out)
    try:
        return parse_clients(outputs)
    except ValueError:
        log(f"connection rate: no client reported: {' | '.join(o.strip() for o in outputs)}")
        return None


def parse_ports(text):
    """The ports a server listens on, from "5300" or "5300-5311"."""
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def serve(address, ports, seconds):
    """Accepts on every port of `ports`, reads the request, answers,
    closes; one thread, non-blocking, so a slow connection never holds up
    the others. Ends after `seconds`."""
    sel = selectors.DefaultSelector()
    listeners = set()
    for port in ports:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(4096)
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ)
        listeners.add(listener)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.5):
            if key.fileobj in listeners:
                while True:
                    try:
                        conn, _ = key.fileobj.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                continue
            conn = key.fileobj
            try:
                data = conn.recv(64)
                if data:
                    conn.send(ANSWER)
            except OSError:
                pass
            sel.unregister(conn)
            conn.close()


def client(address, port, seconds):
    """Connections one after another for `seconds`; prints one JSON line."""
    connections = failed = slow = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end and connections < MAX_PER_CLIENT:
        try:
            with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT) as s:
                s.sendall(REQUEST)
                if s.recv(64) != ANSWER:
                    raise OSError("wrong answer")
            connections += 1
            slow += time.monotonic() - now > SLOW_SECONDS
        except OSError:
            failed += 1
    elapsed = time.monotonic() - start
    record = {"connections": connections, "failed": failed, "slow": slow, "seconds": elapsed}
    print(json.dumps(record))


if __name__ == "__main__":
    role, host, port_text, seconds_text = sys.argv[1:5]
    if role == "server":
        serve(host, parse_ports(port_text), float(seconds_text))
    else:
        client(host, int(port_text), float(seconds_text))
