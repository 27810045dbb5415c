"""The cluster master stays joinable under abuse: idle, garbage and unauthenticated
connections, hundreds of them, from one and from several source addresses.

Everything is real: sockets on loopback (127.0.0.1 to 127.0.0.9 are all loopback on
Linux, so they stand for several machines), a master and workers in their own processes.
Floods are bounded loops that stop by themselves; no test asserts a duration beyond a
generous bound.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import pickle
import re
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from blockproc.errors import ConfigError
from blockproc.executors._cluster_worker import run_worker
from blockproc.executors._wire import (
    ANSWER,
    CHALLENGE,
    LOG_BURST,
    MAX_UNAUTHENTICATED_PER_ADDRESS,
    NONCE_SIZE,
    WELCOME,
    Gate,
    Link,
    connect,
)
from blockproc.testing import read_parts
from tests.integration.test_cluster import DATA, KEY, MAPPER, Proc

KEY_BYTES = KEY.encode()
HOSTS = [f"127.0.0.{i}" for i in range(1, 10)]


class Evil:
    """Unpickling this creates a directory: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return os.mkdir, (self.marker,)


def pickle_frame(marker: Path) -> bytes:
    """An unauthenticated pickle, framed as ``Connection.send`` frames it."""
    data = pickle.dumps(Evil(marker))
    return len(data).to_bytes(4, "big") + data


GARBAGE = b"GET / HTTP/1.1\r\nHost: blockproc\r\n\r\n"


# -- the gate alone, in this process -----------------------------------------------------


