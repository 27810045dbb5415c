"""Transport of the ``cluster`` executor: addresses, authkeys and the HMAC handshake.

The master and each worker talk over one TCP connection, framed and pickled by
:class:`multiprocessing.connection.Connection`. Before anything is unpickled, both sides
prove that they hold the shared authkey with the standard library's HMAC challenge (the
``deliver_challenge``/``answer_challenge`` pair that ``multiprocessing.connection``'s
``Listener`` and ``Client`` run), in both directions: the master checks the worker, then
the worker checks the master. The connection is authenticated, not encrypted.

The handshake runs under a deadline, so a peer that connects and then stays silent (a
port scanner, a load-balancer probe) cannot hold the master's accept loop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from pathlib import Path

from blockproc.errors import ConfigError

PROTOCOL = 1
"""Bumped when the messages between master and workers change."""

AUTHKEY_ENV = "BLOCKPROC_AUTHKEY"
MIN_AUTHKEY_LENGTH = 16
HANDSHAKE_TIMEOUT = 10.0
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


class HandshakeTimeout(TimeoutError):
    """The peer did not finish the authkey challenge in time."""


def handshake(link: Link, key: bytes, *, server: bool,
              timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """Run the mutual HMAC challenge on ``link``; raise AuthenticationError on a wrong key.

    Only fixed-size byte strings are exchanged here; nothing is unpickled.
    """
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        link.shutdown()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        if server:
            deliver_challenge(link.conn, key)
            answer_challenge(link.conn, key)
        else:
            answer_challenge(link.conn, key)
            deliver_challenge(link.conn, key)
    except (OSError, EOFError, AssertionError) as exc:
        if expired.is_set():
            raise HandshakeTimeout(f"no answer to the authkey challenge within {timeout:g}s") \
                from None
        if isinstance(exc, AssertionError):  # answer_challenge's check of the greeting
            raise OSError("the peer does not speak the authkey protocol") from None
        raise
    finally:
        timer.cancel()


def connect(host: str, port: int, key: bytes, *, timeout: float = HANDSHAKE_TIMEOUT) -> Link:
    """Connect to a master and authenticate both ways.

    Raises OSError when nothing listens there (the caller may retry) and ConfigError when
    the master refuses the key or fails the check itself.
    """
    where = format_address(host, port)
    sock = socket.create_connection((host, port), timeout=timeout)
    link = Link.wrap(sock, where)
    try:
        handshake(link, key, server=False, timeout=timeout)
    except AuthenticationError as exc:
        link.close()
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
    except (OSError, EOFError) as exc:
        link.close()
        raise ConfigError(
            f"{where} accepted the connection but did not complete blockproc's authkey "
            f"handshake ({type(exc).__name__}: {exc}); is a blockproc master listening there?"
        ) from None
    return link


def python_version() -> str:
    """Return ``3.11``-style major.minor: cloudpickle needs the same on both sides."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"
