"""Text datasets: the web access log, the reviews CSV and the JSON lines events."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import date
from typing import Any

import numpy as np
from numpy.typing import NDArray

from blockproc.datasets._base import (
    MONTHS,
    cdf,
    cells,
    check_size,
    clock,
    days,
    digits,
    iso_day,
    layout,
    pick,
    pool,
    quoted_line_end,
    write_atomic,
)

CHUNK_ROWS = 16384  # rows per numpy chunk: a few MiB of buffer, independent of size

# --- web access log -------------------------------------------------------------------

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


def _clf_day(d: date) -> bytes:
    return b"%02d/%s/%d" % (d.day, MONTHS[d.month - 1], d.year)


def _access_log_chunks(rng: np.random.Generator) -> Iterator[NDArray[np.uint8]]:
    """Yield chunks of whole access log lines as uint8 arrays, without end."""
    draws = rng.integers(0x0B000000, 0xDF000000, 1100, dtype=np.int64)  # 11.0.0.0-222.x
    draws[draws >> 24 == 127] += 1 << 24  # no loopback clients
    addrs = draws[np.sort(np.unique(draws, return_index=True)[1])[:1000]].tolist()
    ip_pool = pool([".".join(str(a >> s & 255) for s in (24, 16, 8, 0)).encode() for a in addrs])
    ip_cdf = cdf(1.0 / (np.arange(len(addrs)) + 5.0))  # a few busy clients, a long tail
    paths = [p.encode() for p in _ID_PATHS + _PLAIN_PATHS]
    req_pool = pool([m + b" " + p for m in _METHODS for p in paths])
    no_id = np.array([i >= len(_ID_PATHS) for _ in _METHODS for i in range(len(paths))])
    empty = np.array([m == b"HEAD" for m in _METHODS for _ in paths])
    method_cdf = cdf(list(_METHODS.values()))
    path_cdf = cdf([3.0] * len(_ID_PATHS) + [1.0] * len(_PLAIN_PATHS))
    status_pool, status_cdf = pool(list(_STATUSES)), cdf(list(_STATUSES.values()))
    ua_pool = pool([b'"%s" "%s"\n' % (r, a) for r in _REFERERS for a in _AGENTS])
    ua_cdf = cdf(np.outer(list(_REFERERS.values()), list(_AGENTS.values())).ravel())
    n, now = CHUNK_ROWS, 0
    buf, slots = layout([ip_pool.itemsize, b" - - [", 11, b":", 8, b' +0000] "',
                         req_pool.itemsize, 5, b' HTTP/1.1" ', 3, b" ", 6, b" ",
                         ua_pool.itemsize], n)
    s_ip, s_day, s_clock, s_req, s_id, s_status, s_bytes, s_ua = slots
    while True:
        seconds = now + np.cumsum(rng.poisson(0.3, n))
        now = int(seconds[-1])
        ip, status, ua = pick(rng, ip_cdf, n), pick(rng, status_cdf, n), pick(rng, ua_cdf, n)
        req = pick(rng, method_cdf, n) * len(paths) + pick(rng, path_cdf, n)
        ids = (100000.0 ** rng.random(n)).astype(np.int64)  # 1..99999, small ids commoner
        size = np.minimum(rng.lognormal(7.5, 1.6, n), 200000).astype(np.int64)
        size[empty[req] | (status_pool[status] == b"304")] = 0
        buf[:, s_ip] = cells(ip_pool, ip)
        buf[:, s_day] = days(seconds // 86400, _clf_day)
        buf[:, s_clock] = clock()[seconds % 86400]
        buf[:, s_req] = cells(req_pool, req)
        buf[:, s_id] = digits(ids, 5)
        buf[no_id[req], s_id] = 0
        buf[:, s_status] = cells(status_pool, status)
        buf[:, s_bytes] = digits(size, 6)
        buf[:, s_ua] = cells(ua_pool, ua)
        yield buf[buf != 0]


def access_log(path: str | os.PathLike[str], size: int | str, *, seed: int = 0) -> int:
    """Write a synthetic Apache combined-format access log of about ``size`` bytes.

    Parameters
    ----------
    path : str or os.PathLike
        File to write. It is written under a temporary name in the same directory and
        renamed into place, so a failed run never leaves a partial file at ``path``.
    size : int or str
        Target size in bytes, or a string such as ``"256MiB"``. Writing stops at the first
        line end at or after ``size`` (lines are never cut); ``0`` writes an empty file.
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
    size = check_size(size)
    return write_atomic(path, _access_log_chunks(np.random.default_rng(seed)), size)


# --- product reviews CSV --------------------------------------------------------------

