"""The cheap Protocol checks the worker uses per block answer as ``isinstance`` does."""

from __future__ import annotations

import pytest

from blockproc import formats as fm
from blockproc.formats.hooks import BlockDecoder, BlockReader, decodes_blocks, reads_own_blocks

FORMATS = [fm.Lines(), fm.Delimited(b"\0"), fm.CSV(), fm.JSONLines(), fm.Fixed(record_size=4),
           fm.Parquet(), fm.Raw()]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: type(f).__name__)
def test_same_answer_as_isinstance(fmt: object) -> None:
    assert (reads_own_blocks(fmt) is fmt) == isinstance(fmt, BlockReader)
    assert (decodes_blocks(fmt) is fmt) == isinstance(fmt, BlockDecoder)


def test_parquet_reads_its_blocks_and_csv_decodes_them() -> None:
    assert reads_own_blocks(fm.Parquet()) is not None
    assert decodes_blocks(fm.CSV()) is not None
    assert reads_own_blocks(fm.Lines()) is None and decodes_blocks(fm.Lines()) is None


def test_an_attribute_that_is_not_a_method_does_not_count() -> None:
    class Odd:
        read_block = None
        decode_block = 3

    assert reads_own_blocks(Odd()) is None and decodes_blocks(Odd()) is None
