"""Lazy imports of the optional heavy dependencies (pyarrow, numpy).

CLI start-up time matters, so formats and writers import pyarrow and numpy only when a
block is decoded or written, never at module import.
"""

from __future__ import annotations

import importlib
from typing import Any


def require(module: str, feature: str) -> Any:
    """Import and return ``module``, or raise ConfigError naming the package to install.

    Examples
    --------
    >>> require("json", "jsonl").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        from blockproc.errors import ConfigError

        package = module.split(".")[0]
        raise ConfigError(
            f"{feature} needs the {package!r} package, which cannot be imported ({exc}); "
            f"run `pip install {package}`"
        ) from None


def pyarrow(feature: str) -> Any:
    """Return the ``pyarrow`` module."""
    return require("pyarrow", feature)


def numpy(feature: str) -> Any:
    """Return the ``numpy`` module."""
    return require("numpy", feature)
