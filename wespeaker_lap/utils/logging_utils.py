"""Logging set-up for entry points only; library modules just call logging.getLogger(__name__)."""

from __future__ import annotations

import logging
import sys
import time


def setup_logging(level: int | str = logging.INFO, rank: int = 0) -> None:
    """Configure the root logger for a command-line entry point.

    Ranks other than 0 log warnings and errors only, so multi-process runs print one log.
    """
    if isinstance(level, str):
        level = getattr(logging, level.upper())
    logging.basicConfig(
        level=level if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal (a progress bar redraws in place there)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


class LogProgress:
    """A tqdm-like counter that logs one line every ``every`` units instead of redrawing.

    Used when stderr is not a terminal (a log file, a batch system's output),
    where a tqdm bar writes a carriage-return line on every update.
    """

    def __init__(self, desc: str, every: int, total: int | None = None, unit: str = "it",
                 log: logging.Logger | None = None):
        self.desc, self.every, self.total, self.unit = desc, max(int(every), 1), total, unit
        self.n = 0
        self._next = self.every
        self._t0 = time.perf_counter()
        self._log = log or logging.getLogger("wespeaker_lap.progress")

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next:
            self._next = (self.n // self.every + 1) * self.every
            rate = self.n / max(time.perf_counter() - self._t0, 1e-9)
            of = f"/{self.total}" if self.total else ""
            self._log.info("%s: %d%s %s (%.1f %s/s)", self.desc, self.n, of, self.unit, rate,
                           self.unit)

    def set_postfix(self, **kwargs: object) -> None:
        """Accepted for tqdm compatibility; the training log rows carry these values."""

    def close(self) -> None:
        """Nothing to tear down."""


def progress(desc: str, total: int | None = None, unit: str = "it", every: int = 100,
             enabled: bool = True):
    """A tqdm bar on a terminal, a :class:`LogProgress` (one line every ``every``) otherwise,
    None when not ``enabled``."""
    if not enabled:
        return None
    if stderr_is_terminal():
        from tqdm import tqdm  # here: 20 ms of import that short commands need not pay

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
    return LogProgress(desc, every, total, unit)
