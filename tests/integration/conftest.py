"""A real sandbox per test: simulated vLLM backends and nginx on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmfleet.config import validate
from llmfleet.sandbox import down, up
from llmfleet.sandbox.ports import free_port

StartSandbox = Callable[..., dict[str, Any]]


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[StartSandbox]:
    """Start sandboxes with config overrides; all of them are stopped when the test ends,
    also when it fails."""
    started: list[Path] = []

    def start(name: str = "sandbox", **sections: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {k: dict(v) for k, v in sections.items()}
        sandbox = data.setdefault("sandbox", {})
        sandbox.setdefault("edge_port", free_port())
        sandbox.setdefault("base_port", free_port())
        state_dir = tmp_path / name
        started.append(state_dir)
        return up(validate(data, "test"), state_dir, edge_port_explicit=True)

    yield start
    for state_dir in started:
        down(state_dir)