@dataclass
class Door:
    """A :class:`Gate` serving a real listening socket on 127.0.0.1."""

    gate: Gate
    port: int
    lines: list[str]
    joined: list[Link]
    thread: threading.Thread
    server: socket.socket
    dialled: list[socket.socket] = field(default_factory=list)

    def dial(self, host: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
        """Connect from ``host`` and read the challenge (so the gate has taken this
        connection before the next); return the socket and the master's nonce."""
        sock = socket.socket()
        self.dialled.append(sock)
        sock.bind((host, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", self.port))
        frame = _recv_exact(sock, 4 + len(CHALLENGE) + NONCE_SIZE)
        assert frame[4:4 + len(CHALLENGE)] == CHALLENGE
        return sock, frame[4 + len(CHALLENGE):]

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, f"{what}; the gate logged:\n" + \
                "\n".join(self.lines)
            time.sleep(0.01)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def closed_by_master(sock: socket.socket, timeout: float = 10) -> bool:
    """Wait (bounded) for the master to close ``sock``; False if it stays open."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def prove(sock: socket.socket, nonce: bytes, key: bytes = KEY_BYTES) -> bytes:
    """Answer the challenge as a worker would; return the master's reply."""
    ours = os.urandom(NONCE_SIZE)
    proof = hmac.new(key, b"worker" + nonce, hashlib.sha256).digest()
    payload = ANSWER + proof + ours
    sock.sendall(len(payload).to_bytes(4, "big") + payload)
    size = int.from_bytes(_recv_exact(sock, 4), "big")
    reply = _recv_exact(sock, size)
    if reply.startswith(WELCOME):
        assert reply[len(WELCOME):] == hmac.new(key, b"master" + ours, hashlib.sha256).digest()
    return reply


@pytest.fixture
def door() -> Iterator[Callable[..., Door]]:
    made: list[Door] = []

    def make(**options: float) -> Door:
        server = socket.create_server(("127.0.0.1", 0))
        lines: list[str] = []
        joined: list[Link] = []
        gate = Gate(server, KEY_BYTES, admit=joined.append, log=lines.append,
                    **options)  # type: ignore[arg-type]
        thread = threading.Thread(target=gate.serve, daemon=True)
        thread.start()
        made.append(Door(gate, server.getsockname()[1], lines, joined, thread, server))
        return made[-1]

    yield make
    for d in made:
        d.gate.stop()
        d.thread.join(timeout=5)
        d.server.close()
        for link in d.joined:
            link.close()
        for sock in d.dialled:
            sock.close()


def test_idle_connections_from_one_address_cannot_lock_a_worker_out(
        door: Callable[..., Door]) -> None:
    d = door()
    idle = [d.dial() for _ in range(200)]  # the issue: 32 were enough to lock workers out
    cap = MAX_UNAUTHENTICATED_PER_ADDRESS
    link = connect("127.0.0.1", d.port, KEY_BYTES)  # the worker's own client, same address
    link.close()
    assert d.gate.counts["joined"] == 1
    assert d.gate.counts["evicted"] == len(idle) + 1 - cap  # the worker made room too
    assert all(closed_by_master(sock) for sock, _ in idle[:10])  # oldest first
    sock, nonce = idle[-1]  # the newest idle one is still waiting: it may still prove
    assert prove(sock, nonce).startswith(WELCOME)
    d.wait_for(lambda: len(d.joined) == 2, "the proven connection was not admitted")
    assert not any("authkey" in line for line in d.lines)


def test_total_cap_drops_the_oldest_connection_of_the_busiest_address(
        door: Callable[..., Door]) -> None:
    d = door(per_address=4, total=8)
    first = [d.dial("127.0.0.2") for _ in range(4)]
    others = [d.dial("127.0.0.3") for _ in range(3)] + [d.dial("127.0.0.4")]
    newcomer = d.dial("127.0.0.5")
    assert closed_by_master(first[0][0])
    assert d.gate.counts["evicted"] == 1
    assert any("more than 8 unauthenticated connections at once" in line for line in d.lines)
    for sock, nonce in [*first[1:], *others, newcomer]:  # all the others still may join
        assert prove(sock, nonce).startswith(WELCOME)
    d.wait_for(lambda: len(d.joined) == 8, "not every surviving connection was admitted")


def test_a_silent_connection_is_dropped_at_its_deadline(door: Callable[..., Door]) -> None:
    d = door(timeout=0.5)
    sock, _ = d.dial()
    assert closed_by_master(sock)
    d.wait_for(lambda: any("no handshake within 0.5s" in line for line in d.lines),
               "the silent connection was not logged")
    assert d.gate.counts["idle"] == 1


def test_garbage_and_pickles_are_named_as_such_and_never_unpickled(
        door: Callable[..., Door], tmp_path: Path) -> None:
    d = door()
    marker = tmp_path / "unpickled"
    payloads = [GARBAGE, pickle_frame(marker), pickle.dumps(Evil(marker)), bytes(range(256))]
    # one source address each, so that no line is folded into a summary
    for host, payload in zip(HOSTS[2:], payloads, strict=False):
        sock, _ = d.dial(host)
        sock.sendall(payload)
        assert closed_by_master(sock)
    sock, _ = d.dial(HOSTS[-1])
    sock.close()  # a port scanner: connects, hangs up
    with pytest.raises(EOFError):  # an old blockproc, or any multiprocessing client
        Client(("127.0.0.1", d.port), authkey=KEY_BYTES)
    client = Client(("127.0.0.1", d.port))  # no authkey: it just sends its pickle
    client.send(Evil(marker))
    d.wait_for(lambda: sum(d.gate.counts.values()) == 7, "not every connection was judged")
    sock, nonce = d.dial("127.0.0.2")
    assert prove(sock, nonce, b"another-key-of-enough-length") == b"#FAILURE#"
    d.wait_for(lambda: d.gate.counts["wrong key"] == 1, "the wrong key was not counted")
    client.close()
    assert not marker.exists()
    assert d.gate.counts == Counter({"garbage": 2, "pickle": 3, "closed": 1, "version": 1,
                                     "wrong key": 1})
    text = "\n".join(d.lines)
    assert "garbage on the cluster port from 127.0.0.3:" in text
    assert "(an HTTP request: b'GET / HTTP/1.1\\r\\nHost: bl')" in text
    assert "garbage on the cluster port from 127.0.0.6:" in text
    for host in ("127.0.0.4", "127.0.0.5", "127.0.0.1"):
        assert f"unauthenticated pickle on the cluster port from {host}:" in text
    assert "connection from 127.0.0.9:" in text and "closed before the handshake" in text
    assert "a peer at 127.0.0.1:" in text and "answered with another handshake" in text
    wrong = [line for line in d.lines if "authkey does not match" in line]
    assert len(wrong) == 1 and "from 127.0.0.2:" in wrong[0], d.lines
    assert d.gate.refusals == wrong
    assert d.joined == []


def test_failures_past_a_few_per_address_are_counted_not_logged(
        door: Callable[..., Door]) -> None:
    d = door()
    for _ in range(40):
        sock, _ = d.dial("127.0.0.6")
        sock.sendall(GARBAGE)
        assert closed_by_master(sock)
    d.wait_for(lambda: d.gate.counts["garbage"] == 40, "not every connection was judged")
    d.gate.stop()
    d.thread.join(timeout=5)
    assert sum("garbage on the cluster port" in line for line in d.lines) == LOG_BURST
    assert f"{40 - LOG_BURST} more connections from 127.0.0.6 failed to authenticate" \
        in d.lines[-1]
    assert f"({40 - LOG_BURST} garbage)" in d.lines[-1]


# -- the worker's side -----------------------------------------------------------------


class Bouncer:
    """A TCP port that hangs up on the first ``drops`` connections, then (if given a
    target) relays each later one to ``target``."""

    def __init__(self, drops: int, target: int | None = None) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.drops, self.target = drops, target
        self.accepted = 0
        self._relayed: list[tuple[socket.socket, threading.Thread]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.server.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            if self.accepted <= self.drops or self.target is None:
                sock.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((sock, upstream), (upstream, sock)):
                pipe = threading.Thread(target=_pipe, args=(a, b), daemon=True)
                pipe.start()
                self._relayed.append((a, pipe))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()
        for sock, pipe in self._relayed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            pipe.join(timeout=5)
        for sock, _ in self._relayed:
            sock.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "access.log").write_bytes(DATA)
    (tmp_path / "mymod.py").write_text(MAPPER)
    return tmp_path


@pytest.fixture
def spawn(work: Path) -> Iterator[Callable[[list[str]], Proc]]:
    started: list[Proc] = []

    def start(args: list[str]) -> Proc:
        started.append(Proc(args, work))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


def start_master(spawn: Callable[[list[str]], Proc], fn: str) -> tuple[Proc, int]:
    master = spawn(["run", "data/access.log", "-o", "out", "--map", f"mymod:{fn}",
                    "--executor", "cluster", "--listen", "127.0.0.1:0",
                    "--block-size", "4KiB", "--no-progress"])
    return master, int(master.expect(r"listening on 127\.0\.0\.1:(\d+)").group(1))


def test_worker_retries_a_dropped_handshake_and_joins(
        spawn: Callable[[list[str]], Proc], work: Path) -> None:
    master, port = start_master(spawn, "upper")
    bouncer = Bouncer(drops=3, target=port)
    try:
        worker = spawn(["worker", "--connect", f"127.0.0.1:{bouncer.port}", "--slots", "1",
                        "--once"])
        assert worker.wait() == 0, worker.stderr
        assert master.wait() == 0, master.stderr
    finally:
        bouncer.close()
    assert bouncer.accepted == 4
    assert "dropped the connection during the authkey handshake (closed before its " \
        "challenge); trying again with backoff" in worker.stderr
    assert "after 3 dropped connections" in worker.stderr
    assert read_parts(str(work / "out")) == DATA.upper()


def test_worker_gives_up_on_a_master_that_always_drops_it() -> None:
    bouncer = Bouncer(drops=10 ** 6)
    lines: list[str] = []
    try:
        code = run_worker(f"127.0.0.1:{bouncer.port}", authkey=KEY_BYTES, slots=1,
                          log=lines.append, handshake_patience=1.5)
    finally:
        bouncer.close()
    assert code == 1
    assert bouncer.accepted >= 2  # it did try again
    assert lines[-1].startswith(f"error: gave up joining the master at 127.0.0.1:"
                                f"{bouncer.port}: it accepted {bouncer.accepted} connections")
    assert "dropped each during the authkey handshake (the last one closed before its " \
        "challenge)" in lines[-1]


def test_worker_does_not_retry_a_peer_that_is_not_a_master() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def banner() -> None:
            sock, _ = server.accept()
            sock.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            time.sleep(1)
            sock.close()

        thread = threading.Thread(target=banner, daemon=True)
        thread.start()
        with pytest.raises(ConfigError, match=r"did not complete blockproc's authkey "
                                              r"handshake .*is a blockproc master listening"):
            connect("127.0.0.1", port, KEY_BYTES)
        thread.join(timeout=5)


# -- the whole thing: a flood while a worker joins and a job runs -------------------------


class Flood(threading.Thread):
    """Connections that never authenticate, from ``hosts``, ``per_host`` of them kept up
    at once from each (reopened when the master drops them, at most ``rate`` new ones a
    second): a third silent, the rest sending garbage or unauthenticated pickles. Stops by
    itself after ``limit`` connections or ``seconds``, or at :meth:`stop`."""

    def __init__(self, port: int, hosts: list[str], marker: Path, *, per_host: int = 40,
                 rate: float = 400, limit: int = 8000, seconds: float = 60) -> None:
        super().__init__(daemon=True)
        self.port, self.hosts, self.per_host = port, hosts, per_host
        self.rate, self.limit, self.seconds = rate, limit, seconds
        self.payloads = [b"", GARBAGE, pickle_frame(marker), os.urandom(64)]
        self.opened: Counter[str] = Counter()
        self.dropped = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    @property
    def total(self) -> int:
        return sum(self.opened.values())

    def _turns(self, live: Counter[str], allowed: int) -> Iterator[str]:
        """Hosts to open a connection from, round robin, within the budget."""
        more = True
        while more:
            more = False
            for host in self.hosts:
                if live[host] < self.per_host and self.total < allowed:
                    more = True
                    yield host

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        live: Counter[str] = Counter()
        began = time.monotonic()
        try:
            while not self._halt.is_set() and time.monotonic() - began < self.seconds:
                allowed = min(self.limit, int(self.rate * (time.monotonic() - began)) + 50)
                for host in self._turns(live, allowed):
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.bind((host, 0))
                    sock.connect_ex(("127.0.0.1", self.port))
                    payload = self.payloads[self.total % len(self.payloads)]
                    selector.register(sock, selectors.EVENT_READ, [sock, host, payload])
                    live[host] += 1
                    self.opened[host] += 1
                for key, _ in selector.select(0.02):
                    sock, host, payload = key.data
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data and payload:  # the challenge came: answer with rubbish
                        with contextlib.suppress(OSError):
                            sock.send(payload)
                        key.data[2] = b""
                    elif not data:
                        selector.unregister(sock)
                        sock.close()
                        live[host] -= 1
                        self.dropped += 1
                if self.total >= self.limit:
                    break
        finally:
            for key in list(selector.get_map().values()):
                key.data[0].close()
            selector.close()


@pytest.mark.parametrize("hosts", [HOSTS[:1], HOSTS], ids=["one-address", "nine-addresses"])
def test_master_stays_joinable_under_a_flood(
        spawn: Callable[[list[str]], Proc], work: Path, hosts: list[str]) -> None:
    """The worker connects from 127.0.0.1, which floods too."""
    master, port = start_master(spawn, "slow")
    marker = work / "unpickled"
    flood = Flood(port, hosts, marker)
    flood.start()
    try:
        deadline = time.monotonic() + 30
        while flood.total < 500:
            assert flood.is_alive() and time.monotonic() < deadline, flood.opened
            time.sleep(0.02)
        began = time.monotonic()
        worker = spawn(["worker", "--connect", f"127.0.0.1:{port}", "--slots", "1", "--once"])
        master.expect(rf"worker \S+:{worker.pid} \(127\.0\.0\.1:\d+\) joined", timeout=60)
        joined_after = time.monotonic() - began
        during = flood.total
        assert flood.is_alive(), "the flood ended before the worker joined"
        assert master.wait(timeout=90) == 0, master.stderr
        opened, dropped = flood.total, flood.dropped
        assert worker.wait() == 0, worker.stderr
    finally:
        flood.stop()
    assert read_parts(str(work / "out")) == DATA.upper()
    assert set(flood.opened) == set(hosts), flood.opened
    assert flood.dropped > 0  # the master did drop them
    assert not marker.exists()
    log = master.stderr
    assert "authkey does not match" not in log
    # named as what they are, one by one or in the summary of an address
    assert re.search(r"garbage on the cluster port from 127\.0\.0\.|\d+ garbage", log)
    assert re.search(r"unauthenticated pickle on the cluster port from 127\.0\.0\.|"
                     r"\d+ unauthenticated pickles", log)
    assert "more connections from 127.0.0." in log  # the rest were summarised
    noise = [line for line in master.lines if "127.0.0." in line]
    assert len(noise) < opened / 4, f"{len(noise)} log lines for {opened} connections"
    retries = worker.stderr.count("dropped the connection during the authkey handshake")
    print(f"\nflood: {opened} connections from {len(flood.opened)} address(es) while the job "
          f"ran ({during} by the time the worker joined; {dropped} dropped by the master); "
          f"the worker joined {joined_after:.2f}s after it started (retry messages: "
          f"{retries}); the job completed; {len(noise)} master log lines about the flood")
