"""Learning-rate curves as pure functions of the step: the one home of their formulas.

Both the speaker training (:class:`wespeaker_lap.utils.schedulers.WarmupCosine`)
and the SSL pre-training (:mod:`wespeaker_lap.pretrain.hubert`) read their
learning rate from here, so there is one cosine-with-warm-up formula. It sits
at the bottom of the package (no torch, no package imports) because
``pretrain/`` may not import ``utils/``.
"""

from __future__ import annotations

import math


def warmup_cosine(step: float, peak_lr: float, warmup_steps: float, total_steps: float,
                  final_lr: float = 0.0, start_lr: float = 0.0, ramp_offset: int = 0) -> float:
    """Linear warm-up from ``start_lr`` to ``peak_lr``, then cosine decay to ``final_lr``.

    Steps ``0 .. warmup_steps - 1`` ramp: ``start_lr + (peak_lr - start_lr) *
    (step + ramp_offset) / warmup_steps``. With ``ramp_offset`` 0 the first step
    has ``start_lr`` and the first step after the warm-up ``peak_lr``
    (WeSpeaker's ``WarmupCosine``); with 1 the first step already moves
    (``peak_lr / warmup_steps`` from a ``start_lr`` of 0) and the last warm-up
    step has ``peak_lr`` (the pre-training's schedule). From ``warmup_steps`` on,
    the cosine covers the remaining ``total_steps - warmup_steps`` steps and then
    stays at ``final_lr``.

    >>> [round(warmup_cosine(s, 1.0, 2, 6), 3) for s in range(7)]
    [0.0, 0.5, 1.0, 0.854, 0.5, 0.146, 0.0]
    >>> [round(warmup_cosine(s, 1.0, 2, 6, ramp_offset=1), 3) for s in range(3)]
    [0.5, 1.0, 1.0]
    """
    if step < warmup_steps:
        return start_lr + (peak_lr - start_lr) * (step + ramp_offset) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_lr + 0.5 * (peak_lr - final_lr) * (1.0 + math.cos(math.pi * progress))
