"""Deterministic, seeded, fast generators of sample input files.

``access_log`` writes a web server access log in the Apache *combined* format, one request
a line (shown folded here)::

    203.0.113.7 - - [27/Nov/2026:00:00:01 +0000] "GET /api/v1/items/123 HTTP/1.1" 200 5123
    "-" "Mozilla/5.0 (X11; Linux x86_64)"

It has 1000 client IPs (a few much busier than the rest), timestamps that never go back,
from 27/Nov/2026 00:00:00 UTC at about three requests a second, mostly ``GET`` with some
``POST``, ``PUT``, ``DELETE`` and ``HEAD``, 29 paths (19 end in a numeric id), statuses
mostly 200 with 301, 304, 404 and about 2 % 500/502/503, response sizes 0-200000, and a
handful of referers and user agents. The same seed gives the same bytes (for a given numpy
version), and a smaller file is a prefix of a larger one with the same seed.

Each chunk of lines is built as a fixed-width byte matrix in numpy (fields copied from
pre-formatted pools or written as digits, NUL-padded, NULs dropped at the end), so a 256 MiB
file takes about a second. Files are written atomically. Command line::

    python -m blockproc.datasets access-log --size 256MiB -o access.log [--seed N]
"""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from blockproc._units import parse_size

__all__ = ["access_log", "main"]

_CHUNK_LINES = 16384  # lines per numpy chunk: a few MiB of buffer, independent of size
_START = date(2026, 11, 27)
_MONTHS = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
           b"Nov", b"Dec"]
_METHODS = {b"GET": 86.0, b"POST": 8.0, b"PUT": 3.0, b"DELETE": 1.5, b"HEAD": 1.5}
_STATUSES = {b"200": 86.0, b"301": 3.0, b"304": 5.0, b"404": 4.0, b"500": 1.0, b"502": 0.5,
             b"503": 0.5}
_ID_PATHS = [f"/api/{v}/{r}/" for v in ("v1", "v2") for r in
             ("items", "users", "orders", "carts", "reviews", "invoices", "sessions")]
_ID_PATHS += ["/products/", "/blog/posts/", "/docs/page/", "/search?page=", "/images/thumb/"]
_PLAIN_PATHS = ["/", "/index.html", "/login", "/logout", "/cart", "/static/app.js",
                "/static/style.css", "/favicon.ico", "/robots.txt", "/healthz"]
_REFERERS = {b"-": 80.0, b"https://www.example.com/": 10.0, b"https://www.google.com/": 6.0,
             b"https://news.example.org/story/42": 4.0}
_AGENTS = {b"Mozilla/5.0 (X11; Linux x86_64)": 20.0,
           b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
           b" Chrome/131.0 Safari/537.36": 40.0,
           b"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like"
           b" Gecko) Version/18.0 Safari/605.1.15": 20.0,
           b"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15": 10.0,
           b"curl/8.10.1": 5.0, b"Googlebot/2.1 (+http://www.google.com/bot.html)": 5.0}


