"""Transport of the ``cluster`` executor: addresses, authkeys and the HMAC handshake.

The master and each worker talk over one TCP connection, framed and pickled by
:class:`multiprocessing.connection.Connection`. Before anything is unpickled, both sides
prove that they hold the shared authkey with an HMAC-SHA256 challenge in both directions
(the scheme of ``multiprocessing.connection``'s ``deliver_challenge``/``answer_challenge``,
with a role in each MAC): the master checks the worker, then the worker checks the
master. The connection is authenticated, not encrypted.

The master's side runs in :class:`Gate`, one thread for every connection that has not
authenticated yet: each has a deadline, each source address may hold only a few of them
at once, and a new connection drops the oldest unauthenticated one when a cap is reached,
so idle, garbage or unauthenticated connections (a port scanner, a load-balancer probe,
a flood) cannot lock workers out. What such peers send is logged as what it is, and
never unpickled. A worker whose connection was dropped before the handshake finished
tries again with backoff.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import selectors
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection
from pathlib import Path

from blockproc.errors import ConfigError

PROTOCOL = 2
"""Bumped when the messages between master and workers change."""

AUTHKEY_ENV = "BLOCKPROC_AUTHKEY"
MIN_AUTHKEY_LENGTH = 16
HANDSHAKE_TIMEOUT = 10.0
"""Seconds a connection may take to prove the key (both sides give up after it)."""
PING_INTERVAL = 1.0
"""Seconds between the keep-alive messages each side sends when it has nothing to say."""
HEARTBEAT_TIMEOUT = 15.0
"""A peer silent for this long is taken as lost (a network cut sends no FIN)."""

KEYGEN_HINT = "python -c 'import secrets; print(secrets.token_hex(32))'"


def parse_address(text: str, *, option: str) -> tuple[str, int]:
    """Return ``(host, port)`` from ``HOST:PORT`` (``[::1]:7077`` for IPv6).

    Examples
    --------
    >>> parse_address("0.0.0.0:7077", option="listen")
    ('0.0.0.0', 7077)
    >>> parse_address("[::1]:0", option="listen")
    ('::1', 0)
    """
    if not isinstance(text, str):
        raise TypeError(f"{option} must be a str like '127.0.0.1:7077', got {text!r}")
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"{option} must look like HOST:PORT (e.g. 127.0.0.1:7077, 0.0.0.0:7077 for every "
            f"interface, or port 0 for a free one), got {text!r}"
        )
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """Return ``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_authkey(key: str | bytes, *, source: str) -> bytes:
    """Return ``key`` as bytes, refusing keys too short to resist guessing."""
    if isinstance(key, str):
        key = key.strip().encode()
    elif isinstance(key, bytes):
        key = key.strip()
    else:
        raise TypeError(f"the authkey must be a str or bytes, got {type(key).__name__}")
    if len(key) < MIN_AUTHKEY_LENGTH:
        raise ConfigError(
            f"the authkey from {source} has {len(key)} characters; use at least "
            f"{MIN_AUTHKEY_LENGTH}, e.g. one made by: {KEYGEN_HINT}"
        )
    return key


def read_authkey_file(path: str | os.PathLike[str]) -> bytes:
    """Return the key stored in ``path`` (surrounding whitespace ignored)."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the authkey file {os.fspath(path)!r}: {exc}") from None
    return check_authkey(data, source=f"file {os.fspath(path)!r}")


def env_authkey() -> bytes | None:
    """Return the key in ``$BLOCKPROC_AUTHKEY``, or None if it is unset or empty."""
    value = os.environ.get(AUTHKEY_ENV, "")
    return check_authkey(value, source=f"${AUTHKEY_ENV}") if value.strip() else None


def generate_authkey() -> bytes:
    """Return a new random key: 32 hex digits (128 bits)."""
    return secrets.token_hex(16).encode()


@dataclass
class Link:
    """One authenticated-or-not TCP connection: the socket and its pickling Connection."""

    sock: socket.socket
    conn: Connection
    peer: str
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def wrap(cls, sock: socket.socket, peer: str) -> Link:
        """Make a blocking, keep-alive, no-delay connection out of ``sock``."""
        sock.settimeout(None)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, Connection(os.dup(sock.fileno())), peer)

    def shutdown(self) -> None:
        """Stop all traffic at once (wakes a thread blocked reading)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close both handles; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.shutdown()
        with contextlib.suppress(OSError):
            self.conn.close()
        with contextlib.suppress(OSError):
            self.sock.close()


