"""parse_size and format_size: byte counts from and to human strings."""

from __future__ import annotations

import pytest

from blockproc._units import format_size, parse_size
from blockproc.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64MiB", 64 * 2**20),
        ("64MB", 64 * 10**6),
        ("64mib", 64 * 2**20),
        ("64 MiB", 64 * 2**20),
        ("  64MiB  ", 64 * 2**20),
        ("512KiB", 512 * 2**10),
        ("1GiB", 2**30),
        ("2TiB", 2 * 2**40),
        ("1kB", 1000),
        ("1k", 1000),
        ("3m", 3 * 10**6),
        ("1GB", 10**9),
        ("1TB", 10**12),
        ("1.5 kB", 1500),
        ("1.5KiB", 1536),
        (".5KiB", 512),
        ("2.", 2),
        ("4096", 4096),
        ("4096b", 4096),
        ("4096 B", 4096),
        ("0", 0),
    ],
)
def test_parse_size_reads_numbers_with_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_binary_and_decimal_units_differ() -> None:
    assert parse_size("64MiB") == 67_108_864
    assert parse_size("64MB") == 64_000_000


@pytest.mark.parametrize("value", [0, 1, 4096, 64 * 2**20, 10**15])
def test_parse_size_returns_ints_unchanged(value: int) -> None:
    result = parse_size(value)
    assert result == value
    assert type(result) is int


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.01kB", 2010),
        ("4.02kB", 4020),
        ("8.19kB", 8190),
        ("2.01MB", 2_010_000),
        ("1.1GiB", 1_181_116_006),  # 1.1 * 2**30 = 1181116006.4
    ],
)
def test_parse_size_decimal_fractions_are_not_truncated_by_float_rounding(
    text: str, expected: int
) -> None:
    # 2.01 * 1000 is 2009.9999999999998 in binary floating point; the size the user
    # wrote is exactly 2010 bytes.
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["lots", "", "   ", "MiB", "64 XB", "64MiBs", "-5", "1e6", "6 4MiB", "1,5kB", "0x10"]
)
def test_parse_size_rejects_bad_strings_with_config_error_naming_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a size") as info:
        parse_size(text)
    assert repr(text) in str(info.value)
    assert "64MiB" in str(info.value)  # the message shows how to write a size


def test_parse_size_error_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^block_size 'lots' is not a size"):
        parse_size("lots", name="block_size")


def test_parse_size_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="lots"):
        parse_size("lots")


@pytest.mark.parametrize("value", [True, False, 1.5, 64.0, None, b"64MiB", [64]])
def test_parse_size_rejects_non_int_non_str_with_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="must be an int or a string") as info:
        parse_size(value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


def test_parse_size_type_error_names_the_option() -> None:
    with pytest.raises(TypeError, match=r"^block_size must be"):
        parse_size(None, name="block_size")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("num_bytes", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (64 * 2**20, "64.0 MiB"),
        (3 * 2**30, "3.0 GiB"),
        (2**40, "1.0 TiB"),
        (2**50, "1024.0 TiB"),
        (-2048, "-2.0 KiB"),
        (-5, "-5 B"),
        (1023.9, "1023 B"),
    ],
)
def test_format_size_uses_binary_units(num_bytes: float, expected: str) -> None:
    assert format_size(num_bytes) == expected


@pytest.mark.parametrize("num_bytes", [2**20 - 1, 2**30 - 1, 2**40 - 1, 1024 * 1024 - 10])
def test_format_size_never_shows_1024_of_a_smaller_unit(num_bytes: int) -> None:
    # just below a unit the value rounds up: show "1.0 MiB", not "1024.0 KiB"
    number, unit = format_size(num_bytes).split()
    assert float(number) < 1024, (num_bytes, format_size(num_bytes))
    assert unit in ("KiB", "MiB", "GiB", "TiB")


@pytest.mark.parametrize("text", ["64MiB", "1GiB", "512KiB", "3TiB", "1000"])
def test_format_size_reads_back_with_parse_size(text: str) -> None:
    size = parse_size(text)
    assert parse_size(format_size(size).replace(" ", "")) == size
