"""Names users type (``format="csv"``, ``executor="dask"``), mapped to what they stand for.

One helper for the three registries, formats, output formats and executors, after
fsspec's ``known_implementations``: an entry is a dotted path ``"module:attr"``, imported
the first time the name is used, so naming ``dask`` costs nothing until a job asks for
it. An entry may list the optional packages it needs; a missing one fails with the
``pip install`` that brings it. An unknown name fails with a
:class:`~blockproc.ConfigError` that lists the known ones.

>>> registry = Registry("codec", {"json": "json:dumps", "pickle": "pickle:dumps"})
>>> registry.names()
('json', 'pickle')
>>> registry.load("json")({"a": 1})
'{"a": 1}'
>>> registry.load("xml")
Traceback (most recent call last):
...
blockproc.ConfigError: unknown codec 'xml'; choose one of json, pickle
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from blockproc._deps import require
from blockproc._frozen import FrozenSlots
from blockproc.errors import ConfigError


class Entry(FrozenSlots):
    """One registered name: where its object lives and the optional packages it needs."""

    _fields = ("target", "requires")
    __slots__ = _fields
    target: str
    """``"package.module:attr"``, imported on first use."""
    requires: tuple[str, ...]
    """Modules imported (with an install hint if missing) before the target."""

    def __init__(self, target: str, requires: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "requires", requires)


class Registry:
    """Names of one kind (``kind`` is how messages call them), each a lazy entry.

    Parameters
    ----------
    kind : str
        What a name names, as the option is spelled: ``"format"``, ``"executor"``.
    entries : mapping of str to str
        Name to dotted path ``"module:attr"``, in the order :meth:`names` lists them.
    requires : mapping of str to sequence of str, optional
        Name to the optional modules its entry needs, e.g. ``{"dask": ["distributed"]}``.
    alternative : str, default ""
        Appended to the unknown-name message, e.g. ``" or pass a format instance"``.

    Examples
    --------
    >>> registry = Registry("executor", {"dask": "blockproc.executors.dask:DaskExecutor"},
    ...                     requires={"dask": ["distributed"]})
    >>> "dask" in registry, "gpu" in registry
    (True, False)
    >>> registry.entry("dask").requires
    ('distributed',)
    """

    def __init__(self, kind: str, entries: Mapping[str, str], *,
                 requires: Mapping[str, Sequence[str]] | None = None,
                 alternative: str = "") -> None:
        self.kind = kind
        self.alternative = alternative
        self._entries: dict[str, Entry] = {}
        for name, target in entries.items():
            self.register(name, target, requires=(requires or {}).get(name, ()))

    def register(self, name: str, target: str, *, requires: Sequence[str] = ()) -> None:
        """Add ``name`` for the object at ``target`` (``"module:attr"``), not imported yet.

        Examples
        --------
        >>> registry = Registry("codec", {})
        >>> registry.register("json", "json:dumps")
        >>> registry.register("json", "pickle:dumps")
        Traceback (most recent call last):
        ...
        ValueError: codec 'json' is registered already (json:dumps)
        """
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"target must look like 'package.module:attr', got {target!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already "
                             f"({self._entries[name].target})")
        self._entries[name] = Entry(target, tuple(requires))

    def names(self) -> tuple[str, ...]:
        """Return the registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        """Return the entry of ``name``; raise ConfigError listing the names if unknown."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def unknown(self, name: object) -> ConfigError:
        """Return the error for a name that is not registered (for the caller to raise)."""
        return ConfigError(f"unknown {self.kind} {name!r}; choose one of "
                           f"{', '.join(self._entries)}{self.alternative}")

    def load(self, name: str) -> Any:
        """Return the object ``name`` stands for, importing its module on first use.

        Raises
        ------
        ConfigError
            The name is unknown (the message lists the known ones), or a package its
            entry needs is missing (the message gives the ``pip install``).
        """
        entry = self.entry(name)
        for module in entry.requires:
            require(module, f"{self.kind}={name!r}")
        module, _, attr = entry.target.partition(":")
        try:
            imported = importlib.import_module(module)
        except ImportError as exc:
            if exc.name and exc.name.split(".")[0] != "blockproc":
                require(exc.name, f"{self.kind}={name!r}")  # gives the pip install
            raise
        return getattr(imported, attr)


def lazy_attribute(package: str, namespace: dict[str, Any], homes: Mapping[str, str],
                   name: str) -> Any:
    """A package's ``__getattr__`` (PEP 562): load ``name`` from the submodule
    ``homes[name]`` on first use and keep it in ``namespace``; a name that is a submodule
    imports it, as an eager ``__init__`` would have. So a package re-exports everything
    and imports only what a job uses.

    Examples
    --------
    >>> ns: dict[str, Any] = {}
    >>> lazy_attribute("blockproc", ns, {"format_size": "_units"}, "format_size")(2048)
    '2.0 KiB'
    >>> "format_size" in ns
    True
    >>> lazy_attribute("blockproc", ns, {}, "nothing")
    Traceback (most recent call last):
    ...
    AttributeError: module 'blockproc' has no attribute 'nothing'
    """
    home = homes.get(name)
    if name.startswith("__"):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    if home is not None:
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
    else:
        try:
            value = importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    namespace[name] = value
    return value
