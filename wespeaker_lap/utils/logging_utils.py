"""Logging set-up for entry points only; library modules just call logging.getLogger(__name__)."""

from __future__ import annotations

import logging


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
