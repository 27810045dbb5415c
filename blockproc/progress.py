"""Progress display: a tqdm bar of bytes with blocks, busy workers and retries."""

from __future__ import annotations

import sys
import warnings
from typing import Any, Protocol


class Progress(Protocol):
    """What the master reports while a job runs."""

    def update(self, bytes_done: int, blocks_done: int, busy: int, retries: int) -> None:
        """Show the job's totals so far."""

    def close(self) -> None:
        """Remove or finish the display."""


class NullProgress:
    """Show nothing."""

    def update(self, bytes_done: int, blocks_done: int, busy: int, retries: int) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


class TqdmProgress:
    """A tqdm bar: bytes done of the total, throughput and ETA; blocks, busy and retries."""

    def __init__(self, total_bytes: int, total_blocks: int, done_blocks: int = 0) -> None:
        with warnings.catch_warnings():
            # In Jupyter without ipywidgets, tqdm.auto warns once and falls back to the
            # text bar, which works there too; a job is no place for that warning.
            from tqdm import TqdmWarning

            warnings.simplefilter("ignore", TqdmWarning)
            from tqdm.auto import tqdm

        self._total_blocks = total_blocks
        self._bar: Any = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                              dynamic_ncols=True, file=sys.stderr, desc="blockproc",
                              mininterval=0.2)
        self._bytes = 0
        self._shown = (done_blocks, 0, 0)
        self._set_postfix(*self._shown)

    def _set_postfix(self, blocks_done: int, busy: int, retries: int) -> None:
        self._bar.set_postfix_str(
            f"blocks {blocks_done}/{self._total_blocks} busy {busy} retries {retries}",
            refresh=False)

    def update(self, bytes_done: int, blocks_done: int, busy: int, retries: int) -> None:
        """Advance the bar to ``bytes_done`` and refresh the counters."""
        if (blocks_done, busy, retries) != self._shown:
            self._shown = (blocks_done, busy, retries)
            self._set_postfix(blocks_done, busy, retries)
        if bytes_done > self._bytes:
            self._bar.update(bytes_done - self._bytes)
            self._bytes = bytes_done

    def close(self) -> None:
        """Finish the bar."""
        self._bar.close()


def in_jupyter() -> bool:
    """Return True in a Jupyter kernel (where stderr is no terminal but a bar shows)."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def make_progress(enabled: bool | None, total_bytes: int, total_blocks: int,
                  done_blocks: int = 0) -> Progress:
    """Return a bar if ``enabled`` (None: when stderr is a terminal or in Jupyter)."""
    if enabled is None:
        enabled = sys.stderr.isatty() or in_jupyter()
    if not enabled:
        return NullProgress()
    return TqdmProgress(total_bytes, total_blocks, done_blocks)