# -- the handshake ----------------------------------------------------------------------
#
# Three frames, each a 4-byte big-endian length and a payload (the framing of
# multiprocessing's ``Connection.send_bytes``, so a Connection carries on afterwards):
#
#   master -> worker   #CHALLENGE#blockproc/2 + the master's nonce (32 random bytes)
#   worker -> master   #ANSWER# + HMAC-SHA256(key, "worker" + master's nonce) + the worker's
#                      nonce
#   master -> worker   #WELCOME# + HMAC-SHA256(key, "master" + worker's nonce), or #FAILURE#
#
# The master reads exactly the size of a correct answer and nothing beyond it, so what a
# peer sends before it has proved the key is never unpickled, nor buffered past 84 bytes.
# The roles in the MACs keep a peer from replaying one side's proof as the other's.

NONCE_SIZE = 32
_MAC_SIZE = 32
CHALLENGE = b"#CHALLENGE#blockproc/2 "
ANSWER = b"#ANSWER#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"
ANSWER_SIZE = len(ANSWER) + _MAC_SIZE + NONCE_SIZE
_ANSWER_HEAD = ANSWER_SIZE.to_bytes(4, "big") + ANSWER
_LIMIT = 256
"""The largest frame either side reads during the handshake."""


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _mac(key: bytes, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, role + nonce, hashlib.sha256).digest()


class HandshakeDropped(ConnectionError):
    """The connection closed or stalled before the handshake finished; worth another try
    (a master under a flood drops its oldest unauthenticated connections)."""


class NotAMaster(ConnectionError):
    """The peer answered, but not with blockproc's handshake."""


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(remaining)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the connection closed")
        data += chunk
    return bytes(data)


def _recv_frame(sock: socket.socket, deadline: float) -> bytes:
    header = _recv_exact(sock, 4, deadline)
    size = int.from_bytes(header, "big", signed=True)
    if not 0 <= size <= _LIMIT:
        raise NotAMaster(f"it sent {header!r}, not a handshake frame")
    return _recv_exact(sock, size, deadline)


