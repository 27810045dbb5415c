"""Binary datasets: fixed-width sensor records (numpy) and Parquet orders (pyarrow)."""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from blockproc.datasets._base import START, atomic_file, cdf, check_size, fixed_end, write_atomic
from blockproc.datasets._text import PRODUCTS

_START_NS = int(datetime(START.year, START.month, START.day, tzinfo=UTC).timestamp()) * 10**9

# --- fixed-width sensor records -------------------------------------------------------

SENSOR_DTYPE = np.dtype([
    ("time_ns", "<i8"), ("sensor_id", "<u4"), ("seq", "<u4"), ("temperature", "<f4"),
    ("humidity", "<f4"), ("pressure", "<f4"), ("battery_mv", "<u2"), ("status", "<u2"),
])
"""The numpy dtype of one sensor record: 32 bytes, little-endian, no padding."""

STATUS_LOW_BATTERY, STATUS_FAULT, STATUS_CALIBRATING = 1, 2, 4
_SENSORS = 1000
_CHUNK_RECORDS = 65536  # 2 MiB of records per chunk


def _sensor_chunks(rng: np.random.Generator) -> Iterator[NDArray[np.uint8]]:
    """Yield chunks of whole sensor records as uint8 arrays, without end."""
    # Every sensor reports once a round of 10 s, in a fixed order, 10 ms apart (with
    # jitter), so times increase and record k is reading k // 1000 of its sensor.
    order = rng.permutation(np.arange(10001, 10001 + _SENSORS, dtype=np.uint32))
    base_temp = rng.uniform(15.0, 30.0, _SENSORS)
    base_humidity = rng.uniform(30.0, 70.0, _SENSORS)
    battery0 = rng.uniform(2950.0, 3300.0, _SENSORS)
    drain = rng.uniform(0.5, 3.0, _SENSORS) / 3.6e12  # mV per ns (0.5-3 mV an hour)
    # daily and weather cycles, built with math.sin so no vectorised libm can change a bit
    daily = np.array([4.0 * math.sin(2 * math.pi * (m - 540) / 1440) for m in range(1440)])
    weather = np.array([8.0 * math.sin(2 * math.pi * h / 120) for h in range(120)])  # 5 days
    n, first = _CHUNK_RECORDS, 0
    out = np.zeros(n, dtype=SENSOR_DTYPE)
    while True:
        k = first + np.arange(n, dtype=np.int64)
        first += n
        s = k % _SENSORS
        t = k * 10_000_000 + rng.integers(0, 10_000_000, n)  # ns since the start
        minute, hour = t // 60_000_000_000 % 1440, t // 3_600_000_000_000 % 120
        battery = battery0[s] - drain[s] * t
        status = np.where(battery < 2900.0, STATUS_LOW_BATTERY, 0)
        status |= np.where(rng.random(n) < 0.001, STATUS_FAULT, 0)
        status |= np.where(rng.random(n) < 0.0005, STATUS_CALIBRATING, 0)
        out["time_ns"] = _START_NS + t
        out["sensor_id"] = order[s]
        out["seq"] = k // _SENSORS
        temp = base_temp[s] + daily[minute] + rng.normal(0.0, 0.3, n)
        out["temperature"] = np.where(status & STATUS_FAULT, np.nan, temp)
        out["humidity"] = np.clip(base_humidity[s] - 2.0 * daily[minute]
                                  + rng.normal(0.0, 1.5, n), 0.0, 100.0)
        out["pressure"] = 1013.25 + weather[hour] + rng.normal(0.0, 0.2, n)
        out["battery_mv"] = np.maximum(battery, 0.0)
        out["status"] = status
        yield out.view(np.uint8)


