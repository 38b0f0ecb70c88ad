"""Per-epoch pipeline counters shared by the DataLoader workers of one rank.

The counters live in a small shared-memory array created in the main process
(``multiprocessing.Array``), so DataLoader workers, forked or spawned,
add to the same numbers and the trainer reads the totals after an epoch. The
current epoch is stored there too, so ``set_epoch`` reaches persistent workers.
"""

from __future__ import annotations

import multiprocessing

from wespeaker_lap.dataset.audio import BAD_AUDIO_REASONS

#: Counted events. ``samples``/``batches``: produced; the bad-audio reasons:
#: utterances skipped; ``too_long``: dropped by ``max_duration``; ``bad_shard``: tar
#: files that failed part-way; ``bad_aug_source``: noise/RIR files that failed
#: (the crop stayed clean); ``truncated``: WAVE files shorter than their header
#: claims (used as they are, not skipped); ``unsafe_member``: tar members named with an
#: absolute path or ``..`` (skipped: never a key).
COUNTERS = ("samples", "batches", *BAD_AUDIO_REASONS, "too_long", "bad_shard", "bad_aug_source",
            "truncated", "unsafe_member")
_FIELDS = ("epoch", *COUNTERS)


class PipelineStats:
    """Shared counters; ``add`` from any worker, ``snapshot``/``summary`` from the trainer."""

    def __init__(self):
        # a spawn-context lock can be shared with fork, spawn and forkserver workers alike
        self._arr = multiprocessing.get_context("spawn").Array("q", len(_FIELDS))
        self._index = {name: i for i, name in enumerate(_FIELDS)}

    def add(self, name: str, n: int = 1) -> None:
        i = self._index[name]
        with self._arr.get_lock():
            self._arr[i] += n

    @property
    def epoch(self) -> int:
        return int(self._arr[0])

    @epoch.setter
    def epoch(self, value: int) -> None:
        with self._arr.get_lock():
            self._arr[0] = int(value)

    def reset(self) -> None:
        """Zero the counters (the epoch stays)."""
        with self._arr.get_lock():
            for i in range(1, len(_FIELDS)):
                self._arr[i] = 0

    def snapshot(self) -> dict[str, int]:
        """``{"epoch", "samples", "batches", "skipped", <each counter>}``."""
        with self._arr.get_lock():
            values = list(self._arr)
        out = dict(zip(_FIELDS, values, strict=True))
        out["skipped"] = sum(out[r] for r in BAD_AUDIO_REASONS)
        return out

    def summary(self) -> str:
        s = self.snapshot()
        details = ", ".join(f"{k} {s[k]}" for k in COUNTERS[2:] if s[k])
        return (
            f"epoch {s['epoch']}: {s['samples']} samples in {s['batches']} batches, "
            f"{s['skipped']} bad utterances skipped" + (f" ({details})" if details else "")
        )
