"""blockproc.storage without a server: error classification, retries with backoff, change
detection, publishing, missing-package errors, and a fault-injecting filesystem wrapper."""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

import blockproc as bp
from blockproc.errors import ConfigError, InputError
from blockproc.model import InputFile
from blockproc.storage import (
    InputChangedError,
    RangeSource,
    RetryPolicy,
    filesystem,
    is_retryable,
    iter_whole_files,
    list_inputs,
    publish,
    read_json,
    resolve,
    retry_call,
    verify_unchanged,
    write_bytes_atomic,
    write_json_atomic,
)
from blockproc.testing import read_parts, write_files
from tests import jobs

NO_WAIT = RetryPolicy(tries=4, base_delay=0.0)


# -- which errors are retried ---------------------------------------------------------------

class SlowDown(Exception):
    """Stands in for a client library's exception that is not an OSError."""


class ReadTimeoutError(Exception):
    """Named like botocore's."""


class FileExpired(OSError):
    """Named like s3fs's: the object changed under an open file."""


@pytest.mark.parametrize(("exc", "expected"), [
    (ConnectionResetError("reset by peer"), True),
    (ConnectionAbortedError(), True),
    (TimeoutError("read timed out"), True),
    (OSError(errno.EBUSY, "SlowDown: Please reduce your request rate"), True),  # s3fs's 503
    (OSError(errno.EREMOTEIO, "InternalError"), True),  # s3fs's 500
    (OSError(errno.EIO, "I/O error"), True),
    (OSError("generic"), True),
    (ReadTimeoutError("botocore read timeout"), True),
    (FileNotFoundError("gone"), False),
    (PermissionError("denied"), False),
    (IsADirectoryError("dir"), False),
    (OSError(errno.EINVAL, "400 Bad Request"), False),
    (FileExpired(errno.EBUSY, "etag mismatch"), False),
    (InputChangedError("changed"), False),
    (InputError("bad input"), False),
    (ValueError("bug"), False),
    (SlowDown("not an OSError and not a known name"), False),
])
def test_is_retryable_classifies_storage_errors(exc: BaseException, expected: bool) -> None:
    assert is_retryable(exc) is expected


