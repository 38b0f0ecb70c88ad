"""Typed checks of configuration values: one style for every option in the package.

Each check takes ``where`` (the option's dotted name, as the user wrote it) and
the value, and returns the value converted, or raises :class:`ConfigError`
naming ``where``, what was expected and what was given. The training config,
the dataset schema, pre-training and the command-line tools all use these, so
a wrong type or range reads the same everywhere and is caught before any work
starts.

>>> check_int("num_epochs", 3, lo=1)
3
>>> check_int("num_epochs", 1.5, lo=1)
Traceback (most recent call last):
...
wespeaker_lap.checks.ConfigError: num_epochs: expected an int, got 1.5
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


class ConfigError(ValueError):
    """A config value, key or override that does not fit the schema."""


def check_number(where: str, value: Any, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """A real number (not a bool, not NaN) in ``[lo, hi]`` (open ends on request)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    _check_range(where, value, lo, hi, lo_open, hi_open)
    return float(value)


def check_int(where: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An int (not a bool, not a float such as 1.5 or 2.0) in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an int, got {value!r}")
    _check_range(where, value, lo, hi, False, False)
    return int(value)


def _check_range(where: str, value: float, lo: float | None, hi: float | None,
                 lo_open: bool, hi_open: bool) -> None:
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{where}: must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ConfigError(f"{where}: must be {'<' if hi_open else '<='} {hi}, got {value!r}")


def check_bool(where: str, value: Any) -> bool:
    """``true`` / ``false`` only (not 0/1, not "yes")."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    return value


def check_str(where: str, value: Any, choices: Collection[str] | None = None) -> str:
    """A string, one of ``choices`` when given."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {sorted(choices)}")
    return value


def check_pair(where: str, value: Any, kind: type = float) -> tuple:
    """``[low, high]`` with low <= high, each an int or number by ``kind``."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"{where}: expected [low, high], got {value!r}")
    check = check_int if kind is int else check_number
    lo, hi = (check(where, v) for v in value)
    if lo > hi:
        raise ConfigError(f"{where}: low > high in {value!r}")
    return lo, hi


def check_keys(where: str, given: Any, valid: Collection[str], hint: str = "") -> Mapping:
    """A mapping whose keys are all in ``valid``; returns it."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(given).__name__} {given!r}")
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(valid)}{hint}")
    return given
