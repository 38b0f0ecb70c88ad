"""What the scoring entry points share: common options and one error style.

An entry point's ``main`` parses its arguments and hands its body to :func:`run`,
which sets up logging and turns the errors a user can cause (a missing or
unreadable file, a bad value, a trial naming an utterance without embedding)
into one logged line and exit status 1, instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from wespeaker_lap.scoring.score import MissingEmbeddingError
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger("wespeaker_lap")


def add_log_level(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log_level", "--log-level", default="INFO",
                   help="logging level (default INFO)")


def add_allow_missing(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--allow_missing", "--allow-missing", action="store_true",
                   help=f"skip {what} without embedding (and report the count) instead of "
                        "failing")


def add_print_paths(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--print_paths", "--print-paths", action="store_true",
                   help=f"only print the file each {what} maps to, one a line (recipes use "
                        "this to find the files an earlier stage wrote)")


def run(body: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Set up logging, run ``body(args)``; a user error is logged and gives exit status 1."""
    setup_logging(args.log_level)
    try:
        return body(args) or 0
    except (ValueError, OSError, MissingEmbeddingError) as e:
        logger.error("%s", e)
        return 1
