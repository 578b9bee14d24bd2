"""`llmfleet cost` reads a stack file as Pulumi would and prints its hourly cost; anything else
is refused with exit 2 instead of pricing the built-in defaults."""

import json
from pathlib import Path

import pytest

from llmfleet.cli import main
from llmfleet.config import ConfigError, ConfigKind, load_config

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"


def test_stack_files_load_as_pulumi_hands_them_to_the_program():
    loaded = load_config(STACKS / "Pulumi.university-prod.yaml")
    assert loaded.kind is ConfigKind.STACK
    assert loaded.config.stack_name == "university-prod"
    assert loaded.config.fleet.instance_types[0].type.startswith("g4dn")


def test_cost_prints_min_typical_and_max(capsys):
    assert main(["cost", str(STACKS / "Pulumi.startup-prod.yaml"), "--json"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert set(estimate) == {"min", "typical", "max", "on_share", "pkr_per_usd"}
    assert set(estimate["min"]) == {"gpu_units", "usd_per_hour", "usd_per_month",
                                    "pkr_per_month", "usd_per_month_scheduled",
                                    "pkr_per_month_scheduled", "lines"}
    assert set(estimate["min"]["lines"][0]) == {"item", "count", "usd_per_hour"}
    assert 0 < estimate["min"]["usd_per_hour"] <= estimate["typical"]["usd_per_hour"] \
        <= estimate["max"]["usd_per_hour"]


def test_a_bad_stack_file_names_its_keys(tmp_path, capsys):
    stack = tmp_path / "Pulumi.acme-prod.yaml"
    stack.write_text("config:\n  llmfleet:fleet:\n    max_size: 0\n")
    with pytest.raises(ConfigError, match=r"llmfleet:fleet.max_size: got 0"):
        load_config(stack)
    assert main(["cost", str(stack)]) == 2
    assert "llmfleet:fleet.max_size" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "says"), [
    # A sandbox config validates, but it describes the sandbox, not a deployment.
    ("client: acme\nfleet: {max_size: 4}\n",
     "this is a sandbox config, but a Pulumi stack file is needed here"),
    ("config:\n  aws:region: us-east-1\n", "a Pulumi stack file without llmfleet: keys"),
    ("config:\n  llmfleet:client: acme\n  llmflet:fleet: {max_size: 4}\n",
     "did you mean llmfleet:fleet?"),
    ("config:\n  llmfleet:client: acme\n  llmfleet:fleets: {max_size: 4}\n",
     "llmfleet:fleets: got"),
    ("config:\n  llmfleet:client: acme\n  fleet: {max_size: 4}\n",
     "did you mean llmfleet:fleet?"),
    ("services: {web: {}}\n", "neither a sandbox config nor a Pulumi stack file"),
])
def test_cost_refuses_what_is_not_a_valid_stack_file_instead_of_pricing_defaults(
        tmp_path, capsys, text, says):
    path = tmp_path / "Pulumi.acme-prod.yaml"
    path.write_text(text)
    assert main(["cost", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert says in captured.err


def test_cost_refuses_the_sandbox_example(capsys):
    assert main(["cost", str(ROOT / "examples" / "sandbox.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "sandbox config" in err and "Pulumi stack file" in err
