"""Values that cross processes and reach manifests, and the exceptions blockproc raises."""

from __future__ import annotations

import base64
import errno
import json
import pickle
import subprocess
import sys
from typing import Any

import cloudpickle
import pytest

import blockproc as bp
from blockproc import errors
from blockproc.errors import (
    AccessError,
    BlockFailedError,
    BlockprocError,
    CommandError,
    CommandNotFoundError,
    ConfigError,
    InputChangedError,
    InputError,
    JobCancelledError,
    JobError,
    LockLostError,
    NoInputFilesError,
    OutputExistsError,
    OutputLockedError,
    RecordTooLargeError,
    RemoteTraceback,
    ReturnTypeError,
    StorageError,
    TextDecodeError,
    TooManyBadRecordsError,
    UnfinishedOutputError,
    ValueTooLargeError,
)
from blockproc.formats import Delimited
from blockproc.model import (
    AttemptRecord,
    Block,
    BlockResult,
    InputFile,
    Plan,
    blocks_summary,
)
from blockproc.result import JobResult
from blockproc.testing import write_files

# -- Block, InputFile, Plan ------------------------------------------------------------


def json_round_trip(data: Any) -> Any:
    return json.loads(json.dumps(data))


def test_block_round_trips_through_a_dict() -> None:
    block = Block(id=3, path="/data/a.log", start=96, end=128)
    assert block.to_dict() == {"id": 3, "path": "/data/a.log", "start": 96, "end": 128}
    assert Block.from_dict(json_round_trip(block.to_dict())) == block


def test_block_from_dict_coerces_types() -> None:
    block = Block.from_dict({"id": "3", "path": "/a", "start": "0", "end": 10.0})
    assert block == Block(3, "/a", 0, 10)
    assert type(block.end) is int


def test_block_is_frozen_and_picklable() -> None:
    block = Block(0, "/a", 0, 1)
    with pytest.raises(AttributeError):
        block.end = 2  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(block)) == block


@pytest.mark.parametrize(
    "item",
    [InputFile("/a.log", 10), InputFile("/b.gz", 5, "mtime=1.5", "gzip"),
     InputFile("s3/x", 0, "ETag=abc")],
)
def test_input_file_round_trips_through_a_dict(item: InputFile) -> None:
    assert InputFile.from_dict(json_round_trip(item.to_dict())) == item


def sample_plan() -> Plan:
    files = (InputFile("/d/a.log", 10, "mtime=1"), InputFile("/d/b.log.gz", 7, "mtime=2", "gzip"))
    blocks = (Block(0, "/d/a.log", 0, 4), Block(1, "/d/a.log", 4, 8), Block(2, "/d/a.log", 8, 10),
              Block(3, "/d/b.log.gz", 0, 7))
    return Plan(protocol="file", files=files, blocks=blocks, block_size=4,
                format=Delimited(b"|+|").to_dict(), storage_options={"anon": True})


def test_plan_round_trips_through_a_dict_with_the_same_fingerprint() -> None:
    plan = sample_plan()
    data = json_round_trip(plan.to_dict())
    rebuilt = Plan.from_dict(data, storage_options={"anon": True})
    assert rebuilt.fingerprint == plan.fingerprint
    assert data["fingerprint"] == plan.fingerprint
    assert rebuilt == plan


def test_plan_from_a_real_listing_round_trips(memfs: str) -> None:
    write_files(memfs, {"a.log": b"x\n" * 50, "sub/b.log": b"y\n" * 3})
    plan = bp.plan(memfs, block_size=16, format=Delimited(b"\n\n"))
    rebuilt = Plan.from_dict(json_round_trip(plan.to_dict()))
    assert rebuilt.fingerprint == plan.fingerprint
    assert rebuilt.blocks == plan.blocks
    assert rebuilt.files == plan.files
    assert rebuilt.format == plan.format


def test_plan_to_dict_leaves_storage_options_out() -> None:
    plan = sample_plan()
    assert "storage_options" not in plan.to_dict()
    assert "anon" not in json.dumps(plan.to_dict())
    assert Plan.from_dict(plan.to_dict()).storage_options == {}


def test_plan_fingerprint_ignores_storage_options() -> None:
    plan = sample_plan()
    other = Plan(plan.protocol, plan.files, plan.blocks, plan.block_size, plan.format,
                 storage_options={"key": "secret"})
    assert other.fingerprint == plan.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"protocol": "s3"},
        {"block_size": 5},
        {"format": {"name": "lines", "encoding": "utf-8", "errors": "strict"}},
        {"files": (InputFile("/d/a.log", 11, "mtime=1"),)},
        {"files": (InputFile("/d/a.log", 10, "mtime=9"),)},
    ],
    ids=["protocol", "block_size", "format", "size", "token"],
)
def test_plan_fingerprint_changes_with_inputs_and_options(change: dict[str, Any]) -> None:
    plan = sample_plan()
    fields = {"protocol": plan.protocol, "files": plan.files, "blocks": plan.blocks,
              "block_size": plan.block_size, "format": plan.format}
    fields.update(change)
    assert Plan(**fields).fingerprint != plan.fingerprint


