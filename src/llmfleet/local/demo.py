"""The main job on the sandbox: bring it up, show API keys and limits at work, send a short
burst of traffic, print the report, and say how to reach the endpoint and how to stop it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from llmfleet.config import FleetConfig
from llmfleet.local.loadgen import LoadReport, LoadSpec, run_load_sync
from llmfleet.local.sandbox import SandboxStatus, status, up
from llmfleet.local.sandbox.auth import key_store


@dataclass(frozen=True)
class DemoResult:
    sandbox: SandboxStatus
    load: LoadReport
    demo_key: str | None
    model: str


def run_demo(config: FleetConfig, state_dir: Path, *, requests: int, concurrency: int,
             edge_port_explicit: bool, say: Callable[[str], None]) -> DemoResult:
    report = status(state_dir)
    if report.running:
        say(f"using the sandbox already running at {report.endpoint}")
    else:
        report = up(config, state_dir, edge_port_explicit=edge_port_explicit, say=say)
    endpoint = report.endpoint or ""
    demo_key = None
    if report.service("gateway"):
        store = key_store(state_dir)
        demo_key, record = store.create("demo", _tier(store.tiers, "enterprise"))
        say(f"created API key {record.id} for client 'demo' on tier {record.tier}")
        _show_a_free_key_hitting_its_limit(endpoint, store, say)
    say(f"sending {requests} streaming chat requests, {concurrency} at a time")
    load = run_load_sync(LoadSpec(url=endpoint, api_key=demo_key, requests=requests,
                                  concurrency=concurrency, max_duration_s=120))
    models = _get_with_headers(endpoint + "/v1/models", demo_key)[1]
    return DemoResult(report, load, demo_key, json.loads(models)["data"][0]["id"])


def closing_words(result: DemoResult) -> str:
    endpoint, key = result.sandbox.endpoint, result.demo_key
    auth = f" \\\n    -H 'Authorization: Bearer {key}'" if key else ""
    keys_help = ("\n  .venv/bin/llmfleet keys create --client you --tier free  # a key of your own"
                 if key else "")
    return f"""
The API is up at {endpoint}/v1 (OpenAI-compatible). Try:
  curl -s {endpoint}/v1/chat/completions -H 'content-type: application/json'{auth} \\
    -d '{{"model": "{result.model}", "messages": [{{"role": "user", "content": "Hello"}}]}}'
  .venv/bin/llmfleet status            # what runs, and the log files{keys_help}
  .venv/bin/llmfleet load -n 200 -c 20 --api-key KEY   # more traffic
Stop it with:
  .venv/bin/llmfleet down"""


def _show_a_free_key_hitting_its_limit(endpoint: str, store: Any,
                                       say: Callable[[str], None]) -> None:
    tiers = store.tiers
    if "free" not in tiers:
        return
    key, _ = store.create("demo-free", "free")
    statuses = []
    retry_after = None
    for _ in range(11):
        code, _, headers = _get_with_headers(endpoint + "/v1/models", key)
        statuses.append(code)
        if code == 429:
            retry_after = headers.get("Retry-After")
            break
    admitted = statuses.count(200)
    outcome = (f"then {statuses[-1]} (Retry-After: {retry_after} s)" if retry_after
               else "and no refusal")
    say(f"a free-tier key: {admitted} requests admitted, {outcome}")


def _tier(tiers: set[str], preferred: str) -> str:
    return preferred if preferred in tiers else sorted(tiers)[0]


def _get_with_headers(url: str, key: str | None) -> tuple[int, str, dict[str, str]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urlopen(Request(url, headers=headers), timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)
