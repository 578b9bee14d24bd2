"""Arrival-rate traces: how many requests per second a fleet is asked for, over time.

A trace is rows of `(t_s, rps)`: each row sets the arrival rate, in requests per second, from
its `t_s` until the next row's; the last row ends the trace (its `rps` is not used). Requests
arrive as a Poisson process at that rate, so two runs with the same seed see the same
arrivals. The simulator (`llmfleet simulate`) and the load generator both read traces.

Built-in traces are written in students, the people behind a university chatbot's traffic:
one active student sends one message every `STUDENT_MESSAGE_INTERVAL_S` (60 s: ask, read the
answer, type the next question), so `rps = students / 60`.

- `surge` (2 h): 30 students for 30 minutes, then a class assignment: 0 → 2,000 more students
  in 5 minutes, held 20 minutes, decaying with a 5-minute half-life, quiet to the end.
  Peak 33.8 requests/s.
- `diurnal` (24 h): a day of a university chatbot: a few night owls, a morning ramp, a lunch
  dip, an afternoon peak of 900 students (15 requests/s) and an evening study bump.
- `spiky` (2 h): 150 students (2.5 requests/s) with short class-sized bursts (a lecturer says
  "ask the bot now"): seven spikes of 1 to 8 minutes, up to 1,500 students.

A CSV file holds the same rows under a header `t_s,rps`; blank lines and lines starting with
`#` are skipped:

    t_s,rps
    0,2
    600,20
    1200,2
    3600,0
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from pathlib import Path

__all__ = [
    "BUILTIN_TRACES",
    "MAX_RPS",
    "STUDENT_MESSAGE_INTERVAL_S",
    "Trace",
    "TraceError",
    "load_trace",
]

STUDENT_MESSAGE_INTERVAL_S = 60.0
# Far above what one fleet serves; a typo such as 20000 for 20 would otherwise ask the
# simulator for hundreds of millions of requests.
MAX_RPS = 10_000.0
HEADER = ("t_s", "rps")
ALLOWED_ROWS = ("rows of t_s,rps: t_s seconds from 0, strictly increasing; rps a number "
                f"from 0 to {MAX_RPS:g}")


class TraceError(ValueError):
    """A trace that cannot be used; the message names the trace, the row and the value."""


@dataclass(frozen=True)
class Trace:
    """An arrival rate over time: `rows` of `(t_s, rps)`, the first at t_s 0."""

    name: str
    rows: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        _check_rows(self.rows, lambda index: f"trace {self.name!r}, row {index + 1}")

    @cached_property
    def _starts(self) -> tuple[float, ...]:
        return tuple(t for t, _ in self.rows)

    @property
    def duration_s(self) -> float:
        """When the trace ends: the last row's t_s."""
        return self.rows[-1][0]

    @property
    def peak_rps(self) -> float:
        return max(rps for _, rps in self.rows[:-1])

    def rate_at(self, t: float) -> float:
        """Requests per second at `t` seconds from the start; 0 outside the trace."""
        if t < 0 or t >= self.duration_s:
            return 0.0
        return self.rows[bisect.bisect_right(self._starts, t) - 1][1]

    def segments(self) -> Iterator[tuple[float, float, float]]:
        """`(start_s, end_s, rps)` for every row but the last."""
        for (start, rps), (end, _) in pairwise(self.rows):
            yield start, end, rps

    def expected_requests(self) -> float:
        """The mean number of arrivals over the whole trace."""
        return sum((end - start) * rps for start, end, rps in self.segments())

    def arrivals(self, rng: random.Random) -> Iterator[float]:
        """Arrival times in seconds, increasing: a Poisson process at the trace's rate."""
        for start, end, rps in self.segments():
            if rps <= 0:
                continue
            # Memoryless: restarting the gaps at each row's start keeps the process exact.
            t = start + rng.expovariate(rps)
            while t < end:
                yield t
                t += rng.expovariate(rps)


def load_trace(spec: str | Path) -> Trace:
    """A built-in trace by name (`surge`, `diurnal`, `spiky`) or a CSV file of `t_s,rps`."""
    if isinstance(spec, str) and spec in BUILTIN_TRACES:
        return BUILTIN_TRACES[spec]()
    path = Path(spec)
    if not path.is_file():
        raise TraceError(
            f"{str(spec)!r} is neither a built-in trace ({', '.join(BUILTIN_TRACES)}) nor a "
            "CSV file with the header t_s,rps")
    return _read_csv(path)