def test_plan_summary_properties() -> None:
    plan = sample_plan()
    assert len(plan) == 4
    assert plan.num_bytes == 17
    assert plan.file("/d/b.log.gz").compression == "gzip"
    with pytest.raises(KeyError):
        plan.file("/nope")
    assert repr(plan) == "<Plan 2 files, 4 blocks, 17 B, format='delimited'>"


def sample_result(block_id: int = 3, **changes: Any) -> BlockResult:
    fields: dict[str, Any] = {
        "block": Block(block_id, "/d/a.log", 96, 128), "part": f"part-{block_id:05d}.txt",
        "attempt": 2, "worker": "host:123", "records_in": 10, "records_out": 7,
        "bytes_read": 40, "bytes_written": 30, "checksum": "crc32:0badf00d",
        "started": 1700000000.25, "seconds": 0.5,
    }
    fields.update(changes)
    return BlockResult(**fields)


def test_block_result_round_trips_through_a_manifest_entry() -> None:
    result = sample_result()
    entry = json_round_trip(result.to_dict())
    assert entry["id"] == 3 and entry["start"] == 96 and entry["end"] == 128
    assert entry["part"] == "part-00003.txt"
    assert BlockResult.from_dict(entry) == result


def test_block_result_manifest_entry_rounds_times_to_microseconds() -> None:
    result = sample_result(started=12.123456789, seconds=0.000000123)
    entry = result.to_dict()
    assert entry["started"] == 12.123457
    assert entry["seconds"] == 0.0


def test_block_result_from_dict_defaults_started() -> None:
    entry = sample_result().to_dict()
    del entry["started"]
    assert BlockResult.from_dict(entry).started == 0.0


def test_job_result_sums_its_blocks() -> None:
    blocks = (sample_result(0), sample_result(1, records_in=5, bytes_read=1))
    attempts = (AttemptRecord(0, 1, "w", 0.0, 1.0, "failed", "boom"),
                AttemptRecord(0, 2, "w", 1.0, 2.0, "committed"),
                AttemptRecord(1, 1, "w", 0.0, 1.0, "committed"))
    result = JobResult("memory://out/", "job-1", blocks, 2.0, attempts)
    assert result.parts == ("memory://out/part-00000.txt", "memory://out/part-00001.txt")
    assert result.num_records == 15
    assert result.num_records_out == 14
    assert result.num_bytes_read == 41
    assert result.num_bytes_written == 60
    assert result.num_retries == 1
    assert blocks_summary(blocks) == {"num_blocks": 2, "records_in": 15, "records_out": 14,
                                      "bytes_read": 41, "bytes_written": 60,
                                      "bad_records": 0, "blocks_with_stderr": 0}


def test_attempt_record_to_dict_is_json_safe() -> None:
    record = AttemptRecord(1, 2, "host:1", 0.5, 1.5, "lost", "no heartbeat")
    assert json_round_trip(record.to_dict()) == {
        "block_id": 1, "attempt": 2, "worker": "host:1", "started": 0.5, "finished": 1.5,
        "status": "lost", "error": "no heartbeat", "speculative": False,
    }


# -- errors ----------------------------------------------------------------------------


def every_error() -> list[BaseException]:
    return [
        BlockprocError("base"),
        ConfigError("block_size must be >= 1 byte, got 0"),
        InputError("cannot read input 'a.log'"),
        NoInputFilesError("input 'x.log' does not exist; check the path"),
        RecordTooLargeError("no record delimiter b'\\n' within 10 bytes after offset 3"),
        OutputExistsError("output 'out/' exists; pass if_exists='overwrite'"),
        JobError("job stopped"),
        BlockFailedError("block 3 of 8 (data.log [96, 128)) failed: ValueError: bad",
                         block_id=3, attempt=4, remote_traceback="Traceback ...\nValueError"),
        JobCancelledError("cancelled; resume with if_exists='resume'"),
        InputChangedError("input 'a.log' changed since planning: size 5 -> 6 bytes"),
        AccessError("cannot write the output 'out' (to open the output): PermissionError"),
        OutputLockedError("output 'out' is being written by job job-1 (pid 7 on h)"),
        UnfinishedOutputError("output 'out' holds an unfinished blockproc job"),
        StorageError("the storage of output 'out' failed to write _SUCCESS: OSError"),
        LockLostError("job job-1 lost its lock on output 'out' to job job-2"),
        TextDecodeError("utf-8", b"\xff", 0, 1, "cannot decode the input as 'utf-8' at byte 3"),
        ReturnTypeError("the function returned int 7; output_format='text' accepts str"),
        TooManyBadRecordsError("3 records of block 0 raised, more than max_bad_records=2"),
        ValueTooLargeError("block 3 returned a value of 80 MiB (pickled), over the limit"),
        CommandError("command 'false' exited with code 2; its stderr ends with: (nothing)"),
        CommandNotFoundError("command 'nope' was not found: sh exited with code 127"),
    ]


