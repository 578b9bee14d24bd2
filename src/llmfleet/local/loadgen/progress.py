"""Progress snapshots and a dependency-free progress line on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

__all__ = ["ProgressCallback", "ProgressSnapshot", "StderrProgress"]


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """The state of a run, passed to a progress callback."""

    done: int
    total: int | None  # None while a duration, not a count, bounds the run
    ok: int
    errors: int
    in_flight: int
    elapsed_s: float
    finished: bool = False
    dropped: int = 0  # open-loop arrivals not sent: the in-flight cap was reached

    @property
    def requests_per_s(self) -> float:
        """Finished requests per second so far."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def describe(self) -> str:
        """One line such as ``42/100 done, 1 errors, 3 in flight, 12.3 req/s, 3.4 s``."""
        done = f"{self.done}" if self.total is None else f"{self.done}/{self.total}"
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        return (
            f"{done} done, {self.errors} errors{dropped}, {self.in_flight} in flight, "
            f"{self.requests_per_s:.1f} req/s, {self.elapsed_s:.1f} s"
        )


ProgressCallback = Callable[[ProgressSnapshot], None]


class StderrProgress:
    """A progress callback that writes to stderr (or ``stream``).

    On a terminal it keeps one line updated in place with ``\\r`` (at most ``tty_interval_s``
    apart); otherwise, e.g. in CI logs, it prints a full line every ``log_interval_s``. The
    final snapshot is always written and ends the line.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty_interval_s: float = 0.1,
        log_interval_s: float = 5.0,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = tty_interval_s if self._tty else log_interval_s
        self._last_write = float("-inf")
        self._last_width = 0

    def __call__(self, snapshot: ProgressSnapshot) -> None:
        now = time.monotonic()
        if not snapshot.finished and now - self._last_write < self._interval:
            return
        self._last_write = now
        line = f"load: {snapshot.describe()}"
        if self._tty:
            # Pad over the previous line: a shorter line would leave its tail visible.
            pad = " " * max(0, self._last_width - len(line))
            self._last_width = len(line)
            self._stream.write(f"\r{line}{pad}" + ("\n" if snapshot.finished else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
