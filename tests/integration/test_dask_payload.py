"""The dask executor sends the job's pickled function to each worker once, not with every
task: it is scattered to the workers, and every task names it by key."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import blockproc as bp
from blockproc.testing import read_parts

distributed = pytest.importorskip("distributed")

BIG = "x" * 300_000
"""Captured by the function below, so its pickle is ~300 KB: easy to spot in a task."""


class RecordingClient(distributed.Client):  # type: ignore[misc]
    """A real client that remembers what it was asked to submit and scatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submitted: list[tuple[Any, ...]] = []
        self.scattered: list[Any] = []

    def submit(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        self.submitted.append(args)
        return super().submit(func, *args, **kwargs)

    def scatter(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        self.scattered.append(data)
        return super().scatter(data, *args, **kwargs)


@pytest.fixture(scope="module")
def client() -> Iterator[RecordingClient]:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0",
                                  silence_logs=logging.CRITICAL) as cluster, \
            RecordingClient(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=30)
        yield c


def test_the_function_is_scattered_once_and_tasks_carry_only_its_key(
        client: RecordingClient, tmp_path: Path) -> None:
    src = tmp_path / "in.log"
    src.write_bytes(b"".join(b"line %05d\n" % i for i in range(2000)))
    big = BIG

    def tag(line: str) -> str:
        return f"{line} {len(big)}"

    res = bp.map_lines(tag, str(src), output=str(tmp_path / "out"), block_size=2048,
                       executor="dask", executor_options={"client": client})
    assert len(res.blocks) >= 8
    assert bytes(read_parts(str(tmp_path / "out"))) == b"".join(
        b"line %05d 300000\n" % i for i in range(2000))
    payloads = [d for d in client.scattered if isinstance(d, bytes)]
    assert len(payloads) == 1 and len(payloads[0]) > len(BIG)  # the function, once
    assert len(client.submitted) >= len(res.blocks)
    for args in client.submitted:  # each task names the scattered function
        assert not any(isinstance(a, bytes) and len(a) > 10_000 for a in args)
        assert any(isinstance(a, distributed.Future) for a in args)
