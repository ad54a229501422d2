"""Batch sizes: fixed, or ``auto`` sized so each batch takes about ``target_batch_time``."""

from __future__ import annotations

# A batch grows or shrinks at most by these factors at a time, so one slow batch (a
# checkpoint, a lock wait) does not swing the size wildly.
GROW = 2.0
SHRINK = 0.5


class BatchSizer:
    """The size of the next batch (rows for key walks, pages for ctid walks)."""

    def __init__(
        self, *, fixed: int | None, target: float, start: int, low: int, high: int
    ) -> None:
        self.fixed = fixed
        self.target = target
        self.low = low
        self.high = high
        self.size = fixed if fixed is not None else max(low, min(start, high))

    def record(self, size: int, seconds: float) -> None:
        """Learn from a finished batch of ``size`` that took ``seconds``."""
        if self.fixed is not None or self.target <= 0:
            return
        ratio = self.target / max(seconds, 1e-4)
        ratio = max(SHRINK, min(GROW, ratio))
        self.size = max(self.low, min(self.high, round(size * ratio)))

    def shrink(self) -> None:
        """Halve after a lock race: a smaller batch holds fewer row locks for less time."""
        if self.fixed is None:
            self.size = max(self.low, self.size // 2)
