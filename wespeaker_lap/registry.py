"""One name-to-class registry for every kind the configs name.

Frontends, speaker backends, projection heads, losses, optimisers, learning-rate
and margin schedulers are all :class:`Registry` objects, looked up the same way
and failing the same way: an unknown name is a ``ValueError`` that names the
kind, suggests the closest name and lists the valid ones (ESPnet's
``ClassChoices`` idea; WeSpeaker's prefix chains and silent fallbacks are what
this replaces).

>>> heads = Registry("projection", {"softmax": dict})
>>> heads.get("softmax") is dict
True
>>> heads.get("sofmax")
Traceback (most recent call last):
...
ValueError: unknown projection 'sofmax' (did you mean 'softmax'?); valid: ['softmax']
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping ``name -> class`` with one error style.

    ``kind`` names what the registry holds ("speaker model", "optimizer", ...)
    in error messages. Entries are added at construction or with
    :meth:`register` (also usable as a class decorator).
    """

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, value in (entries or {}).items():
            self.register(name, value)

    # -- Mapping
    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"

    # -- registration and lookup
    def register(self, name: str, value: T | None = None) -> Any:
        """Add ``name -> value``; without ``value``, return a decorator that adds it."""
        if value is None:
            def deco(obj: T) -> T:
                self.register(name, obj)
                return obj
            return deco
        if name in self._entries and self._entries[name] is not value:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = value
        return value

    def get(self, name: str, default: Any = None) -> T:  # noqa: D417 - default is refused
        """The entry called ``name``; an unknown name is a ``ValueError`` listing the valid ones.

        ``default`` exists only to keep :class:`Mapping`'s signature: a registry
        never falls back silently, so passing one is an error.
        """
        if default is not None:
            raise TypeError("Registry.get takes no default: unknown names are errors")
        if name not in self._entries:
            raise self.unknown(name)
        return self._entries[name]

    def unknown(self, name: Any) -> ValueError:
        """The error for an unknown ``name`` (also used by config validation)."""
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ValueError(f"unknown {self.kind} {name!r}{hint}; valid: {sorted(self._entries)}")

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``self[name](*args, **kwargs)``; a keyword the constructor lacks is a ``ValueError``."""
        cls = self.get(name)
        accepted = accepted_keywords(cls)
        if accepted is not None:
            bad = sorted(set(kwargs) - accepted)
            if bad:
                raise ValueError(f"{self.kind} {name!r} got unknown argument(s) {bad}; "
                                 f"valid: {sorted(accepted)}")
        return cls(*args, **kwargs)


def accepted_keywords(fn: Callable, exclude: tuple[str, ...] = ()) -> set[str] | None:
    """Keyword names ``fn`` (a function or class) accepts, minus ``exclude``.

    None when it takes ``**kwargs`` (anything goes).

    >>> sorted(accepted_keywords(lambda a, b=1, *, c=2: None, exclude=("a",)))
    ['b', 'c']
    """
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {
        p.name for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in ("self", *exclude)
    }
