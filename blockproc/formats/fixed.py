"""``bp.formats.Fixed(dtype)``: fixed-width binary records (numpy structured arrays,
raw sensor frames, ``.npy`` bodies...).

Record ``k`` occupies ``[header_size + k*record_size, header_size + (k+1)*record_size)``.
A block ``[s, e)`` owns the records that *start* in it: both ends are rounded up to the
next record start, so neighbouring blocks agree without reading anything. A file whose
size is not a whole number of records is an error (at plan time, and in the worker for
compressed input), never padded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blockproc._deps import numpy
from blockproc.errors import ConfigError, InputError
from blockproc.formats.base import Boundary, ReadFn
from blockproc.formats.hooks import FileAccess
from blockproc.model import Block, InputFile


@dataclass(frozen=True, slots=True)
class Fixed:
    """Fixed-width binary records.

    Parameters
    ----------
    dtype : numpy dtype or its description, optional
        ``"<f8"``, ``[("id", "<u4"), ("x", "<f4")]`` or a ``np.dtype``: records decode
        to numpy scalars, blocks to a numpy array.
    record_size : int, optional
        Bytes per record, when there is no dtype: records are ``bytes``, blocks a 2-D
        ``uint8`` array of shape ``(n, record_size)``. Given with ``dtype``, it must
        equal ``dtype.itemsize``.
    header_size : int, default 0
        Bytes at the start of every file before the first record (skipped).

    ``map_blocks`` functions get ``np.frombuffer`` over the block's bytes: no copy, and
    read-only (``arr.copy()`` to change it).

    Examples
    --------
    >>> import numpy as np
    >>> fmt = Fixed([("id", "<u2"), ("x", "<f4")])
    >>> data = np.array([(1, 0.5), (2, 1.5)], dtype=fmt.dtype).tobytes()
    >>> fmt.decode_block(data, at_file_start=True)["x"].tolist()
    [0.5, 1.5]
    >>> [fmt.boundary(None, p, 18, max_record_size=0).offset for p in (1, 6, 7, 17)]
    [6, 6, 12, 18]
    """

    dtype: Any = None
    record_size: int | None = None
    header_size: int = 0
    name: str = "fixed"

    def __post_init__(self) -> None:
        if self.dtype is None and self.record_size is None:
            raise ConfigError(
                "format 'fixed' needs a record layout: pass bp.formats.Fixed(dtype) with a "
                "numpy dtype such as '<f8' or [('id', '<u4'), ('x', '<f4')], or "
                "Fixed(record_size=N) (CLI: --format-option dtype='<f8' or --format-option "
                "record_size=16)")
        if self.dtype is not None:
            np = numpy("format 'fixed'")
            try:
                dtype = np.dtype(_dtype_spec(self.dtype))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"dtype {self.dtype!r} is not a numpy dtype: {exc}") from None
            if self.record_size is not None and self.record_size != dtype.itemsize:
                raise ConfigError(f"record_size={self.record_size} but dtype {dtype} has "
                                  f"itemsize {dtype.itemsize}; give one of them")
            object.__setattr__(self, "dtype", dtype)
            object.__setattr__(self, "record_size", int(dtype.itemsize))
        size = self.record_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"record_size must be an int >= 1, got {size!r}")
        if isinstance(self.header_size, bool) or not isinstance(self.header_size, int) or \
                self.header_size < 0:
            raise ConfigError(f"header_size must be an int >= 0, got {self.header_size!r}")

    @property
    def size(self) -> int:
        """Bytes per record."""
        assert self.record_size is not None
        return self.record_size

    @property
    def delimiter(self) -> bytes:
        """Fixed-width records have no delimiter (``b""``)."""
        return b""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description (the dtype as numpy's ``descr``)."""
        descr = None
        if self.dtype is not None:
            np = numpy("format 'fixed'")
            descr = np.lib.format.dtype_to_descr(self.dtype)
        return {"name": self.name, "dtype": descr, "record_size": self.record_size,
                "header_size": self.header_size}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Fixed:
        """Rebuild from :meth:`to_dict` output."""
        options = dict(spec)
        options.pop("name", None)
        if options.get("dtype") is not None:
            options["dtype"] = _dtype_spec(options["dtype"])
            options.pop("record_size", None)
        return cls(**options)

    def boundary(self, read: ReadFn | None, pos: int, size: int, *,
                 max_record_size: int) -> Boundary:
        """Return the first record start at or after ``pos`` (reads nothing)."""
        if pos <= 0:
            return Boundary(0, b"", 0)
        h, rs = self.header_size, self.size
        offset = h if pos <= h else h + -(-(pos - h) // rs) * rs
        offset = min(offset, size)
        return Boundary(offset, b"", offset)

    def iter_batches(self, chunks: Iterable[bytes], *, at_file_start: bool) -> Iterator[list[Any]]:
        """Yield records (numpy scalars, or bytes without a dtype), a list per chunk."""
        rs = self.size
        skip = self.header_size if at_file_start else 0
        carry = b""
        done = 0
        for piece in chunks:
            chunk = piece
            if skip:
                taken = min(skip, len(chunk))
                chunk, skip = chunk[taken:], skip - taken
                done += taken
            data = carry + chunk if carry else chunk
            whole = len(data) - len(data) % rs
            carry = data[whole:]
            if whole:
                yield self._records(data[:whole] if carry else data)
                done += whole
        if skip:
            raise InputError(f"the file is shorter than its {self.header_size}-byte header")
        if carry:
            raise _partial(len(carry), rs, done, at_file_start)

    def decode_block(self, data: bytes, *, at_file_start: bool) -> Any:
        """Return the block's records as a read-only numpy array over ``data``."""
        np = numpy("format 'fixed'")
        start = self.header_size if at_file_start else 0
        if len(data) < start:
            raise InputError(f"the file is shorter than its {self.header_size}-byte header")
        extra = (len(data) - start) % self.size
        if extra:
            raise _partial(extra, self.size, len(data) - extra - start, at_file_start)
        if self.dtype is None:
            return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(-1, self.size)
        return np.frombuffer(data, dtype=self.dtype, offset=start)

    def count_records(self, data: bytes, *, at_file_start: bool) -> int:
        """Return the number of whole records in an aligned range."""
        start = self.header_size if at_file_start else 0
        return max(0, len(data) - start) // self.size

    def plan_blocks(self, files: Sequence[InputFile], blocks: Sequence[Block],
                    access: FileAccess) -> tuple[Fixed, list[Block]]:
        """Refuse files that do not hold a whole number of records (reads nothing)."""
        for f in files:
            if f.compression:
                continue  # the decompressed size is known only to the worker
            body = f.size - self.header_size
            if f.size and (body < 0 or body % self.size):
                raise InputError(
                    f"{f.path!r} has {f.size} bytes, which is not a {self.header_size}-byte "
                    f"header plus whole {self.size}-byte records ({body % self.size} bytes "
                    f"left over at offset {f.size - body % self.size}); check the dtype, "
                    f"record_size and header_size (partial records are never padded)"
                )
        return self, list(blocks)

    def _records(self, data: bytes) -> list[Any]:
        if self.dtype is None:
            rs = self.size
            return [data[i:i + rs] for i in range(0, len(data), rs)]
        np = numpy("format 'fixed'")
        return list(np.frombuffer(data, dtype=self.dtype))


def _partial(extra: int, record_size: int, offset: int, at_file_start: bool) -> InputError:
    where = "of the file" if at_file_start else "after the block's first record"
    return InputError(
        f"the input ends with a partial record: {extra} bytes at byte {offset} {where}, "
        f"less than one {record_size}-byte record; check the dtype or record_size "
        f"(partial records are never padded)"
    )


def _dtype_spec(spec: Any) -> Any:
    """Turn numpy's ``descr`` after a JSON round trip (lists) back into tuples."""
    if isinstance(spec, list):
        return [tuple(_dtype_spec(x) for x in item) if isinstance(item, list) else item
                for item in spec]
    return spec
