"""Byte sizes: ``parse_size("64MiB") == 64 * 2**20`` and back (pure functions)."""

from __future__ import annotations

import re

from blockproc.errors import ConfigError

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
    "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | str, *, name: str = "size") -> int:
    """Return a byte count from an int or a string like ``"64MiB"`` or ``"64MB"``.

    ``MiB`` means 2**20 bytes and ``MB`` 10**6, as in dask.

    Examples
    --------
    >>> parse_size("64MiB")
    67108864
    >>> parse_size("1.5 kB")
    1500
    >>> parse_size(4096)
    4096
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be an int or a string like '64MiB', got {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"{name} {value!r} is not a size; write an int of bytes or a number with a unit "
            f"like '64MiB' (2**20), '64MB' (10**6), '512KiB' or '1GiB'"
        )
    number: str = match.group(1)
    whole, _, fraction = number.partition(".")  # exact, without importing decimal
    scale: int = 10 ** len(fraction)
    return (int(whole or "0") * scale + int(fraction or "0")) * _UNITS[unit] // scale


def format_size(num_bytes: float) -> str:
    """Return a short human size in binary units.

    Examples
    --------
    >>> format_size(67108864)
    '64.0 MiB'
    >>> format_size(512)
    '512 B'
    """
    if abs(num_bytes) < 1024:
        return f"{int(num_bytes)} B"
    value = float(num_bytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if abs(round(value, 1)) < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