def sensor_records(path: str | os.PathLike[str], size: int | str, *, seed: int = 0) -> int:
    """Write fixed-width binary sensor readings of about ``size`` bytes.

    Records are :data:`SENSOR_DTYPE` (32 bytes, little-endian, no header), so the file
    reads back with ``np.fromfile(path, dtype=SENSOR_DTYPE)``. 1000 sensors (ids 10001 to
    11000) each report once every 10 s, 10 ms apart, in a fixed order: about 100
    readings a second, in time order from 2026-11-27 00:00:00 UTC. Fields: ``time_ns``
    (ns since the Unix epoch), ``sensor_id``, ``seq`` (0, 1, 2... per sensor),
    ``temperature`` (°C, with a daily cycle; NaN when ``status`` has the fault bit 2),
    ``humidity`` (%), ``pressure`` (hPa), ``battery_mv`` (draining) and ``status`` (bits:
    1 low battery, 2 fault, 4 calibrating).

    Parameters
    ----------
    path : str or os.PathLike
        File to write, atomically (see :func:`access_log`).
    size : int or str
        Target size in bytes, or a string such as ``"256MiB"``; rounded up to whole
        records (a multiple of 32 bytes).
    seed : int, default 0
        Seed of the random generator: the same seed gives the same bytes.

    Returns
    -------
    int
        Number of bytes written.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "sensors.bin"
    >>> sensor_records(out, 1000, seed=1)
    1024
    >>> records = np.fromfile(out, dtype=SENSOR_DTYPE)
    >>> len(records), bool((np.diff(records["time_ns"]) > 0).all())
    (32, True)
    """
    size = check_size(size)
    return write_atomic(path, _sensor_chunks(np.random.default_rng(seed)), size,
                        fixed_end(SENSOR_DTYPE.itemsize))


# --- Parquet orders -------------------------------------------------------------------

DEFAULT_ROW_GROUP_SIZE = 2**18
"""Rows per Parquet row group by default (a few MiB each)."""

_COUNTRIES = {"DE": 30.0, "FR": 18.0, "GB": 14.0, "NL": 8.0, "ES": 8.0, "IT": 7.0,
              "PL": 5.0, "SE": 3.0, "AT": 3.0, "BE": 2.0, "DK": 1.0, "IE": 1.0}
_ORDER_STATUSES = {"delivered": 70.0, "shipped": 12.0, "placed": 8.0, "returned": 6.0,
                   "cancelled": 4.0}
_COUPONS = ["WELCOME10", "BLACKFRIDAY", "FREESHIP", "SPRING-15"]
_DICTIONARY_COLUMNS = ["country", "product", "status", "coupon"]  # 3x faster than all columns


def _import_pyarrow() -> tuple[Any, Any]:
    """Return ``(pyarrow, pyarrow.parquet)``, or raise an ImportError that names the fix."""
    try:  # import_module: pyarrow ships no type information
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise ImportError(f"writing the Parquet dataset needs pyarrow ({exc}); "
                          f"pip install pyarrow") from exc


def _lookup(weights: list[float], size: int = 4096) -> NDArray[np.int8]:
    """Return a table of ``size`` indices that holds index ``i`` in proportion to
    ``weights[i]``: indexing it with uniform draws is a faster :func:`pick`."""
    bounds = np.round(cdf(weights) * size).astype(np.int64)
    return np.repeat(np.arange(len(weights), dtype=np.int8), np.diff(np.r_[0, bounds]))


