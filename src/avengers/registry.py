"""One generic registry of named implementations, which also validates the names configs refer to.

Every pluggable part of the project — clustering algorithms, embedders, engines, sandboxes, stores, state
backends, answer extractors, vote judges, ensemble strategies, load targets — is a :class:`Registry`: an
implementation registers itself under a name with :meth:`Registry.register` in the module that defines it,
and callers build one by name with :meth:`Registry.create`. A config field names an implementation with
:meth:`Registry.name_field` (a ``str`` that pydantic checks against the registered names, listed as an
``enum`` in the JSON schema), so adding an implementation means editing one file, not also a ``Literal``.

This module is a leaf (it imports nothing of the project), so configs, the core library and every service
can use it. A registry is declared once, by kind, with the modules whose import registers its built-in
implementations: ``home`` (imported on the first lookup) and ``modules`` (one module per name, imported only
when that name is used, so optional libraries such as vLLM stay optional). :func:`registry` returns the
registry of a kind, creating it on first use, so a config and the module that implements the kind share it
without importing each other.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Implementations of one kind by name (see the module docstring)."""

    def __init__(
        self, kind: str, *, home: str | None = None, modules: Mapping[str, str] | None = None, label: str | None = None
    ):
        self.kind = kind
        """What is registered ("clustering algorithm", "engine backend"): the registry's key."""
        self.label = label or kind
        """What a name names, for messages ("task type" for the extractors and the judges)."""
        self.home = home
        """Module whose import registers the built-in implementations (imported on the first lookup)."""
        self.modules: dict[str, str] = dict(modules or {})
        """Module per name, imported only when that name is looked up."""
        self.aliases: dict[str, str] = {}
        """Extra names accepted by :meth:`validate` that the caller resolves itself (e.g. "auto")."""
        self._entries: dict[str, T] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or factory as ``name`` (a class also gets ``name``)."""

        def wrap(entry: T) -> T:
            with self._lock:
                if name in self._entries and self._entries[name] is not entry:
                    raise ValueError(f"{self.kind} {name!r} is registered twice")
                self._entries[name] = entry
            # a class without a ``name`` gets the registered one; a class whose base defines ``name`` (e.g. the
            # engines' property: the model's name) keeps it
            if isinstance(entry, type) and not hasattr(entry, "name"):
                try:
                    entry.name = name  # type: ignore[attr-defined]
                except (AttributeError, TypeError):
                    pass
            return entry

        return wrap

    def _load_home(self) -> None:
        if not self._loaded and self.home is not None:
            importlib.import_module(self.home)
        self._loaded = True

    def names(self) -> list[str]:
        """Every name that can be looked up (lazily imported ones included), sorted."""
        self._load_home()
        return sorted(set(self._entries) | set(self.modules))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> T:
        """The implementation registered as ``name`` (ValueError listing the known names when there is none)."""
        self._load_home()
        if name not in self._entries and name in self.modules:
            importlib.import_module(self.modules[name])
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.label} {name!r}; known: {self.names()}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``get(name)(*args, **kwargs)``: build the implementation."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def validate(self, name: str) -> str:
        """``name`` when it is registered (or an alias); ValueError naming the known names otherwise."""
        if name in self.aliases or name in self.names():
            return name
        known = sorted({*self.names(), *self.aliases})
        raise ValueError(f"unknown {self.label} {name!r}; known: {known}")

    def name_field(self) -> Any:
        """The type of a config field that names one implementation: ``Annotated[str, ...]`` validated here."""
        from pydantic import AfterValidator

        return Annotated[str, AfterValidator(self.validate), _NamesSchema(self)]


class _NamesSchema:
    """JSON schema of a name field: a string, one of the registered names."""

    def __init__(self, registry: Registry[Any]):
        self.registry = registry

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "string", "enum": sorted({*self.registry.names(), *self.registry.aliases})}


_REGISTRIES: dict[str, Registry[Any]] = {}
_REGISTRIES_LOCK = threading.Lock()


def registry(
    kind: str,
    *,
    home: str | None = None,
    modules: Mapping[str, str] | None = None,
    aliases: Iterable[str] = (),
    label: str | None = None,
) -> Registry[Any]:
    """The registry of ``kind``, created on first use; later calls may add ``home``/``modules``/``aliases``."""
    with _REGISTRIES_LOCK:
        found = _REGISTRIES.get(kind)
        if found is None:
            found = _REGISTRIES[kind] = Registry(kind, home=home, modules=modules, label=label)
        else:
            if home is not None and found.home is None:
                found.home = home
            found.modules.update(modules or {})
        for alias in aliases:
            found.aliases[alias] = alias
        return found


def registries() -> dict[str, Registry[Any]]:
    """Every registry declared so far, by kind."""
    return dict(_REGISTRIES)
