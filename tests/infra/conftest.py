"""Run the Pulumi program in infra/ in-process against recording mocks.

No Pulumi CLI, provider plugin or AWS account is involved: `pulumi.runtime.set_mocks` answers
every resource registration, and the program runs the way the Pulumi CLI's Python host runs it
(`runpy.run_path` on the `main:` directory, as `__main__`).
"""

from __future__ import annotations

import asyncio
import runpy
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import pulumi
import pulumi.runtime
import pytest
from pulumi.runtime.settings import reset_options

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
PROJECT = "llmfleet"


class Registered(NamedTuple):
    """One resource the program asked Pulumi to create; compares equal to a plain tuple."""

    type: str
    name: str
    inputs: dict[str, Any]


class RecordingMocks(pulumi.runtime.Mocks):
    """Stands in for the engine and every provider, and keeps each registration."""

    def __init__(self) -> None:
        self.registered: list[Registered] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.registered.append(Registered(args.typ, args.name, dict(args.inputs)))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> NoReturn:
        # Nothing in infra/ calls a provider function yet; an empty answer would only surface
        # later as a confusing KeyError, so say which call needs a mock.
        raise NotImplementedError(f"no mock for provider function {args.token}")


class Program:
    """Runs infra/ once under the mocks and hands back its stack exports as plain values."""

    def __init__(self, mocks: RecordingMocks) -> None:
        self.mocks = mocks

    def run(self, config_env: Mapping[str, str], stack: str) -> dict[str, Any]:
        """Run with `config_env` as the stack config (flat keys, JSON strings) of `stack`."""
        # Config and mocks first: the program reads both at import time.
        pulumi.runtime.set_all_config(dict(config_env), [])
        pulumi.runtime.set_mocks(self.mocks, project=PROJECT, stack=stack, preview=False)
        resolved: list[dict[str, Any]] = []

        @pulumi.runtime.test
        def program() -> pulumi.Output:
            runpy.run_path(str(INFRA), run_name="__main__")
            exports = pulumi.runtime.get_root_resource().outputs
            return pulumi.Output.all(**exports).apply(resolved.append)

        # The decorator awaits the returned chain and every outstanding registration, and
        # re-raises what the program raised only after that, so `mocks.registered` is complete
        # whether the run succeeded or not.
        program()
        # The guard: tests assert on these plain values outside any apply. Had the apply not run
        # (the program never ran, or a value stayed unknown as in a preview), this fails rather
        # than a test passing silently.
        assert len(resolved) == 1, "the stack exports were never resolved"
        return resolved[0]


def _reset_pulumi_runtime() -> None:
    # The root stack resource, the settings (monitor, project, stack, preview) and the config
    # map are module-level ContextVars, and pytest runs every test in one context: reset them
    # all. `deployment` is dropped so each run imports infra/ afresh, as a new process would.
    reset_options()
    pulumi.runtime.set_all_config({}, [])
    sys.modules.pop("deployment", None)


@pytest.fixture(autouse=True)
def fresh_pulumi_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and leaves Pulumi's globals pristine, so test order never matters."""
    # The CLI passes config in PULUMI_CONFIG; one left in the shell would leak into every run.
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    # Pulumi creates futures on the thread's current loop as soon as set_mocks registers the
    # root stack, and an earlier asyncio.run() (in any test) leaves the thread without one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _reset_pulumi_runtime()
    yield
    _reset_pulumi_runtime()
    loop.run_until_complete(loop.shutdown_default_executor())
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def mocks() -> RecordingMocks:
    return RecordingMocks()


@pytest.fixture
def program(mocks: RecordingMocks) -> Program:
    return Program(mocks)
