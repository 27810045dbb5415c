"""bp.formats.Fixed: record-multiple boundaries, zero-copy arrays, partial records."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from blockproc import formats
from blockproc.errors import ConfigError, InputError
from blockproc.formats import Fixed
from blockproc.model import InputFile
from blockproc.planning import cut_blocks

DTYPE = np.dtype([("id", "<u4"), ("x", "<f8")])


def test_boundary_rounds_up_to_the_next_record_start() -> None:
    fmt = Fixed(record_size=4, header_size=3)
    got = [fmt.boundary(None, p, 15, max_record_size=0).offset for p in range(16)]
    assert got == [0, 3, 3, 3, 7, 7, 7, 7, 11, 11, 11, 11, 15, 15, 15, 15]


def test_map_blocks_gets_a_zero_copy_read_only_array() -> None:
    whole = np.zeros(5, DTYPE)
    whole["id"] = np.arange(5)
    data = whole.tobytes()
    arr = Fixed(DTYPE).decode_block(data, at_file_start=True)
    assert arr.dtype == DTYPE and arr["id"].tolist() == [0, 1, 2, 3, 4]
    assert np.shares_memory(arr, np.frombuffer(data, np.uint8))
    assert not arr.flags.writeable


def test_record_size_only_gives_bytes_and_a_2d_array() -> None:
    fmt = Fixed(record_size=3)
    chunks = [b"abcd", b"efghi"]
    assert [r for b in fmt.iter_batches(chunks, at_file_start=True) for r in b] == \
        [b"abc", b"def", b"ghi"]
    assert fmt.decode_block(b"abcdef", at_file_start=False).shape == (2, 3)


def test_records_are_numpy_scalars_with_a_dtype() -> None:
    data = np.array([(7, 0.5)], DTYPE).tobytes()
    (record,) = [r for b in Fixed(DTYPE).iter_batches([data[:5], data[5:]],
                                                     at_file_start=True) for r in b]
    assert record["id"] == 7 and record["x"] == 0.5


def test_the_header_is_skipped_only_at_the_file_start() -> None:
    fmt = Fixed(record_size=2, header_size=3)
    assert [r for b in fmt.iter_batches([b"H", b"DRaabb"], at_file_start=True) for r in b] \
        == [b"aa", b"bb"]
    assert fmt.decode_block(b"HDRaabb", at_file_start=True).tobytes() == b"aabb"
    assert fmt.count_records(b"HDRaabb", at_file_start=True) == 2


def test_a_trailing_partial_record_is_an_error_never_padding() -> None:
    fmt = Fixed(record_size=4)
    with pytest.raises(InputError, match="partial record: 2 bytes at byte 8 of the file"):
        list(fmt.iter_batches([b"aaaabbbb", b"cc"], at_file_start=True))
    with pytest.raises(InputError, match="partial record"):
        fmt.decode_block(b"aaaabb", at_file_start=False)
    with pytest.raises(InputError, match="shorter than its 8-byte header"):
        list(Fixed(record_size=1, header_size=8).iter_batches([b"abc"], at_file_start=True))


def test_the_plan_refuses_files_that_are_not_whole_records() -> None:
    fmt = Fixed(record_size=4, header_size=2)
    good = [InputFile("a", 10), InputFile("b", 0), InputFile("c.gz", 7, compression="gzip")]
    assert fmt.plan_blocks(good, cut_blocks(good, 4), None)[0] is fmt  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"'d' has 11 bytes.*1 bytes left over at offset 10"):
        fmt.plan_blocks([InputFile("d", 11)], [], None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "needs a record layout"),
    ({"record_size": 0}, "record_size must be an int >= 1"),
    ({"dtype": "<f8", "record_size": 4}, "itemsize 8"),
    ({"dtype": "not-a-dtype"}, "is not a numpy dtype"),
    ({"record_size": 2, "header_size": -1}, "header_size"),
])
def test_bad_layouts_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Fixed(**kwargs)  # type: ignore[arg-type]


def test_get_format_fixed_needs_a_layout() -> None:
    with pytest.raises(ConfigError, match="needs a record layout"):
        formats.get_format("fixed")


@pytest.mark.parametrize("dtype", ["<f8", DTYPE, [("a", "<i4", (3,)), ("s", "S2")]])
def test_to_dict_round_trips_through_json_and_pickle(dtype: object) -> None:
    fmt = Fixed(dtype, header_size=5)
    again = formats.from_dict(json.loads(json.dumps(fmt.to_dict())))
    assert again == fmt and again.dtype == fmt.dtype
    assert pickle.loads(pickle.dumps(fmt)) == fmt
    assert fmt.delimiter == b""