def test_retry_policy_backs_off_exponentially_with_a_cap() -> None:
    policy = RetryPolicy(tries=6, base_delay=0.05, max_delay=0.3)
    assert [policy.delay(n, jitter=1.0) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert 0.025 <= policy.delay(1) <= 0.05


def test_retry_call_retries_transient_errors_then_succeeds() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionResetError("reset")
        return "ok"

    assert retry_call(flaky, "a read", NO_WAIT) == "ok"
    assert len(calls) == 4


def test_retry_call_gives_up_after_its_tries_and_says_so() -> None:
    calls = []

    def always() -> None:
        calls.append(1)
        raise OSError(errno.EBUSY, "SlowDown")

    with pytest.raises(OSError, match="SlowDown") as info:
        retry_call(always, "to read 'x'", RetryPolicy(tries=3, base_delay=0.0))
    assert len(calls) == 3
    assert "tried to read 'x' 3 times" in "".join(info.value.__notes__)


def test_retry_call_does_not_retry_permanent_errors() -> None:
    calls = []

    def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("nope")

    with pytest.raises(FileNotFoundError):
        retry_call(missing, "x", NO_WAIT)
    assert len(calls) == 1


def test_default_retry_reads_the_tuning_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from blockproc.storage import default_retry

    monkeypatch.setenv("BLOCKPROC_IO_TRIES", "7")
    monkeypatch.setenv("BLOCKPROC_IO_BACKOFF", "0.01")
    assert default_retry() == RetryPolicy(tries=7, base_delay=0.01)
    monkeypatch.setenv("BLOCKPROC_IO_TRIES", "many")
    with pytest.raises(ConfigError, match="BLOCKPROC_IO_TRIES"):
        default_retry()


# -- a filesystem wrapper that fails a fraction of requests ----------------------------------

class FlakyFile(io.RawIOBase):
    """A memory file whose reads fail every ``FlakyMemoryFileSystem.every``-th time."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._inner.seek(offset, whence))

    def read(self, size: int = -1) -> bytes:
        FlakyMemoryFileSystem.strike("read")
        return bytes(self._inner.read(size))

    def readable(self) -> bool:
        return True


class FlakyMemoryFileSystem(MemoryFileSystem):
    """memory:// (the same store) with connection resets on every N-th open, read or
    write, to prove that blockproc retries inside an attempt."""

    protocol = ("flakymem",)
    every = 0
    lock = threading.Lock()
    counts: dict[str, int] = {}  # noqa: RUF012
    failures = 0

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, str) and path.startswith("flakymem://"):
            path = "memory://" + path[len("flakymem://"):]
        return super()._strip_protocol(path)

    @classmethod
    def strike(cls, what: str) -> None:
        with cls.lock:
            cls.counts[what] = cls.counts.get(what, 0) + 1
            if cls.every and cls.counts[what] % cls.every == 0:
                cls.failures += 1
                raise ConnectionResetError(f"injected connection reset ({what})")

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        self.strike("open")
        inner = super()._open(path, mode, *args, **kwargs)
        return FlakyFile(inner) if "r" in mode else inner

    def pipe_file(self, path: str, value: bytes, *args: Any, **kwargs: Any) -> None:
        self.strike("write")
        super().pipe_file(path, value, *args, **kwargs)

    def mv(self, path1: str, path2: str, *args: Any, **kwargs: Any) -> None:
        self.strike("mv")
        super().mv(path1, path2, *args, **kwargs)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FlakyMemoryFileSystem]]:
    fsspec.register_implementation("flakymem", FlakyMemoryFileSystem, clobber=True)
    monkeypatch.setenv("BLOCKPROC_IO_BACKOFF", "0.001")
    FlakyMemoryFileSystem.counts = {}
    FlakyMemoryFileSystem.failures = 0
    FlakyMemoryFileSystem.every = 3
    yield FlakyMemoryFileSystem
    FlakyMemoryFileSystem.every = 0


def test_range_source_reads_through_injected_resets(flaky: type[FlakyMemoryFileSystem],
                                                    memfs: str) -> None:
    data = os.urandom(50_000)
    (url,) = write_files(memfs, {"a.bin": data})
    fs, path = resolve(url.replace("memory://", "flakymem://"))
    with RangeSource(fs, path) as source:
        got = b"".join(source.read(s, s + 1000) for s in range(0, len(data), 1000))
    assert got == data
    assert source.bytes_read == len(data)
    assert flaky.failures >= 10


def test_a_job_succeeds_without_failed_attempts_when_a_third_of_reads_fail(
        flaky: type[FlakyMemoryFileSystem], memfs: str) -> None:
    data = "".join(f"line {i}\n" for i in range(5000)).encode()
    head = data[:3000] + b"\n"
    write_files(memfs, {"in/a.log": data, "in/b.log": head})
    src = f"{memfs}/in".replace("memory://", "flakymem://")
    res = bp.map_lines(jobs.upper, src, output=f"{memfs}/out", block_size=4096,
                       executor="threads", workers=1)  # one reader: no retry meets a fault
    assert read_parts(f"{memfs}/out") == (data + head).upper()
    assert flaky.failures >= 10
    assert res.num_retries == 0, [a.error for a in res.attempts if a.error]


def test_atomic_writes_and_renames_are_retried(flaky: type[FlakyMemoryFileSystem],
                                               memfs: str) -> None:
    flaky.every = 2
    fs, path = resolve(f"{memfs}/state".replace("memory://", "flakymem://"))
    for i in range(4):
        write_bytes_atomic(fs, f"{path}/doc-{i}.json", b"{}")
        publish(fs, f"{path}/doc-{i}.json", f"{path}/final-{i}.json")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(path, detail=False)) == [
        f"final-{i}.json" for i in range(4)]
    assert flaky.failures >= 4


def test_range_source_coalesces_reads_but_never_past_its_limit(memfs: str) -> None:
    data = os.urandom(100_000)
    (url,) = write_files(memfs, {"a.bin": data})
    fs, path = resolve(url)
    with RangeSource(fs, path, limit=60_000, read_size=32_768) as source:
        got = b"".join(source.read(s, s + 1000) for s in range(0, 70_000, 1000))
    assert got == data[:70_000]
    assert source.bytes_read == 70_000  # no byte fetched twice, none past what was read
    assert source.num_requests == 2 + 10  # [0, 32768), [32768, 60000), then one per read


def test_range_source_fetches_a_block_read_end_first_in_one_request(memfs: str) -> None:
    # the first block of a file reads the window past its end first: with begin, that
    # first request takes the whole [begin, limit) when it fits in one
    data = os.urandom(100_000)
    (url,) = write_files(memfs, {"a.bin": data})
    fs, path = resolve(url)
    with RangeSource(fs, path, limit=54_096, read_size=65_536, begin=0) as source:
        assert source.read(50_000, 54_096) == data[50_000:54_096]
        got = b"".join(source.read(s, min(50_000, s + 8192)) for s in range(0, 50_000, 8192))
    assert got == data[:50_000]
    assert (source.num_requests, source.bytes_read) == (1, 54_096)
    with RangeSource(fs, path, limit=54_096, read_size=65_536) as source:  # no begin
        source.read(50_000, 54_096)
        source.read(0, 50_000)
    assert source.num_requests == 2
    with RangeSource(fs, path, limit=94_096, read_size=65_536, begin=20_000) as source:
        assert source.read(90_000, 94_096) == data[90_000:94_096]  # too far for one request
        assert source.read(20_000, 30_000) == data[20_000:30_000]
    assert (source.num_requests, source.bytes_read) == (2, 4_096 + 65_536)


@settings(max_examples=60, deadline=None)
@given(begin=st.integers(0, 3000), length=st.integers(0, 3000), read_size=st.integers(1, 5000),
       reads=st.lists(st.tuples(st.integers(0, 7000), st.integers(0, 3000)), max_size=6))
def test_range_source_with_begin_and_limit_returns_exactly_the_asked_bytes(
        begin: int, length: int, read_size: int, reads: list[tuple[int, int]]) -> None:
    data = bytes(range(256)) * 24  # 6144 bytes
    fs = MemoryFileSystem()
    fs.pipe_file("/range-source-begin/a.bin", data)
    try:
        with RangeSource(fs, "/range-source-begin/a.bin", limit=begin + length,
                         read_size=read_size, begin=begin) as source:
            for start, size in reads:
                assert source.read(start, start + size) == data[start:start + size]
    finally:
        fs.rm("/range-source-begin", recursive=True)
    assert source.bytes_read <= sum(min(n, max(0, len(data) - s)) for s, n in reads) + max(
        read_size, length) * max(1, len(reads))


def test_range_source_does_not_coalesce_on_local_files_by_default(memfs: str) -> None:
    (url,) = write_files(memfs, {"a.bin": bytes(10_000)})
    fs, path = resolve(url)
    with RangeSource(fs, path, limit=10_000) as source:
        for s in range(0, 10_000, 1000):
            source.read(s, s + 1000)
    assert source.num_requests == 10


# -- inputs that change ---------------------------------------------------------------------

def test_verify_unchanged_names_what_changed(memfs: str) -> None:
    (url,) = write_files(memfs, {"a.log": b"12345"})
    fs, files = list_inputs([url])
    (planned,) = files
    verify_unchanged(fs, planned)  # as planned: fine
    with pytest.raises(InputChangedError, match=r"size 5 -> 6 bytes"):
        verify_unchanged(fs, planned, {"size": 6})
    with pytest.raises(InputChangedError, match=r"ETag \"a\" -> \"b\""):
        verify_unchanged(fs, InputFile(planned.path, 5, 'ETag="a"'), {"size": 5, "ETag": '"b"'})
    verify_unchanged(fs, InputFile(planned.path, 5, "mtime=1"), {"size": 5, "ETag": '"b"'})
    fs.rm_file(planned.path)
    with pytest.raises(InputChangedError, match="deleted"):
        verify_unchanged(fs, planned)


def test_local_file_changed_after_planning_fails_the_job_once(tmp_path: Path) -> None:
    src = tmp_path / "a.log"
    src.write_bytes(b"x\n" * 1000)
    plan = bp.plan(str(src), block_size=500)
    src.write_bytes(b"y\n" * 1001)
    job = bp.submit(plan, jobs.upper, output=str(tmp_path / "out"), executor="inline")
    with pytest.raises(bp.BlockFailedError, match="changed after the job was planned"
                       ) as info:
        job.result(timeout=60)
    assert "a.log" in str(info.value) and "size 2000 -> 2002" in str(info.value)
    assert info.value.attempt == 1


def test_input_changed_error_is_an_input_error_that_pickles_and_is_not_retried() -> None:
    err = InputChangedError("input 'x' changed")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, InputError) and str(again) == "input 'x' changed"
    assert InputChangedError.retryable is False


# -- reading many whole files ------------------------------------------------------------------

def test_iter_whole_files_keeps_order_and_reads_each_once(memfs: str) -> None:
    files = {f"f{i:03d}.log": f"{i}\n".encode() * (i + 1) for i in range(40)}
    write_files(memfs, files)
    fs, planned = list_inputs([memfs])
    got = list(iter_whole_files(fs, planned, concurrency=5))
    assert [f.path for f, _ in got] == [f.path for f in planned]
    assert [d for _, d in got] == [files[k] for k in sorted(files)]


def test_iter_whole_files_stops_cleanly_when_closed_early(memfs: str) -> None:
    write_files(memfs, {f"f{i}.log": b"x\n" for i in range(20)})
    fs, planned = list_inputs([memfs])
    gen = iter_whole_files(fs, planned, concurrency=4)
    assert next(gen)[1] == b"x\n"
    gen.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("blockproc-read")]


# -- publishing and atomic writes ----------------------------------------------------------------

def test_publish_renames_on_a_filesystem(tmp_path: Path) -> None:
    fs, root = resolve(str(tmp_path))
    (tmp_path / "staged").write_bytes(b"part")
    publish(fs, f"{root}/staged", f"{root}/final")
    assert (tmp_path / "final").read_bytes() == b"part"
    assert not (tmp_path / "staged").exists()


def test_write_bytes_atomic_leaves_no_staging_file(tmp_path: Path) -> None:
    fs, root = resolve(str(tmp_path))
    write_bytes_atomic(fs, f"{root}/sub/_SUCCESS", b"{}")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["_SUCCESS"]


# -- other filesystems: the package to install -------------------------------------------------

@pytest.mark.parametrize(("url", "package"), [
    ("gs://bucket/data/*.log", "gcsfs"), ("gcs://bucket/x.log", "gcsfs"),
    ("az://container/x.log", "adlfs"), ("abfs://container/x.log", "adlfs"),
])
def test_a_missing_protocol_package_is_named(url: str, package: str) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(ConfigError, match=f"pip install {package}"):
        resolve(url)
    with pytest.raises(ConfigError, match=f"needs the {package} package"):
        bp.plan(url)


def test_hdfs_without_a_hadoop_client_says_what_to_set_up() -> None:
    if importlib.util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow is not installed")
    if os.environ.get("JAVA_HOME") or os.environ.get("HADOOP_HOME"):
        pytest.skip("a Java/Hadoop setup is present")
    with pytest.raises(ConfigError, match="JAVA_HOME") as info:
        resolve("hdfs://127.0.0.1:1/data/a.log")
    assert len(str(info.value).splitlines()) == 1  # not pyarrow's 80 lines of dlopen errors


def test_an_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchfs"):
        resolve("nosuchfs://x/y")


def test_json_documents_read_by_many_threads_at_once_are_read_whole() -> None:
    # fsspec's memory filesystem gives every reader of a path one shared file object: two
    # jobs racing for one output both read its plan.json, and one used to read b""
    fs = filesystem("memory")
    path = f"/json-readers-{time.time_ns()}/plan.json"
    document = {"plan": list(range(20_000))}
    write_json_atomic(fs, path, document)
    errors: list[str] = []

    def read_many() -> None:
        for _ in range(100):
            try:
                assert read_json(fs, path) == document
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=read_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
