"""Margin scheduler for AAM heads, with WeSpeaker's semantics.

The margin stays at ``initial_margin`` until ``increase_start_epoch``, rises to
``final_margin`` along a curve until ``fix_start_epoch``, and stays there after.
It is updated every iteration (``epoch_iter`` iterations per epoch). Curves, for
``r`` in [0, 1] the fraction of the rising phase done:

* ``exp`` (WeSpeaker's default): ``1 - 1e-3 ** r`` (fast at first);
* ``linear``: ``r``;
* ``log`` (the LAP recipe's): ``1 + log(a + (1 - a) r) / -log(a)``, ``a = 5e-3``.
"""

from __future__ import annotations

import math

INCREASE_TYPES = ("exp", "linear", "log")
_EXP_FLOOR = 1e-3  # WeSpeaker's exp curve: ratio = 1 - floor ** r
_LOG_START = 5e-3  # LAP's log curve: log(linspace(5e-3, 1)) rescaled to [0, 1]


def margin_ratio(r: float, increase_type: str) -> float:
    """Fraction of the margin increase reached after a fraction ``r`` of the rising phase."""
    if increase_type not in INCREASE_TYPES:
        raise ValueError(f"unknown increase_type {increase_type!r}; valid: {list(INCREASE_TYPES)}")
    r = min(max(r, 0.0), 1.0)
    if increase_type == "exp":
        return 1.0 - _EXP_FLOOR**r
    if increase_type == "linear":
        return r
    return 1.0 + math.log(_LOG_START + (1.0 - _LOG_START) * r) / -math.log(_LOG_START)


class MarginScheduler:
    """Drive ``projection.update(margin)`` every iteration.

    Args mirror WeSpeaker's ``margin_update`` block: ``initial_margin``,
    ``final_margin``, ``increase_start_epoch``, ``fix_start_epoch``,
    ``update_margin`` (False: keep the head's margin untouched),
    ``increase_type``. ``projection`` is any head with ``update(margin)``;
    heads without one (softmax) are left alone.

    >>> class Head:
    ...     def update(self, margin): self.margin = margin
    >>> s = MarginScheduler(Head(), epoch_iter=10, initial_margin=0.0, final_margin=0.2,
    ...                     increase_start_epoch=1, fix_start_epoch=3, increase_type="linear")
    >>> [round(s.margin_at(e * 10), 3) for e in (0, 1, 2, 3, 4)]
    [0.0, 0.0, 0.1, 0.2, 0.2]
    """

    def __init__(
        self,
        projection,
        epoch_iter: int,
        initial_margin: float,
        final_margin: float,
        increase_start_epoch: int,
        fix_start_epoch: int,
        update_margin: bool = True,
        increase_type: str = "exp",
    ):
        assert epoch_iter > 0, f"epoch_iter must be positive, got {epoch_iter}"
        assert 0 <= increase_start_epoch <= fix_start_epoch, (
            f"need 0 <= increase_start_epoch ({increase_start_epoch}) <= "
            f"fix_start_epoch ({fix_start_epoch})"
        )
        if increase_type not in INCREASE_TYPES:
            raise ValueError(
                f"unknown increase_type {increase_type!r}; valid: {list(INCREASE_TYPES)}"
            )
        self.projection = projection
        self.epoch_iter = int(epoch_iter)
        self.initial_margin = float(initial_margin)
        self.final_margin = float(final_margin)
        self.increase_start_iter = int(increase_start_epoch * epoch_iter)
        self.fix_start_iter = int(fix_start_epoch * epoch_iter)
        self.increase_type = increase_type
        self.update_margin = bool(update_margin) and hasattr(projection, "update")
        self.current_iter = 0
        if self.update_margin:
            projection.update(self.initial_margin)

    def margin_at(self, iteration: int) -> float:
        """The scheduled margin at a global iteration (a pure function of it)."""
        if iteration >= self.fix_start_iter:
            return self.final_margin
        if iteration < self.increase_start_iter:
            return self.initial_margin
        span = self.fix_start_iter - self.increase_start_iter
        ratio = margin_ratio((iteration - self.increase_start_iter) / span, self.increase_type)
        return self.initial_margin + (self.final_margin - self.initial_margin) * ratio

    def step(self, current_iter: int | None = None) -> None:
        """Set the margin for ``current_iter`` (default: the next iteration) and advance."""
        if current_iter is not None:
            self.current_iter = int(current_iter)
        if self.update_margin:
            self.projection.update(self.margin_at(self.current_iter))
        self.current_iter += 1

    def get_margin(self) -> float:
        """The head's current margin (0.0 for heads without one)."""
        return float(getattr(self.projection, "margin", 0.0))

    def state_dict(self) -> dict:
        return {"current_iter": self.current_iter}

    def load_state_dict(self, state: dict) -> None:
        self.current_iter = int(state["current_iter"])
        if self.update_margin:
            self.projection.update(self.margin_at(max(self.current_iter - 1, 0)))
