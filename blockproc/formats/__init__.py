"""Record formats: how a block's bytes become records.

``lines`` (default; also UTF-16/32), ``delimited``, ``raw``, ``csv``, ``jsonl``,
``parquet`` and ``fixed``. Pass a name or an instance::

    bp.map_lines(fn, src, output=out, format="lines")
    bp.map_lines(fn, src, output=out, format=bp.formats.Delimited(b"\\0"))
    bp.map_blocks(fn, src, output=out, format=bp.formats.CSV(sep=";"))
    bp.map_blocks(fn, src, output=out, format=bp.formats.Fixed("<f8"))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from blockproc._registry import Registry, lazy_attribute
from blockproc.errors import ConfigError
from blockproc.formats.base import (
    DEFAULT_MAX_RECORD_SIZE,
    Boundary,
    RecordFormat,
    find_boundary,
)

if TYPE_CHECKING:
    from blockproc.formats.csv_format import CSV
    from blockproc.formats.fixed import Fixed
    from blockproc.formats.jsonl import JSONLines
    from blockproc.formats.lines import Delimited, Lines, Raw
    from blockproc.formats.parquet import Parquet

__all__ = [
    "CSV",
    "DEFAULT_MAX_RECORD_SIZE",
    "Boundary",
    "Delimited",
    "Fixed",
    "JSONLines",
    "Lines",
    "Parquet",
    "Raw",
    "RecordFormat",
    "available_formats",
    "find_boundary",
    "from_dict",
    "get_format",
]

REGISTRY = Registry("format", {
    "csv": "blockproc.formats.csv_format:CSV",
    "delimited": "blockproc.formats.lines:Delimited",
    "fixed": "blockproc.formats.fixed:Fixed",
    "jsonl": "blockproc.formats.jsonl:JSONLines",
    "lines": "blockproc.formats.lines:Lines",
    "parquet": "blockproc.formats.parquet:Parquet",
    "raw": "blockproc.formats.lines:Raw",
}, alternative=" or pass a format instance such as bp.formats.Delimited(b'|')")
"""The names ``format=`` accepts (``--format`` on the command line), each a format class."""

_LAZY = {"CSV": "csv_format", "Delimited": "lines", "Fixed": "fixed", "JSONLines": "jsonl",
         "Lines": "lines", "Parquet": "parquet", "Raw": "lines"}
"""The module of each format class, imported on first use (PEP 562): a job over lines
never loads the CSV, JSON Lines, Parquet or fixed-width code."""


def __getattr__(name: str) -> Any:
    """Load a format class, or a submodule, on first use."""
    return lazy_attribute(__name__, globals(), _LAZY, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def available_formats() -> list[str]:
    """Return the names ``format=`` accepts.

    Examples
    --------
    >>> available_formats()
    ['csv', 'delimited', 'fixed', 'jsonl', 'lines', 'parquet', 'raw']
    """
    return sorted(REGISTRY.names())


def get_format(format: str | RecordFormat) -> RecordFormat:
    """Return a format instance for a name or an instance.

    Examples
    --------
    >>> get_format("lines")
    Lines(encoding='utf-8', errors='strict', name='lines')
    """
    if isinstance(format, str):
        return REGISTRY.load(format)()  # type: ignore[no-any-return]
    if not hasattr(format, "iter_batches") or not hasattr(format, "to_dict"):
        raise TypeError(f"format must be a name or a format instance, got {format!r}")
    return format


def from_dict(spec: Mapping[str, Any]) -> RecordFormat:
    """Rebuild a format from its ``to_dict()`` description (as stored in a plan)."""
    options = dict(spec)
    name = options.pop("name")
    if name not in REGISTRY:
        raise ConfigError(
            f"unknown format {name!r} in a stored plan; this blockproc knows "
            f"{', '.join(available_formats())}"
        )
    cls = REGISTRY.load(name)
    if hasattr(cls, "from_dict"):
        return cls.from_dict(options)  # type: ignore[no-any-return]
    for key in ("delimiter",):
        if key in options:
            options[key] = bytes.fromhex(options[key])
    return cls(**options)  # type: ignore[no-any-return]