def client_handshake(sock: socket.socket, key: bytes, *,
                     timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """Prove the key to the master on ``sock`` and check that the master holds it too.

    Raises HandshakeDropped when the connection closes or stalls before the end,
    NotAMaster when the peer does not speak this handshake, and AuthenticationError
    (``"rejected"`` in its text when the master refused the key) otherwise.
    """
    deadline = time.monotonic() + timeout
    step = "before its challenge"
    try:
        challenge = _recv_frame(sock, deadline)
        if not challenge.startswith(CHALLENGE) or len(challenge) != len(CHALLENGE) + NONCE_SIZE:
            if challenge.startswith(b"#CHALLENGE#"):
                raise NotAMaster("it speaks another version of blockproc's handshake; install "
                                 "the same blockproc version on both sides")
            raise NotAMaster(f"it sent {challenge[:24]!r}")
        ours = os.urandom(NONCE_SIZE)
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(_frame(ANSWER + _mac(key, b"worker", challenge[len(CHALLENGE):]) + ours))
        step = "before it answered this worker's proof"
        reply = _recv_frame(sock, deadline)
    except EOFError:
        raise HandshakeDropped(f"closed {step}") from None
    except (ConnectionResetError, BrokenPipeError):
        raise HandshakeDropped(f"reset {step}") from None
    except TimeoutError:
        raise HandshakeDropped(f"silent {step} for {timeout:g}s") from None
    if reply == FAILURE:
        raise AuthenticationError("digest sent was rejected")
    if not reply.startswith(WELCOME) or not hmac.compare_digest(
            reply[len(WELCOME):], _mac(key, b"master", ours)):
        raise AuthenticationError("the master's proof of the key is wrong")


def connect(host: str, port: int, key: bytes, *, timeout: float = HANDSHAKE_TIMEOUT) -> Link:
    """Connect to a master and authenticate both ways.

    Raises OSError when nothing listens there, HandshakeDropped (an OSError too) when the
    master closed the connection before the handshake ended (the caller may retry both),
    and ConfigError when the master refuses the key, fails the check itself, or is not a
    blockproc master.
    """
    where = format_address(host, port)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        client_handshake(sock, key, timeout=timeout)
    except AuthenticationError as exc:
        sock.close()
        if "rejected" in str(exc):
            raise ConfigError(
                f"the master at {where} refused this worker: its authkey does not match the "
                f"master's. Start the worker with the key the master printed, in "
                f"${AUTHKEY_ENV} or --authkey-file FILE"
            ) from None
        raise ConfigError(
            f"{where} failed the authkey check ({exc}): it does not hold this worker's key, "
            f"so it is not the master you meant; nothing was accepted from it"
        ) from None
    except NotAMaster as exc:
        sock.close()
        raise ConfigError(
            f"{where} accepted the connection but did not complete blockproc's authkey "
            f"handshake ({exc}); is a blockproc master listening there?"
        ) from None
    except HandshakeDropped:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise HandshakeDropped(f"failed: {exc}") from None
    return Link.wrap(sock, where)


# -- the master's door ------------------------------------------------------------------

MAX_UNAUTHENTICATED_PER_ADDRESS = 16
"""Connections from one source address that may be authenticating at once; a new one
drops the oldest of them."""
MAX_UNAUTHENTICATED = 128
"""Connections that may be authenticating at once in all; a new one drops the oldest
connection of the address that holds the most."""
LOG_BURST = 5
LOG_WINDOW = 10.0
"""Each source address gets ``LOG_BURST`` log lines per ``LOG_WINDOW`` seconds about
connections that failed to authenticate; the rest are counted in one summary line."""

_KINDS = {
    "closed": "closed before the handshake",
    "idle": "silent past the deadline",
    "evicted": "dropped for newer ones",
    "garbage": "garbage",
    "pickle": "unauthenticated pickles",
    "version": "another handshake",
    "wrong key": "wrong authkey",
}


@dataclass(eq=False)
class _Caller:
    """A connection that has not proved the key yet: a socket and a few bytes."""

    sock: socket.socket
    host: str
    peer: str
    deadline: float
    nonce: bytes
    data: bytearray = field(default_factory=bytearray)


class _QuietLog:
    """Log the first ``LOG_BURST`` failures per source address in each window, and count
    the rest into one summary line per address, so a flood cannot flood the log too."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._since = time.monotonic()
        self._lines: Counter[str] = Counter()
        self._held: dict[str, Counter[str]] = {}

    def __call__(self, host: str, kind: str, line: str) -> None:
        if self._lines[host] < LOG_BURST:
            self._lines[host] += 1
            self._log(line)
        else:
            self._held.setdefault(host, Counter())[kind] += 1

    def flush(self, now: float, *, final: bool = False) -> None:
        if not final and now - self._since < LOG_WINDOW:
            return
        for host, kinds in self._held.items():
            detail = ", ".join(f"{count} {_KINDS[kind]}" for kind, count in kinds.most_common())
            self._log(f"{sum(kinds.values())} more connections from {host} failed to "
                      f"authenticate in the last {now - self._since:.0f}s ({detail})")
        self._since = now
        self._lines.clear()
        self._held.clear()


def _judge(data: bytes) -> str:
    """Name what a peer sent instead of a correct answer."""
    if not data:
        return "closed"
    if data[:1] == b"\x80":  # a raw pickle (a framed message starts with its length)
        return "pickle"
    # before a framed pickle: multiprocessing's answer_challenge, an MD5 (which begins
    # with 0x80, as a pickle does, once in 256) or a {digest} reply
    if len(data) >= 4 and (int.from_bytes(data[:4], "big") == 16 or data[4:5] == b"{"):
        return "version"
    if data[4:5] == b"\x80":  # a framed pickle
        return "pickle"
    return "garbage"


def _looks_like(data: bytes) -> str:
    """Name a few usual strangers on a port: ``"an HTTP request: "`` or ``""``."""
    if data[:2] == b"\x16\x03":
        return "a TLS handshake: "
    if data.split(b" ", 1)[0] in (b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"CONNECT"):
        return "an HTTP request: "
    if data.startswith(b"SSH-"):
        return "an SSH client: "
    return ""


class Gate:
    """The master's door: accept connections and authenticate them, all in one thread.

    Until a peer proves the key it costs the master one socket and a few bytes, for at
    most ``timeout`` seconds. At most ``per_address`` such connections per source address,
    and ``total`` in all, wait at once: a new one drops the oldest of its address (or of
    the address with the most), so idle or garbage connections can delay a worker's
    handshake but never lock it out. Authenticated connections are handed to ``admit``
    and never dropped here.
    """

    def __init__(self, server: socket.socket, key: bytes, *, admit: Callable[[Link], None],
                 log: Callable[[str], None], timeout: float = HANDSHAKE_TIMEOUT,
                 per_address: int = MAX_UNAUTHENTICATED_PER_ADDRESS,
                 total: int = MAX_UNAUTHENTICATED) -> None:
        self._server = server
        self._key = key
        self._admit = admit
        self._log = log
        self._quiet = _QuietLog(log)
        self._timeout = timeout
        self._per_address = per_address
        self._total = total
        self._callers: dict[socket.socket, _Caller] = {}  # oldest first
        self._by_host: dict[str, dict[_Caller, None]] = {}
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self.counts: Counter[str] = Counter()
        """How many connections ended how: ``joined`` and the kinds above."""
        self.refusals: list[str] = []
        """The first wrong-key refusals, one line each."""

    def stop(self) -> None:
        """Make :meth:`serve` return within a fraction of a second."""
        self._stop.set()

    def serve(self) -> None:
        """Accept and authenticate until :meth:`stop`; then close what is still waiting."""
        self._server.setblocking(False)
        self._selector.register(self._server, selectors.EVENT_READ)
        out_of_files = False
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                wait_for = 0.2
                if self._callers:
                    oldest = next(iter(self._callers.values()))
                    wait_for = min(wait_for, max(0.0, oldest.deadline - now))
                for ready, _ in self._selector.select(wait_for):
                    try:
                        if ready.fileobj is self._server:
                            out_of_files = self._accept() or out_of_files
                        elif self._callers.get(ready.fileobj) is ready.data:  # type: ignore[call-overload]
                            self._read(ready.data)  # (not dropped by an earlier event)
                    except Exception as exc:  # a bug here must not close the door for good
                        self._log(f"error in the cluster port's handshake loop (it goes on): "
                                  f"{exc!r}")
                        if isinstance(ready.data, _Caller) and ready.data.sock in self._callers:
                            self._drop(ready.data, "closed", "")
                now = time.monotonic()
                while self._callers:
                    caller = next(iter(self._callers.values()))
                    if caller.deadline > now:
                        break
                    self._drop(caller, "idle", f"no handshake within {self._timeout:g}s")
                if out_of_files:
                    out_of_files = False
                    time.sleep(0.05)
                self._quiet.flush(now)
        finally:
            for caller in list(self._callers.values()):
                self._forget(caller)
                caller.sock.close()
            self._selector.close()
            self._quiet.flush(time.monotonic(), final=True)

    def _accept(self) -> bool:
        """Accept what is waiting; return True when out of file descriptors."""
        for _ in range(64):  # then serve the callers that answered meanwhile
            try:
                sock, address = self._server.accept()
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if self._callers:  # make room: the oldest unauthenticated goes
                        busiest = max(self._by_host.values(), key=len)
                        self._drop(next(iter(busiest)), "evicted", "out of file descriptors")
                    return True
                return False
            host, port = str(address[0]), int(address[1])
            self._welcome(sock, host, format_address(host, port))
        return False

    def _welcome(self, sock: socket.socket, host: str, peer: str) -> None:
        same = self._by_host.get(host)
        if same is not None and len(same) >= self._per_address:
            self._drop(next(iter(same)), "evicted",
                       f"more than {self._per_address} from {host} at once")
        elif len(self._callers) >= self._total:
            busiest = max(self._by_host.values(), key=len)
            self._drop(next(iter(busiest)), "evicted",
                       f"more than {self._total} unauthenticated connections at once")
        nonce = os.urandom(NONCE_SIZE)
        frame = _frame(CHALLENGE + nonce)
        try:
            sock.setblocking(False)
            sent = sock.send(frame)
        except OSError:
            sent = 0
        caller = _Caller(sock, host, peer, time.monotonic() + self._timeout, nonce)
        if sent != len(frame):
            self.counts["closed"] += 1
            self._quiet(host, "closed", f"connection from {peer} closed before the handshake")
            sock.close()
            return
        self._callers[sock] = caller
        self._by_host.setdefault(host, {})[caller] = None
        self._selector.register(sock, selectors.EVENT_READ, caller)

    def _read(self, caller: _Caller) -> None:
        try:
            chunk = caller.sock.recv(4 + ANSWER_SIZE - len(caller.data))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        caller.data += chunk
        data = bytes(caller.data)
        valid = data[:len(_ANSWER_HEAD)] == _ANSWER_HEAD[:len(data)]
        if not chunk or not valid:
            self._drop(caller, "closed" if valid else _judge(data), "")
            return
        if len(data) == 4 + ANSWER_SIZE:
            self._judge_answer(caller, data[4 + len(ANSWER):])

    def _judge_answer(self, caller: _Caller, answer: bytes) -> None:
        proof, theirs = answer[:_MAC_SIZE], answer[_MAC_SIZE:]
        if not hmac.compare_digest(proof, _mac(self._key, b"worker", caller.nonce)):
            with contextlib.suppress(OSError):
                caller.sock.send(_frame(FAILURE))
            line = (f"refused a worker from {caller.peer}: its authkey does not match this "
                    f"master's; it got no task")
            if len(self.refusals) < 100:
                self.refusals.append(line)
            self._drop(caller, "wrong key", "", line=line)
            return
        frame = _frame(WELCOME + _mac(self._key, b"master", theirs))
        self._forget(caller)
        try:
            if caller.sock.send(frame) != len(frame):
                raise OSError("the welcome did not fit")
        except OSError:
            caller.sock.close()
            return
        self.counts["joined"] += 1
        self._admit(Link.wrap(caller.sock, caller.peer))

    def _forget(self, caller: _Caller) -> None:
        del self._callers[caller.sock]
        same = self._by_host[caller.host]
        del same[caller]
        if not same:
            del self._by_host[caller.host]
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(caller.sock)

    def _drop(self, caller: _Caller, kind: str, why: str, *, line: str = "") -> None:
        self._forget(caller)
        caller.sock.close()
        self.counts[kind] += 1
        peer = caller.peer
        if not line:
            data = bytes(caller.data[:24])
            line = {
                "closed": f"connection from {peer} closed before the handshake",
                "idle": f"dropped a connection from {peer}: {why}",
                "evicted": f"dropped an unauthenticated connection from {peer}: {why}",
                "garbage": f"garbage on the cluster port from {peer} "
                           f"({_looks_like(data)}{data!r}): not blockproc's handshake; "
                           f"dropped",
                "pickle": f"unauthenticated pickle on the cluster port from {peer}: dropped "
                          f"without unpickling it",
                "version": f"a peer at {peer} answered with another handshake (another "
                           f"blockproc version, or multiprocessing's): dropped; install the "
                           f"same blockproc version on both sides",
            }[kind]
        self._quiet(caller.host, kind, line)


def python_version() -> str:
    """Return ``3.11``-style major.minor: cloudpickle needs the same on both sides."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"