def _cdf(weights: Sequence[float] | NDArray[np.floating]) -> NDArray[np.float64]:
    """Return the cumulative distribution of ``weights``, for ``_pick``."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    return np.asarray(cdf / cdf[-1], dtype=np.float64)


def _pick(rng: np.random.Generator, cdf: NDArray[np.float64], n: int) -> NDArray[np.intp]:
    """Draw ``n`` indices distributed as ``cdf`` (stable across numpy versions)."""
    return np.searchsorted(cdf, rng.random(n), side="right")


def _digits(values: NDArray[np.int64], width: int, *, zeros: bool = False) -> NDArray[np.uint8]:
    """Return ASCII digits of ``values`` in ``width`` columns, leading zeros as NUL bytes."""
    places = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (values[:, None] // places % 10 + ord("0")).astype(np.uint8)
    if not zeros:
        lead = values[:, None] < places
        lead[:, -1] = False  # 0 is written "0"
        digits[lead] = 0
    return digits


def _pool(items: Sequence[bytes]) -> NDArray[np.bytes_]:
    """Return ``items`` as a NUL-padded fixed-width bytes array."""
    return np.array(items, dtype=f"S{max(map(len, items))}")


def _access_log_chunks(rng: np.random.Generator) -> Iterator[NDArray[np.uint8]]:
    """Yield chunks of whole access log lines as uint8 arrays, without end."""
    draws = rng.integers(0x0B000000, 0xDF000000, 1100, dtype=np.int64)  # 11.0.0.0-222.x
    draws[draws >> 24 == 127] += 1 << 24  # no loopback clients
    addrs = draws[np.sort(np.unique(draws, return_index=True)[1])[:1000]].tolist()
    ip_pool = _pool([".".join(str(a >> s & 255) for s in (24, 16, 8, 0)).encode() for a in addrs])
    ip_cdf = _cdf(1.0 / (np.arange(len(addrs)) + 5.0))  # a few busy clients, a long tail
    paths = [p.encode() for p in _ID_PATHS + _PLAIN_PATHS]
    req_pool = _pool([m + b" " + p for m in _METHODS for p in paths])
    no_id = np.array([i >= len(_ID_PATHS) for _ in _METHODS for i in range(len(paths))])
    empty = np.array([m == b"HEAD" for m in _METHODS for _ in paths])
    method_cdf = _cdf(list(_METHODS.values()))
    path_cdf = _cdf([3.0] * len(_ID_PATHS) + [1.0] * len(_PLAIN_PATHS))
    status_pool, status_cdf = _pool(list(_STATUSES)), _cdf(list(_STATUSES.values()))
    ua_pool = _pool([b'"%s" "%s"\n' % (r, a) for r in _REFERERS for a in _AGENTS])
    ua_cdf = _cdf(np.outer(list(_REFERERS.values()), list(_AGENTS.values())).ravel())
    parts: list[bytes | int] = [ip_pool.itemsize, b" - - [", 11, b":", 8, b' +0000] "',
                                req_pool.itemsize, 5, b' HTTP/1.1" ', 3, b" ", 6, b" ",
                                ua_pool.itemsize]
    row, slots = bytearray(), []
    for part in parts:  # constant bytes once; NUL placeholders for the fields
        if isinstance(part, int):
            slots.append(slice(len(row), len(row) + part))
        row += bytes(part)
    sec = np.arange(86400, dtype=np.int64)
    clock = np.full((86400, 8), ord(":"), dtype=np.uint8)  # HH:MM:SS of every second of a day
    clock[:, [0, 1, 3, 4, 6, 7]] = _digits(sec // 3600 * 10000 + sec // 60 % 60 * 100 + sec % 60,
                                           6, zeros=True)
    n, now = _CHUNK_LINES, 0
    buf = np.tile(np.frombuffer(bytes(row), dtype=np.uint8), (n, 1))
    s_ip, s_day, s_clock, s_req, s_id, s_status, s_bytes, s_ua = slots
    while True:
        seconds = now + np.cumsum(rng.poisson(0.3, n))
        now = int(seconds[-1])
        ip, status, ua = _pick(rng, ip_cdf, n), _pick(rng, status_cdf, n), _pick(rng, ua_cdf, n)
        req = _pick(rng, method_cdf, n) * len(paths) + _pick(rng, path_cdf, n)
        ids = (100000.0 ** rng.random(n)).astype(np.int64)  # 1..99999, small ids commoner
        size = np.minimum(rng.lognormal(7.5, 1.6, n), 200000).astype(np.int64)
        size[empty[req] | (status_pool[status] == b"304")] = 0
        day = seconds // 86400
        days = [_START + timedelta(days=d) for d in range(int(day[0]), int(day[-1]) + 1)]
        day_pool = _pool([b"%02d/%s/%d" % (d.day, _MONTHS[d.month - 1], d.year) for d in days])
        buf[:, s_ip] = ip_pool[ip].view(np.uint8).reshape(n, -1)
        buf[:, s_day] = day_pool[day - day[0]].view(np.uint8).reshape(n, -1)
        buf[:, s_clock] = clock[seconds % 86400]
        buf[:, s_req] = req_pool[req].view(np.uint8).reshape(n, -1)
        buf[:, s_id] = _digits(ids, 5)
        buf[no_id[req], s_id] = 0
        buf[:, s_status] = status_pool[status].view(np.uint8).reshape(n, -1)
        buf[:, s_bytes] = _digits(size, 6)
        buf[:, s_ua] = ua_pool[ua].view(np.uint8).reshape(n, -1)
        yield buf[buf != 0]


def access_log(path: str | os.PathLike[str], size: int, *, seed: int = 0) -> int:
    """Write a synthetic Apache combined-format access log of about ``size`` bytes.

    Parameters
    ----------
    path : str or os.PathLike
        File to write. It is written under a temporary name in the same directory and
        renamed into place, so a failed run never leaves a partial file at ``path``.
    size : int
        Target size in bytes. Writing stops at the first line end at or after ``size``
        (lines are never cut); ``0`` writes an empty file.
    seed : int, default 0
        Seed of the random generator: the same seed gives the same bytes.

    Returns
    -------
    int
        Number of bytes written.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "access.log"
    >>> n = access_log(out, 10_000, seed=1)
    >>> n >= 10_000, out.stat().st_size == n
    (True, True)
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be an int >= 0 bytes, got {size!r}")
    return _write_atomic(Path(path), _access_log_chunks(np.random.default_rng(seed)), size)


def _write_atomic(path: Path, chunks: Iterator[NDArray[np.uint8]], size: int) -> int:
    """Write ``chunks`` to ``path`` up to the first line end at or after ``size``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    written = 0
    try:
        with open(tmp, "xb") as f:
            while written < size:
                chunk = next(chunks)
                if written + len(chunk) >= size:  # stop after the line holding byte size-1
                    last = size - written - 1
                    chunk = chunk[: last + 1 + int(np.argmax(chunk[last:] == ord("\n")))]
                f.write(chunk.data)
                written += len(chunk)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def _size_arg(text: str) -> int:
    """Parse a ``--size`` value such as ``256MiB``, with argparse's error type."""
    try:
        return parse_size(text)
    except ValueError as exc:  # ConfigError is a ValueError
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dataset generator command line and return its exit status.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "access.log"
    >>> main(["access-log", "--size", "1KiB", "-o", str(out)])  # doctest: +ELLIPSIS
    wrote ... bytes to ...access.log
    0
    """
    parser = argparse.ArgumentParser(prog="python -m blockproc.datasets",
                                     description="Write a deterministic sample input file.")
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    log = sub.add_parser("access-log", help="Apache combined-format web access log")
    log.add_argument("--size", type=_size_arg, required=True,
                     help="approximate size: 123, 100KB (10**3), 64MB (10**6), 256MiB, 1GiB")
    log.add_argument("-o", "--output", required=True, help="file to write")
    log.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    written = access_log(args.output, args.size, seed=args.seed)
    print(f"wrote {written} bytes to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
