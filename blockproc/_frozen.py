""":class:`FrozenSlots`: a frozen, slotted dataclass written out once, for the small
value classes every job imports (a dataclass compiles its methods at import)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

__all__ = ["FrozenSlots"]


class FrozenSlots:
    """What a frozen, slotted dataclass is (equality, hash and repr by field, in
    ``_fields`` order; no assignment; pickled as its fields' values), written out once:
    a dataclass compiles its methods when its module is imported, which every job's
    start-up pays. A subclass names its fields in ``_fields`` (in order), makes them its
    ``__slots__``, and sets them in its ``__init__`` with ``object.__setattr__``.

    Examples
    --------
    >>> class Pair(FrozenSlots):
    ...     _fields = ("a", "b")
    ...     __slots__ = _fields
    ...     def __init__(self, a, b=0):
    ...         object.__setattr__(self, "a", a)
    ...         object.__setattr__(self, "b", b)
    >>> Pair(1), Pair(1) == Pair(1, 0), Pair(1) == Pair(1, 2)
    (Pair(a=1, b=0), True, False)
    >>> Pair(1).a = 2
    Traceback (most recent call last):
    ...
    dataclasses.FrozenInstanceError: cannot assign to field 'a'
    """

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields_ = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{self.__class__.__qualname__}({fields_})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, self._values())