def _read_csv(path: Path) -> Trace:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TraceError(f"{path}: cannot read the trace ({error})") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise TraceError(f"{path}: empty; expected a header t_s,rps and at least two "
                         f"{ALLOWED_ROWS}")
    header_line, header = lines[0]
    if tuple(cell.strip() for cell in next(csv.reader([header]))) != HEADER:
        raise TraceError(f"{path}, line {header_line}: the header is {header.strip()!r}; "
                         "expected 't_s,rps'")
    rows: list[tuple[float, float]] = []
    numbers: list[int] = []
    for number, line in lines[1:]:
        cells = [cell.strip() for cell in next(csv.reader([line]))]
        if len(cells) != 2:
            raise TraceError(f"{path}, line {number}: {line.strip()!r} has {len(cells)} "
                             f"values; expected 2 ({ALLOWED_ROWS})")
        rows.append((_number(path, number, "t_s", cells[0]),
                     _number(path, number, "rps", cells[1])))
        numbers.append(number)
    _check_rows(rows, lambda index: f"{path}, line {numbers[index]}")
    return Trace(path.stem, tuple(rows))


def _number(path: Path, line: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise TraceError(f"{path}, line {line}: {column} {cell!r} is not a number "
                         f"({ALLOWED_ROWS})")
    return value


def _check_rows(rows: Sequence[tuple[float, float]], where: Callable[[int], str]) -> None:
    """Raise TraceError at the first row that breaks the format; `where(i)` names row i."""
    if len(rows) < 2:
        raise TraceError(f"{where(max(len(rows) - 1, 0))}: a trace needs at least two rows "
                         "(a start at t_s 0 and an end)")
    previous = None
    for index, (t_s, rps) in enumerate(rows):
        if not (math.isfinite(t_s) and math.isfinite(rps)):
            raise TraceError(f"{where(index)}: ({t_s}, {rps}) is not a pair of numbers "
                             f"({ALLOWED_ROWS})")
        if index == 0 and t_s != 0:
            raise TraceError(f"{where(index)}: t_s {t_s:g}; the first row must start at t_s 0")
        if previous is not None and t_s <= previous:
            raise TraceError(f"{where(index)}: t_s {t_s:g} is not after the previous row's "
                             f"{previous:g}; t_s must be strictly increasing")
        if not 0 <= rps <= MAX_RPS:
            raise TraceError(f"{where(index)}: rps {rps:g} is outside 0 to {MAX_RPS:g}")
        previous = t_s


# -- built-in traces --------------------------------------------------------------------------

def _from_students(name: str, points: Sequence[tuple[float, float]], step_s: float) -> Trace:
    """Rows every `step_s` following the straight lines between `(t_s, students)` points."""
    rows: list[tuple[float, float]] = []
    for (t0, s0), (t1, s1) in pairwise(points):
        steps = max(1, round((t1 - t0) / step_s))
        for i in range(steps):
            # The rate of a step is the line's value at the step's middle, so a ramp's
            # requests add up to the same total as the straight line.
            mid = (i + 0.5) / steps
            students = s0 + (s1 - s0) * mid
            rows.append((t0 + (t1 - t0) * i / steps,
                         round(students / STUDENT_MESSAGE_INTERVAL_S, 4)))
    rows.append((points[-1][0], 0.0))
    return Trace(name, _merge_equal(rows))


def _merge_equal(rows: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Drops rows that repeat the previous rate (the end row is always kept)."""
    kept = [rows[0]]
    for row in rows[1:-1]:
        if row[1] != kept[-1][1]:
            kept.append(row)
    kept.append(rows[-1])
    return tuple(kept)


def surge() -> Trace:
    minute = 60.0
    base = 30.0
    points = [(0.0, base), (30 * minute, base), (35 * minute, base + 2000),
              (55 * minute, base + 2000)]
    # Decay with a 5-minute half-life over 25 minutes, drawn through one point a minute.
    for i in range(1, 25):
        points.append(((55 + i) * minute, base + 2000 * 0.5 ** (i / 5)))
    points += [(80 * minute, base), (120 * minute, base)]
    return _from_students("surge", points, step_s=10.0)


# Active students at each hour of the day, 0 h to 24 h.
_DAY = (120, 60, 30, 15, 15, 15, 30, 120, 400, 700, 850, 900, 600, 750, 900, 850, 700, 450,
        300, 350, 450, 500, 400, 250, 120)


def diurnal() -> Trace:
    return _from_students("diurnal", [(hour * 3600.0, float(students))
                                      for hour, students in enumerate(_DAY)], step_s=300.0)


# (start minute, length in minutes, students in the burst on top of the base).
_SPIKES = ((10, 2, 600), (24, 3, 1000), (33, 1, 1350), (48, 4, 800), (70, 8, 1200),
           (92, 2, 1350), (105, 3, 700))


def spiky() -> Trace:
    base = 150.0 / STUDENT_MESSAGE_INTERVAL_S
    rows = [(0.0, base)]
    for start, length, students in _SPIKES:
        rows.append((start * 60.0, base + students / STUDENT_MESSAGE_INTERVAL_S))
        rows.append(((start + length) * 60.0, base))
    rows.append((120 * 60.0, 0.0))
    return Trace("spiky", tuple(rows))


BUILTIN_TRACES: dict[str, Callable[[], Trace]] = {
    "surge": surge,
    "diurnal": diurnal,
    "spiky": spiky,
}