def _orders_table(pa: Any, rng: np.random.Generator, first_id: int, first_ms: int,
                  prices: NDArray[np.float64], n: int) -> Any:
    """Return ``n`` orders as a pyarrow Table."""
    def dictionary(weights: list[float], values: list[str],
                   mask: NDArray[np.bool_] | None = None) -> Any:
        index = _lookup(weights)[rng.integers(0, 4096, n, dtype=np.int16)]
        return pa.DictionaryArray.from_arrays(pa.array(index, mask=mask),
                                              pa.array(values, pa.string()))

    product = (5000.0 ** rng.random(n)).astype(np.int64) % len(PRODUCTS)
    quantity = np.minimum(rng.geometric(0.55, n), 10).astype(np.int16)
    discount = np.where(rng.random(n) < 0.2, 0.1, 0.0)
    return pa.table({
        "order_id": pa.array(first_id + np.arange(n, dtype=np.int64)),
        "created_at": pa.array(first_ms + np.cumsum(rng.integers(0, 2000, n)),
                               pa.timestamp("ms", tz="UTC")),
        "customer_id": pa.array((1e6 ** rng.random(n)).astype(np.int32)),
        "country": dictionary(list(_COUNTRIES.values()), list(_COUNTRIES)),
        "product": pa.DictionaryArray.from_arrays(pa.array(product.astype(np.int8)),
                                                  pa.array(PRODUCTS, pa.string())),
        "quantity": pa.array(quantity),
        "unit_price": pa.array(prices[product]),
        "total": pa.array(np.round(quantity * prices[product] * (1.0 - discount), 2)),
        "status": dictionary(list(_ORDER_STATUSES.values()), list(_ORDER_STATUSES)),
        "coupon": dictionary([1.0] * len(_COUPONS), _COUPONS, mask=rng.random(n) >= 0.15),
    })


def orders_parquet(path: str | os.PathLike[str], size: int | str, *, seed: int = 0,
                   row_group_size: int = DEFAULT_ROW_GROUP_SIZE) -> int:
    """Write a Parquet file of synthetic web shop orders of about ``size`` bytes.

    Columns: ``order_id`` (int64, 1, 2, 3...), ``created_at`` (timestamp[ms, UTC],
    increasing), ``customer_id`` (int32), ``country``, ``product`` and ``status``
    (dictionary-encoded strings), ``quantity`` (int16), ``unit_price`` and ``total``
    (float64, EUR), and ``coupon`` (string, null in about 85 % of rows). Needs pyarrow.

    Parameters
    ----------
    path : str or os.PathLike
        File to write, atomically (see :func:`access_log`).
    size : int or str
        Target size in bytes, or a string such as ``"256MiB"``. Row groups are written
        until the file holds at least ``size`` bytes (the last one cut short to land
        near it); the footer adds a few KiB. ``0`` writes a valid file with no rows.
    seed : int, default 0
        Seed of the random generator: the same seed gives the same bytes (for given
        numpy and pyarrow versions).
    row_group_size : int, default 262144
        Rows per row group, as in :func:`pyarrow.parquet.write_table`.

    Returns
    -------
    int
        Number of bytes written.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import pyarrow.parquet as pq
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "orders.parquet"
    >>> n = orders_parquet(out, 100_000, seed=1, row_group_size=1000)
    >>> meta = pq.ParquetFile(out).metadata
    >>> meta.num_row_groups > 1, meta.num_columns
    (True, 10)
    """
    size = check_size(size)
    if isinstance(row_group_size, bool) or not isinstance(row_group_size, int) or \
            row_group_size < 1:
        raise ValueError(f"row_group_size must be an int >= 1 row, got {row_group_size!r}")
    pa, pq = _import_pyarrow()
    rng = np.random.default_rng(seed)
    prices = np.round(rng.uniform(2.0, 250.0, len(PRODUCTS)), 2)
    first_id, first_ms = 1, _START_NS // 10**6
    schema = _orders_table(pa, np.random.default_rng(0), 0, 0, prices, 1).schema
    with atomic_file(path) as f:
        writer = pq.ParquetWriter(f, schema, use_dictionary=_DICTIONARY_COLUMNS)
        try:
            while f.tell() < size:
                rows = row_group_size
                if first_id > 1:  # the rows that should reach size, at the size per row so far
                    per_row = f.tell() / (first_id - 1)
                    rows = min(rows, max(256, math.ceil((size - f.tell()) / per_row)))
                table = _orders_table(pa, rng, first_id, first_ms, prices, rows)
                writer.write_table(table, row_group_size=rows)
                first_id += rows
                first_ms = int(table.column("created_at")[-1].value)
        finally:
            writer.close()
        return f.tell()
