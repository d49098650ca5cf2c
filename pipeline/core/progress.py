"""Progress lines for long work: done/total, rate, elapsed and ETA, at a bounded rate.

One format everywhere (generation, verification, hidden states, training), so a person watching a
run in the Dagster UI or a terminal reads every long step the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar


class _Batch(Protocol):
    @property
    def num_rows(self) -> int: ...


B = TypeVar("B", bound=_Batch)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Reports `label: done/total (pct), rate unit/s, elapsed m:ss, ETA m:ss` through `log`.

    A line is written at the first update, at most every `every_s` seconds after it, and always at
    the end, so a fast loop never floods the log and a slow one is never silent for long.
    """

    def __init__(
        self,
        label: str,
        total: int,
        log: Callable[[str], None],
        unit: str = "items",
        every_s: float = 10.0,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.every_s = every_s
        self._log = log
        self._started = time.perf_counter()
        self._last: float | None = None
        self.done = 0
        self.resumed = 0
        """Items found done by an earlier, interrupted run: counted in `done`, not in the rate."""

    def line(self, extra: str = "") -> str:
        elapsed = time.perf_counter() - self._started
        rate = (self.done - self.resumed) / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        parts = [
            f"{self.label}: {self.done}/{self.total} {self.unit} ({pct:.0f}%)",
            f"{rate:.1f} {self.unit}/s",
            f"elapsed {_clock(elapsed)}",
            f"ETA {_clock(eta) if eta is not None else '?'}",
        ]
        if self.resumed:
            parts.append(f"{self.resumed} resumed")
        return ", ".join(parts) + (f", {extra}" if extra else "")

    def update(self, done: int, extra: str = "") -> None:
        """Record `done` items finished so far (absolute, not an increment)."""
        self.done = done
        now = time.perf_counter()
        finished = done >= self.total
        if finished or self._last is None or now - self._last >= self.every_s:
            self._last = now
            self._log(self.line(extra))

    def advance(self, count: int = 1, extra: str = "") -> None:
        self.update(self.done + count, extra)

    def resume(self, count: int, extra: str = "") -> None:
        """Count `count` items an earlier run finished: they move `done`, but not the rate or ETA,
        which stay those of the work this run does."""
        self.resumed += count
        self.advance(count, extra)

    def rows(self, batches: Iterable[B]) -> Iterator[B]:
        """`batches` passed through, each advancing the count by its rows (`num_rows`)."""
        for batch in batches:
            yield batch
            self.advance(batch.num_rows)
