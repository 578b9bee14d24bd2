"""What every `llmfleet` command shares: --version, the exit codes in each --help, --json where
a command reports, and bad options refused as usage errors (exit 2) naming what is allowed."""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version

import pytest

from llmfleet import cli
from llmfleet.gateway.keys import KeyStore


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {n}": s for n, s in subcommands(sub).items()})
    return found


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"llmfleet {version('llmfleet')}"


def test_every_commands_help_says_what_its_exit_codes_mean():
    parser = cli._parser()
    helps = {"llmfleet": parser.format_help(),
             **{name: sub.format_help() for name, sub in subcommands(parser).items()}}
    assert {"up", "down", "keys", "keys revoke", "keys export", "sweep", "top"} <= set(helps)
    for name, text in helps.items():
        assert "exit codes: 0 done, 1 failed" in text and "2 bad usage" in text, name


@pytest.mark.parametrize("interval", ["0", "-1", "5000", "soon"])
def test_top_refuses_an_interval_out_of_range_as_bad_usage(interval, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["top", "--interval", interval, "--once"])
    assert done.value.code == 2
    assert "--interval" in capsys.readouterr().err


def test_check_config_and_down_answer_json(tmp_path, capsys):
    assert cli.main(["check-config", "examples/sandbox.yaml", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "file": "examples/sandbox.yaml", "valid": True, "kind": "sandbox config",
        "stack": "demo-sandbox"}
    assert cli.main(["down", "--state-dir", str(tmp_path / "none"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stopped"] == 0


def test_keys_revoke_and_set_tier_answer_the_record_as_json(redis_port, redis_db, capsys):
    key, _ = KeyStore(redis_db, {"free", "paid", "enterprise"}).create("acme", "free")
    url = ["keys", "--redis-url", f"redis://127.0.0.1:{redis_port}/0"]

    assert cli.main([*url, "set-tier", key, "paid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tier"] == "paid"
    assert cli.main([*url, "revoke", key, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["revoked"] is True and record["client"] == "acme"
    assert key not in json.dumps(record)  # the record, never the key