def test_every_error_class_in_the_module_is_covered() -> None:
    classes = {obj for obj in vars(errors).values()
               if isinstance(obj, type) and issubclass(obj, BaseException)}
    assert classes == {type(e) for e in every_error()} | {RemoteTraceback}


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_remote_traceback_survives_a_pickle_round_trip(dumps: Any) -> None:
    """Not an error of its own (no exit code, not exported): a worker's traceback text."""
    text = "Traceback (most recent call last):\n  ...\nValueError: bad"
    copy = pickle.loads(dumps(RemoteTraceback(text)))
    assert type(copy) is RemoteTraceback and copy.text == text and str(copy) == "\n" + text


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("error", every_error(), ids=lambda e: type(e).__name__)
def test_errors_survive_a_pickle_round_trip(error: BaseException, dumps: Any) -> None:
    copy = pickle.loads(dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert copy.exit_code == error.exit_code  # type: ignore[attr-defined]
    if isinstance(error, BlockFailedError):
        assert isinstance(copy, BlockFailedError)
        assert (copy.block_id, copy.attempt, copy.remote_traceback) == (
            3, 4, "Traceback ...\nValueError")


def test_os_error_fields_survive_a_pickle_round_trip() -> None:
    error = NoInputFilesError(errno.ENOENT, "no input files", "data/*.log")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.errno, copy.strerror, copy.filename) == (errno.ENOENT, "no input files",
                                                          "data/*.log")


def test_errors_unpickle_in_a_fresh_process() -> None:
    payload = base64.b64encode(pickle.dumps(every_error())).decode()
    code = (
        "import base64, pickle, sys\n"
        f"errs = pickle.loads(base64.b64decode({payload!r}))\n"
        "print(';'.join(f'{type(e).__name__}|{e}|{e.exit_code}' for e in errs))\n"
        "print(errs[7].block_id, errs[7].attempt)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert out[0] == ";".join(f"{type(e).__name__}|{e}|{e.exit_code}"  # type: ignore[attr-defined]
                              for e in every_error())
    assert out[1] == "3 4"


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (BlockprocError, 1),
        (ConfigError, 2),
        (InputError, 2),
        (NoInputFilesError, 2),
        (RecordTooLargeError, 2),
        (OutputExistsError, 2),
        (JobError, 1),
        (BlockFailedError, 1),
        (JobCancelledError, 130),
        (TextDecodeError, 2),
        (ReturnTypeError, 1),
        (TooManyBadRecordsError, 1),
        (ValueTooLargeError, 1),
        (CommandError, 1),
        (CommandNotFoundError, 1),
    ],
)
def test_exit_codes(cls: type[BlockprocError], code: int) -> None:
    assert cls.exit_code == code


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (ConfigError, ValueError),
        (NoInputFilesError, FileNotFoundError),
        (NoInputFilesError, OSError),
        (OutputExistsError, FileExistsError),
        (RecordTooLargeError, InputError),
        (BlockFailedError, JobError),
        (JobCancelledError, JobError),
        (TextDecodeError, UnicodeDecodeError),
        (TextDecodeError, InputError),
        (ReturnTypeError, TypeError),
        (TooManyBadRecordsError, RuntimeError),
        (CommandError, RuntimeError),
        (CommandNotFoundError, CommandError),
    ],
)
def test_each_error_is_also_the_builtin_callers_catch(cls: type, builtin: type) -> None:
    assert issubclass(cls, builtin)
    assert issubclass(cls, BlockprocError)


@pytest.mark.parametrize(
    ("cls", "retryable"),
    [
        (ReturnTypeError, False),
        (TooManyBadRecordsError, False),
        (CommandNotFoundError, False),
        (CommandError, True),
        (InputChangedError, False),
        (RecordTooLargeError, False),
    ],
)
def test_attempt_errors_say_whether_a_retry_can_help(cls: type, retryable: bool) -> None:
    assert getattr(cls, "retryable", True) is retryable


def test_config_error_is_caught_as_value_error() -> None:
    with pytest.raises(ValueError, match="bad"):
        raise ConfigError("bad")


def test_no_input_files_error_is_caught_as_file_not_found_error() -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        raise NoInputFilesError("missing")


def test_output_exists_error_is_caught_as_file_exists_error() -> None:
    with pytest.raises(FileExistsError, match="exists"):
        raise OutputExistsError("exists")


def test_block_failed_error_keeps_block_and_traceback() -> None:
    err = BlockFailedError("block 3 failed", block_id=3, attempt=4, remote_traceback="tb")
    assert (err.block_id, err.attempt, err.remote_traceback) == (3, 4, "tb")
    assert str(err) == "block 3 failed"
    assert BlockFailedError("x", block_id=0, attempt=1).remote_traceback == ""


def test_errors_are_exported_from_the_package() -> None:
    for error in every_error():
        assert getattr(bp, type(error).__name__) is type(error)
