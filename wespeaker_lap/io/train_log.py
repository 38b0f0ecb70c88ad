"""``train_log.jsonl``: the training log's file format (one JSON object per line).

Written by :class:`wespeaker_lap.utils.train_log.TrainLog` (which documents the
records); read here without torch, by ``bin/plot_training`` and
``bin/average_model --select best_valid``. A killed run leaves at worst one
torn last line, which :func:`read_train_log` skips.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from wespeaker_lap.io.files import atomic_write

logger = logging.getLogger(__name__)

#: The log's file name in ``exp_dir``.
TRAIN_LOG = "train_log.jsonl"


def json_ready(x: Any) -> Any:
    """JSON-ready: NaN and inf become null (JSON has no such numbers)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_ready(v) for v in x]
    return x


def read_train_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``train_log.jsonl``; a torn last line (a killed run) is skipped.

    A malformed line elsewhere is a ``ValueError`` naming file and line.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:
                logger.warning("%s:%d: skipping a torn last line (a killed run)", path, i + 1)
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON record: {e}") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{i + 1}: not a JSON object: {line[:80]!r}")
        out.append(rec)
    return out


def append_record(fd: int, record: Mapping[str, Any]) -> None:
    """Append one record as one line with a single ``write`` (``fd`` opened ``O_APPEND``)."""
    os.write(fd, (json.dumps(json_ready(dict(record))) + "\n").encode("utf-8"))


def truncate_train_log(path: str | os.PathLike, last_epoch: int) -> int:
    """Rewrite ``path`` atomically without the records of epochs after ``last_epoch``.

    Returns how many records were dropped (a missing file is left missing).
    """
    path = Path(path)
    if not path.is_file():
        return 0
    records = read_train_log(path)
    kept = [r for r in records if int(r.get("epoch", 0)) <= last_epoch]
    with atomic_write(path) as f:
        for r in kept:
            f.write(json.dumps(json_ready(r)) + "\n")
    return len(records) - len(kept)


def valid_epochs(records: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """``{epoch: validation EER (%)}`` from the epoch records that carry one."""
    out: dict[int, float] = {}
    for r in records:
        if r.get("kind") == "epoch" and isinstance(r.get("valid"), Mapping) \
                and r["valid"].get("eer") is not None:
            out[int(r["epoch"])] = float(r["valid"]["eer"])
    return out
