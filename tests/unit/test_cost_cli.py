"""`llmfleet cost` reads a stack file as Pulumi would and prints its hourly cost."""

import json
from pathlib import Path

import pytest

from llmfleet.cli import main
from llmfleet.config import ConfigError, load_stack_file

STACKS = Path(__file__).resolve().parents[2] / "stacks"


def test_stack_files_load_as_pulumi_hands_them_to_the_program():
    config = load_stack_file(STACKS / "Pulumi.university-prod.yaml")
    assert config.stack_name == "university-prod"
    assert config.fleet.instance_types[0].type.startswith("g4dn")


def test_cost_prints_min_typical_and_max(capsys):
    assert main(["cost", str(STACKS / "Pulumi.startup-prod.yaml"), "--json"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert set(estimate) == {"min", "typical", "max"}
    assert 0 < estimate["min"]["usd_per_hour"] <= estimate["typical"]["usd_per_hour"] \
        <= estimate["max"]["usd_per_hour"]


def test_a_bad_stack_file_names_its_keys(tmp_path, capsys):
    stack = tmp_path / "Pulumi.acme-prod.yaml"
    stack.write_text("config:\n  llmfleet:fleet:\n    max_size: 0\n")
    with pytest.raises(ConfigError, match=r"llmfleet:fleet.max_size: got 0"):
        load_stack_file(stack)
    assert main(["cost", str(stack)]) == 2
    assert "llmfleet:fleet.max_size" in capsys.readouterr().err