CSV_HEADER = (b"review_id,created_at,product_id,product,customer,rating,verified,"
              b"helpful_votes,title,body\n")
PRODUCTS = ["Electric kettle, 1.7 l", 'Vinyl record 12" (LP)', "USB-C cable, 2 m",
            "Chef's knife 20 cm", "Desk lamp", "Noise-cancelling headphones", "Yoga mat, 6 mm",
            'Coffee beans "Espresso", 1 kg', "Backpack 30 l", "Running shoes",
            "Water bottle, insulated", "Bluetooth speaker", "Notebook A5, dotted",
            "Cast-iron pan 28 cm", "Wool socks (3 pairs)", "Phone case", "LED bulb E27, 9 W",
            "Board game", "Tea towel set", "Smart plug"]
"""Product names, shared with the Parquet orders; several need CSV quoting."""
_FIRST = ["Anna", "Ben", "Chloé", "David", "Émile", "Fatima", "Grace", "Hiro", "Ines", "Jonas",
          "Katarzyna", "Liam", "Mei", "Nikolai", "Olivia", "Pedro", "Quinn", "Rania", "Søren",
          "Tomás", "Uma", "Viktor", "Wei", "Yusuf", "Zoë"]
_LAST = ["Smith", "Müller", "García", "Nguyễn", "O'Brien", "Kowalski", "Rossi", "Dubois",
         "Yamamoto", "Andersen", "Silva", "Novak", "Jensen", "Ivanova", "Khan", "Brown",
         "López", "Schäfer", "Murphy", "Costa"]
_TITLES = ["Great", "Love it", "Not as described", "Good, but pricey", "Five stars",
           "Returned it", '"Best purchase this year"', "Meh", "Works, mostly",
           "Would not buy again", "Solid", "Quality, not quantity", "Okay for the price",
           "Broke after a week", "Exactly as pictured", "Très bien"]
_SENTENCES = [
    "Works as described.", "Arrived two days late, but the packaging was fine.",
    "Great value for money, would buy again.",
    'The manual says "easy to assemble"; it was not.', "Stopped working after a week.",
    "Exactly what I needed.", "Colour is darker than in the photos.",
    "Customer service replied within an hour, and fixed it.", "Too small, returned it.",
    "Battery lasts about 3 days, which is fine for me.", "Sturdy, quiet, and easy to clean.",
    "My kids love it!", "Meh.", "5 stars, no notes.", "Größe passt, Qualität gut.",
    "Très bon produit, livraison rapide.", "Not bad, not great; it does the job.",
    'Pros: price, weight. Cons: noise, "smart" features.',
    'It says 12" on the box, but it is 11.5".', "Update: still going strong after 6 months.",
    "Would give 0 stars if I could.", "Gift for my dad, he was happy :)",
]
_RATINGS = [9.0, 6.0, 10.0, 25.0, 50.0]  # 1..5 stars


def csv_field(text: str) -> bytes:
    """Return ``text`` as one CSV field (RFC 4180: quoted when needed, quotes doubled)."""
    if any(c in text for c in ',"\n\r') or text != text.strip():
        text = '"' + text.replace('"', '""') + '"'
    return text.encode()


def _bodies(rng: np.random.Generator, count: int) -> list[bytes]:
    """Return ``count`` review bodies of 0-4 sentences, about a third spanning lines."""
    out = []
    for _ in range(count):
        k = int(pick(rng, cdf([5.0, 35.0, 30.0, 20.0, 10.0]), 1)[0])
        chosen = rng.choice(len(_SENTENCES), k, replace=False)
        seps = rng.choice(np.array([" ", " ", " ", "\n", "\n\n"]), max(0, k - 1))
        text = _SENTENCES[chosen[0]] if k else ""
        for sep, s in zip(seps, chosen[1:], strict=True):
            text += str(sep) + _SENTENCES[s]
        out.append(csv_field(text))
    return out


