"""`llmfleet keys` against a running sandbox, as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

LLMFLEET = str(Path(sys.executable).with_name("llmfleet"))


def keys(state_dir: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LLMFLEET, "keys", "--state-dir", state_dir, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_create_list_set_tier_and_revoke(start_sandbox):
    box = start_sandbox()
    state = box["state_dir"]
    created = keys(state, "create", "--client", "uni", "--tier", "free", "--json")
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    raw = record["key"]
    assert raw.startswith("sk-lf-") and record["tier"] == "free"
    auth = {"Authorization": f"Bearer {raw}"}
    assert requests.get(box["endpoint"] + "/v1/models", headers=auth, timeout=10).ok

    listed = keys(state, "list", "--json")
    assert raw not in listed.stdout  # the key is printed once, at creation, and never again
    ids = {r["client"]: r["id"] for r in json.loads(listed.stdout)}
    assert ids["uni"] == record["id"]

    moved = keys(state, "set-tier", record["id"], "paid")
    assert moved.returncode == 0 and "paid" in moved.stdout
    response = requests.get(box["endpoint"] + "/v1/models", headers=auth, timeout=10)
    assert response.headers["x-ratelimit-limit-requests"] == "60"

    revoked = keys(state, "revoke", raw)
    assert revoked.returncode == 0 and record["id"] in revoked.stdout
    assert requests.get(box["endpoint"] + "/v1/models", headers=auth, timeout=10).status_code \
        == 401
    table = keys(state, "list")
    assert "revoked" in table.stdout and raw not in table.stdout


def test_bad_requests_are_named(start_sandbox, tmp_path):
    box = start_sandbox()
    state = box["state_dir"]
    wrong_tier = keys(state, "create", "--client", "uni", "--tier", "gold")
    assert wrong_tier.returncode == 2
    assert "tier 'gold' is not configured; allowed: enterprise, free, paid" in wrong_tier.stderr
    bad_override = keys(state, "create", "--client", "uni", "--tier", "free", "--requests", "0")
    assert bad_override.returncode == 2 and "--requests" in bad_override.stderr
    unknown = keys(state, "revoke", "abcdef0123")
    assert unknown.returncode == 2 and "no key matches" in unknown.stderr
    nowhere = keys(str(tmp_path / "nothing"), "list")
    assert nowhere.returncode == 2 and "llmfleet up" in nowhere.stderr
