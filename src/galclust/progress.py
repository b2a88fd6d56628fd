"""Progress for long loops: a tqdm bar on a terminal, periodic log lines (rate, ETA) elsewhere."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("galclust")


class Progress:
    """Count work done out of ``total`` and show it.

    On a terminal a tqdm bar is drawn on stderr; otherwise (CI, batch jobs, log files) one line
    is logged every ``every`` seconds with the count, the rate and the time left.
    """

    def __init__(self, total: int, what: str, *, unit: str = "files", every: float = 10.0) -> None:
        self.total = total
        self.what = what
        self.unit = unit
        self.every = every
        self.done = 0
        self._start = time.perf_counter()
        self._last = self._start
        self._bar = (
            tqdm(total=total, desc=what, unit=unit, leave=False, dynamic_ncols=True)
            if sys.stderr.isatty() and total > 0
            else None
        )

    def update(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            rate = self.done / (now - self._start)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info(
                "%s: %d/%d %s, %.0f %s/s, %.0f s left",
                self.what,
                self.done,
                self.total,
                self.unit,
                rate,
                self.unit,
                left,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