def _reviews_chunks(rng: np.random.Generator) -> Iterator[NDArray[np.uint8]]:
    """Yield chunks of whole CSV records (the header first) as uint8 arrays, without end."""
    products = pool([csv_field(p) for p in PRODUCTS])
    names = [csv_field(f"{last}, {first}") for last in _LAST for first in _FIRST]
    customers = pool([names[i] for i in rng.permutation(len(names))])
    customer_cdf = cdf(1.0 / (np.arange(len(customers)) + 20.0))
    titles, title_cdf = pool([csv_field(t) for t in _TITLES]), cdf([1.0] * len(_TITLES))
    bodies = pool(_bodies(rng, 4096))
    verified = pool([b"false", b"true"])
    n, now, first_id = CHUNK_ROWS, 0, 1
    buf, slots = layout([10, b",", 10, b" ", 8, b",", 4, b",", products.itemsize, b",",
                         customers.itemsize, b",", 1, b",", verified.itemsize, b",", 4, b",",
                         titles.itemsize, b",", bodies.itemsize, b"\n"], n)
    s_id, s_day, s_clock, s_pid, s_product, s_customer, s_rating, s_verified, s_votes, \
        s_title, s_body = slots
    yield np.frombuffer(CSV_HEADER, dtype=np.uint8)
    while True:
        seconds = now + np.cumsum(rng.integers(0, 40, n))
        now = int(seconds[-1])
        pid = (5000.0 ** rng.random(n)).astype(np.int64)  # 1..4999, small ids commoner
        buf[:, s_id] = digits(first_id + np.arange(n, dtype=np.int64), 10)
        first_id += n
        buf[:, s_day] = days(seconds // 86400, iso_day)
        buf[:, s_clock] = clock()[seconds % 86400]
        buf[:, s_pid] = digits(pid, 4)
        buf[:, s_product] = cells(products, pid % len(PRODUCTS))
        buf[:, s_customer] = cells(customers, pick(rng, customer_cdf, n))
        buf[:, s_rating] = (pick(rng, cdf(_RATINGS), n) + ord("1")).astype(np.uint8)[:, None]
        buf[:, s_verified] = cells(verified, (rng.random(n) < 0.8).astype(np.intp))
        buf[:, s_votes] = digits(np.minimum(rng.geometric(0.3, n) - 1, 9999), 4)
        buf[:, s_title] = cells(titles, pick(rng, title_cdf, n))
        buf[:, s_body] = cells(bodies, rng.integers(0, len(bodies), n))
        yield buf[buf != 0]


def reviews_csv(path: str | os.PathLike[str], size: int | str, *, seed: int = 0) -> int:
    """Write a CSV file of synthetic product reviews of about ``size`` bytes.

    RFC 4180 CSV with a header line and ``\\n`` line ends. Many fields are quoted: customer
    names hold a comma (``"Müller, Anna"``), some product names and titles hold commas or
    doubled quotes, and about a third of the review bodies span several lines. So a
    record cannot be found by looking for the next ``\\n``: a splitter has to know the
    quoting.

    Parameters
    ----------
    path : str or os.PathLike
        File to write, atomically (see :func:`access_log`).
    size : int or str
        Target size in bytes, or a string such as ``"256MiB"``. Writing stops at the end
        of the record that holds byte ``size - 1`` (records are never cut).
    seed : int, default 0
        Seed of the random generator: the same seed gives the same bytes.

    Returns
    -------
    int
        Number of bytes written.

    Examples
    --------
    >>> import csv, pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "reviews.csv"
    >>> n = reviews_csv(out, 10_000, seed=1)
    >>> with open(out, newline="", encoding="utf-8") as f:
    ...     rows = list(csv.DictReader(f))
    >>> rows[0]["review_id"], sorted(rows[0])[:3]
    ('1', ['body', 'created_at', 'customer'])
    """
    size = check_size(size)
    return write_atomic(path, _reviews_chunks(np.random.default_rng(seed)), size,
                        quoted_line_end)


# --- clickstream events, JSON lines ---------------------------------------------------

_EVENTS = {"page_view": 55.0, "search": 12.0, "add_to_cart": 10.0, "purchase": 4.0,
           "login": 6.0, "logout": 3.0, "error": 2.0}
_DEVICES = {b"desktop": 45.0, b"mobile": 45.0, b"tablet": 8.0, b"tv": 2.0}
_QUERIES = ["headphones", "wireless headphones", "café au lait mug", "kettle 1.7 l",
            "yoga mat", 'vinyl 12"', "größe 42 shoes", "東京 guide", "🎧 deals",
            "gift ideas for dad", "naïve art print", "usb-c, 2 m"]
_ERRORS = [(500, 'upstream timeout for "catalog"'), (502, "bad gateway"),
           (503, "maintenance\nback at 02:00"), (404, "no such page: /old-shop")]


def _props(rng: np.random.Generator, event: str) -> dict[str, Any]:
    """Return the ``props`` object of one event."""
    def integer(low: int, high: int) -> int:
        return int(rng.integers(low, high))

    def price() -> float:
        return integer(199, 19999) / 100

    if event == "page_view":
        path = str(rng.choice(np.array(_PLAIN_PATHS + [p + "{}" for p in _ID_PATHS])))
        return {"path": path.format(integer(1, 5000)), "duration_ms": integer(5, 60000),
                "referrer": [None, "https://www.google.com/", "https://www.example.com/"][
                    integer(0, 3)]}
    if event == "search":
        return {"query": _QUERIES[integer(0, len(_QUERIES))], "results": integer(0, 500),
                "filters": {"in_stock": bool(integer(0, 2)),
                            "max_price": None if integer(0, 2) else price()}}
    if event == "add_to_cart":
        return {"product_id": integer(1, 5000), "quantity": integer(1, 5), "price": price()}
    if event == "purchase":
        items = [{"product_id": integer(1, 5000), "quantity": integer(1, 4), "price": price()}
                 for _ in range(integer(1, 5))]
        total = round(sum(i["price"] * i["quantity"] for i in items), 2)
        return {"order_id": f"ORD-{integer(0, 10**8):08d}", "items": items, "total": total,
                "currency": "EUR"}
    if event == "login":
        return {"method": ["password", "sso", "magic_link"][integer(0, 3)],
                "success": integer(0, 10) > 0}
    if event == "logout":
        return {}
    code, message = _ERRORS[integer(0, len(_ERRORS))]
    return {"code": code, "message": message}


def _events_chunks(rng: np.random.Generator) -> Iterator[NDArray[np.uint8]]:
    """Yield chunks of whole JSON lines as uint8 arrays, without end."""
    names = list(_EVENTS)
    drawn = pick(rng, cdf(list(_EVENTS.values())), 4096)
    events = pool([(f'"event":{json.dumps(names[i])},"props":' + json.dumps(
        _props(rng, names[i]), ensure_ascii=False, separators=(",", ":")) + "}\n").encode()
        for i in drawn])
    devices, device_cdf = pool(list(_DEVICES)), cdf(list(_DEVICES.values()))
    hexdigits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    salt = np.uint64(rng.integers(0, 2**63))
    n, now_ms = CHUNK_ROWS, 0
    buf, slots = layout([b'{"ts":"', 10, b"T", 8, b".", 3, b'Z","user_id":', 7,
                         b',"session_id":"', 16, b'","device":"', devices.itemsize, b'",',
                         events.itemsize], n)
    s_day, s_clock, s_ms, s_user, s_session, s_device, s_event = slots
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    while True:
        ms = now_ms + np.cumsum(rng.integers(0, 40, n))  # about 50 events a second
        now_ms = int(ms[-1])
        seconds = ms // 1000
        user = (1e6 ** rng.random(n)).astype(np.int64)  # 1..999999, small ids commoner
        # a user's session changes every half hour: a hash of (user, half hour, salt)
        key = (user.astype(np.uint64) << np.uint64(20)) ^ (seconds // 1800).astype(np.uint64)
        session = (key ^ salt) * np.uint64(0x9E3779B97F4A7C15)
        session ^= session >> np.uint64(29)
        buf[:, s_day] = days(seconds // 86400, iso_day)
        buf[:, s_clock] = clock()[seconds % 86400]
        buf[:, s_ms] = digits(ms % 1000, 3, zeros=True)
        buf[:, s_user] = digits(user, 7)
        buf[:, s_session] = hexdigits[(session[:, None] >> shifts) & np.uint64(15)]
        buf[:, s_device] = cells(devices, pick(rng, device_cdf, n))
        buf[:, s_event] = cells(events, rng.integers(0, len(events), n))
        yield buf[buf != 0]


def events_jsonl(path: str | os.PathLike[str], size: int | str, *, seed: int = 0) -> int:
    """Write JSON lines of synthetic web shop events (a clickstream) of about ``size`` bytes.

    One JSON object a line::

        {"ts":"2026-11-27T00:00:00.012Z","user_id":1234,"session_id":"9f86d081884c7d65",
         "device":"mobile","event":"search","props":{"query":"café au lait mug",...}}

    ``props`` depends on ``event`` (``page_view``, ``search``, ``add_to_cart``,
    ``purchase``, ``login``, ``logout``, ``error``) and holds nested objects, arrays,
    nulls, booleans, escaped quotes and newlines, and non-ASCII text (UTF-8).

    Parameters
    ----------
    path : str or os.PathLike
        File to write, atomically (see :func:`access_log`).
    size : int or str
        Target size in bytes, or a string such as ``"256MiB"``. Writing stops at the
        first line end at or after ``size``.
    seed : int, default 0
        Seed of the random generator: the same seed gives the same bytes.

    Returns
    -------
    int
        Number of bytes written.

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl"
    >>> n = events_jsonl(out, 10_000, seed=1)
    >>> first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    >>> sorted(first)
    ['device', 'event', 'props', 'session_id', 'ts', 'user_id']
    """
    size = check_size(size)
    return write_atomic(path, _events_chunks(np.random.default_rng(seed)), size)
