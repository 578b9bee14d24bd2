"""Facts about the host under test, and a sandbox to test when none is named.

The checks in this folder use testinfra's `host` fixture, so they run unchanged against this
machine (`local://`, the default) or a deployed edge (`--hosts=ssh://...`), given that host's
facts: the JSON of `llmfleet status --json` or an equivalent file for an AWS edge, named with
`--host-facts FILE`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmfleet.config import validate
from llmfleet.local.sandbox import down, up
from llmfleet.local.sandbox.ports import free_port


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--host-facts", default=None,
                     help="JSON facts of the host to check (default: start a sandbox here)")


@pytest.fixture(scope="module")
def facts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, Any]]:
    named = request.config.getoption("--host-facts")
    if named:
        yield json.loads(Path(named).read_text())
        return
    state_dir = tmp_path_factory.mktemp("host-sandbox")
    config = validate({"sandbox": {"edge_port": free_port(), "base_port": free_port()}}, "test")
    try:
        yield up(config, state_dir, edge_port_explicit=True).to_json()
    finally:
        down(state_dir)
