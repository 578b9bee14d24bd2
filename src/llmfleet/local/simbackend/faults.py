"""Fault injection: make a backend slow, hung, unavailable or dead on demand (for tests).

Modes (set with `POST /_sim/fault`, read with `GET /_sim/fault`):

- `none`: normal service.
- `slow` (`factor`, default 5): every engine step takes `factor` times longer, from the moment
  the mode is set (the step in flight is re-timed), until the mode changes.
- `hang`: API requests are accepted but get no answer, and running streams stop producing tokens,
  until the mode changes; then everything resumes. `/health` and `/metrics` keep answering, as a
  real vLLM with a stuck GPU does, so only request timeouts reveal the fault.
- `unavailable`: API requests and `/health` answer 503 with vLLM's error shape; `/metrics` keeps
  answering; requests already running finish normally.
- `unhealthy`: `/health` answers 503 while API requests are served as usual: a node whose
  health check fails although it still works (the edge must take it out all the same).
- `exit` (`code`, default 1): the process exits at once with that code after answering.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FAULT_MODES: tuple[str, ...] = ("none", "slow", "hang", "unavailable", "unhealthy", "exit")
DEFAULT_SLOW_FACTOR = 5.0
DEFAULT_EXIT_CODE = 1


@dataclass(frozen=True)
class Fault:
    """One fault setting."""

    mode: str = "none"
    factor: float = 1.0  # step-time multiplier; only "slow" uses it
    code: int = DEFAULT_EXIT_CODE  # only "exit" uses it

    def to_json(self) -> dict[str, Any]:
        """The setting as `GET /_sim/fault` reports it."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.mode == "slow":
            out["factor"] = self.factor
        if self.mode == "exit":
            out["code"] = self.code
        return out


def parse_fault(body: object) -> Fault:
    """Validate a `POST /_sim/fault` body; ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError('body must be a JSON object like {"mode": "none"}')
    mode = body.get("mode")
    if mode not in FAULT_MODES:
        raise ValueError(f"mode must be one of {', '.join(FAULT_MODES)}")
    if mode == "slow":
        factor = body.get("factor", DEFAULT_SLOW_FACTOR)
        if (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not math.isfinite(factor)
            or factor <= 0
        ):
            raise ValueError("factor must be a positive number")
        return Fault("slow", factor=float(factor))
    if mode == "exit":
        code = body.get("code", DEFAULT_EXIT_CODE)
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
            raise ValueError("code must be an integer from 0 to 255")
        return Fault("exit", code=code)
    return Fault(mode)


class FaultState:
    """The current fault, and a way to wait until a hang is lifted."""

    def __init__(self) -> None:
        self.current = Fault()
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every change (the engine loop re-times its step)."""
        self._listeners.append(listener)

    def set(self, fault: Fault) -> None:
        """Switch to `fault` and wake everything waiting on the previous one."""
        self.current = fault
        # A fresh Event per change: waiters of the old one wake, new waiters block again.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in self._listeners:
            listener()

    @property
    def mode(self) -> str:
        """The current mode name."""
        return self.current.mode

    @property
    def slow_factor(self) -> float:
        """How much longer each engine step takes right now."""
        return self.current.factor if self.current.mode == "slow" else 1.0

    async def wait_while_hung(self) -> None:
        """Return at once unless mode is "hang"; otherwise when it changes to something else."""
        while self.current.mode == "hang":
            await self._changed.wait()
