"""The ``npy`` output format: numpy arrays, concatenated along axis 0 into one ``.npy``
array per part-file (kept until the block ends: the header holds the row count).
The reading side of arrays is :mod:`blockproc.formats.fixed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blockproc._deps import numpy
from blockproc.output_formats.base import PartWriter, flatten_records, is_table, refuse


class _NpyWriter(PartWriter):
    extension = ".npy"

    def __init__(self, file: Any, spec: NpyOutput) -> None:
        super().__init__(file)
        self._spec = spec
        self._arrays: list[Any] = []

    def write_results(self, results: list[Any]) -> None:
        """Collect numpy scalars or arrays (one record each, or a record per row)."""
        np = numpy("output_format='npy'")
        items = list(flatten_records(results))
        if not items:
            return
        if all(isinstance(i, np.ndarray) for i in items):
            for item in items:
                _check_npy(np, item, "record")
            self._arrays.extend(items)
        else:
            for item in items:
                if not isinstance(item, (np.ndarray, np.generic, int, float, complex)) or \
                        (isinstance(item, np.ndarray) and item.dtype.hasobject):
                    raise refuse("npy", "record", item)
            first = items[0]
            dtype = first.dtype if isinstance(first, np.generic) else None
            self._arrays.append(_check_npy(np, np.array(items, dtype=dtype), "record"))

    def write_block(self, result: Any) -> None:
        """Collect a numpy array (rows along axis 0)."""
        if result is None:
            return
        np = numpy("output_format='npy'")
        if isinstance(result, (str, bytes, Mapping)) or is_table(result) or not (
                isinstance(result, (np.ndarray, np.generic, int, float, complex, list,
                                    tuple))):
            raise refuse("npy", "block", result, "; it writes numpy arrays")
        array = result if isinstance(result, np.ndarray) else np.asarray(result)
        self._arrays.append(_check_npy(np, array, "block"))

    def close(self) -> None:
        """Write the header and the concatenated arrays."""
        np = numpy("output_format='npy'")
        if not self._arrays:
            array = np.empty(0, dtype=self._spec.dtype or "float64")
        elif len(self._arrays) == 1:
            array = self._arrays[0]
        else:
            array = np.concatenate(self._arrays)
        self._arrays = []
        if self._spec.dtype is not None:
            array = array.astype(self._spec.dtype, copy=False)
        np.lib.format.write_array(self._sink, np.ascontiguousarray(array), allow_pickle=False)
        self.records += len(array) if array.ndim else 1


def _check_npy(np: Any, array: Any, mode: str) -> Any:
    """Return ``array``, or raise if ``.npy`` cannot hold it (objects need pickle)."""
    if array.dtype.hasobject:
        raise refuse("npy", mode, array, "; values of mixed or non-numeric types make an "
                      "object array, which .npy cannot store without pickle")
    return array



@dataclass(frozen=True, slots=True)
class NpyOutput:
    """NumPy ``.npy`` part-files: one array per part, rows along axis 0.

    ``dtype`` casts every part to one dtype (and gives empty parts their dtype).
    """

    dtype: Any = None
    name: str = "npy"
    extension: str = ".npy"
    is_streaming_text: bool = False

    def open(self, file: Any) -> PartWriter:
        """Return a writer over ``file``."""
        return _NpyWriter(file, self)
