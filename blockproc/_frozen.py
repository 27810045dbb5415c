""":class:`FrozenSlots`: a frozen, slotted dataclass written out once, for the value
classes every job imports (a dataclass compiles its methods at import, and importing
``dataclasses`` loads ``inspect``, ``ast`` and ``dis``: ~20 ms of a small job's start-up)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from dataclasses import Field

__all__ = ["FrozenSlots", "field_names"]


def _frozen_error(message: str) -> Exception:
    from dataclasses import FrozenInstanceError  # only on the error path

    return FrozenInstanceError(message)


class _DataclassFields:
    """A class's ``__dataclass_fields__``, made on first use from its ``__init__`` and
    annotations, so ``dataclasses.fields``, ``replace``, ``asdict`` and ``is_dataclass``
    work on a :class:`FrozenSlots` class as on the dataclass it replaces, without
    importing ``dataclasses`` until one of them is called."""

    def __get__(self, obj: object, cls: type[FrozenSlots]) -> dict[str, Field[Any]]:
        made: dict[str, Field[Any]] | None = cls.__dict__.get("_dataclass_fields_made")
        if made is None:
            made = _dataclass_fields(cls)
            type.__setattr__(cls, "_dataclass_fields_made", made)
        return made


def _dataclass_fields(cls: type[FrozenSlots]) -> dict[str, Field[Any]]:
    import dataclasses
    import inspect

    init = cls.__init__
    code = init.__code__
    params = code.co_varnames[1:code.co_argcount + code.co_kwonlyargcount]
    if params != cls._fields:
        raise TypeError(f"{cls.__name__}: __init__ takes {params}, _fields names {cls._fields}")
    positional = params[:code.co_argcount - 1]
    defaults = dict(zip(positional[::-1], (init.__defaults__ or ())[::-1], strict=False))
    defaults.update(init.__kwdefaults__ or {})
    annotations: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        annotations.update(inspect.get_annotations(klass))
    specs = [(name, annotations.get(name, "Any"),
              dataclasses.field(compare=name in cls._compared, repr=name in cls._shown,
                                **({"default": defaults[name]} if name in defaults else {})))
             for name in params]
    shadow = dataclasses.make_dataclass(cls.__name__, specs, frozen=True)
    made: dict[str, Field[Any]] = vars(shadow)["__dataclass_fields__"]
    return made


def field_names(cls: type[FrozenSlots]) -> tuple[str, ...]:
    """Return the names of ``cls``'s fields, in order (``dataclasses.fields`` without
    importing ``dataclasses``).

    >>> from blockproc.model import Block
    >>> field_names(Block)
    ('id', 'path', 'start', 'end', 'files')
    """
    return cls._fields


class FrozenSlots:
    """What a frozen, slotted dataclass is (equality, hash and repr by field, in
    ``_fields`` order; no assignment; pickled as its fields' values; ``dataclasses.fields``
    and ``dataclasses.replace`` work), written out once: a dataclass compiles its methods
    when its module is imported, which every job's start-up pays.

    A subclass names its fields in ``_fields`` (in ``__init__``'s order), makes them its
    ``__slots__``, and sets them in its ``__init__``: with ``self._init(...)``, or with one
    ``object.__setattr__`` per field where objects are made by the million (a
    :class:`~blockproc.model.Block` per block planned: 0.7 µs against 1.7 µs).
    ``_compared`` and ``_shown`` name the fields equality and hash, and ``repr``, use
    (default: all), as ``field(compare=False)`` and ``field(repr=False)`` would.

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
    >>> import dataclasses
    >>> dataclasses.replace(Pair(1), b=5), [f.name for f in dataclasses.fields(Pair)]
    (Pair(a=1, b=5), ['a', 'b'])
    >>> Pair(1).a = 2
    Traceback (most recent call last):
    ...
    dataclasses.FrozenInstanceError: cannot assign to field 'a'
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _compared: ClassVar[tuple[str, ...]]
    _shown: ClassVar[tuple[str, ...]]
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]] = _DataclassFields()  # type: ignore[assignment]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_compared" not in cls.__dict__:
            cls._compared = cls._fields
        if "_shown" not in cls.__dict__:
            cls._shown = cls._fields

    def _init(self, *values: Any) -> None:
        """Set the fields to ``values``, in ``_fields`` order (for ``__init__``)."""
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._compared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields_ = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._shown)
        return f"{self.__class__.__qualname__}({fields_})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise _frozen_error(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise _frozen_error(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, self._values())
