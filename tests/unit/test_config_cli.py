"""`llmfleet check-config` accepts both kinds of config file and says which it read; the sandbox
commands merge their options over whichever file --config names."""

from pathlib import Path

import pytest

from llmfleet.cli import _config_from, _parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("path", "line"), [
    ("examples/sandbox.yaml", "examples/sandbox.yaml: valid sandbox config (demo-sandbox)"),
    ("stacks/Pulumi.university-prod.yaml",
     "stacks/Pulumi.university-prod.yaml: valid Pulumi stack file for stack university-prod"),
])
def test_check_config_says_which_kind_it_read(monkeypatch, capsys, path, line):
    monkeypatch.chdir(ROOT)
    assert main(["check-config", path]) == 0
    assert capsys.readouterr().out == line + "\n"


def test_check_config_names_every_bad_value_of_a_stack_file(tmp_path, capsys):
    stack = tmp_path / "Pulumi.acme-prod.yaml"
    stack.write_text("config:\n  llmfleet:client: Acme\n  llmfleet:fleet: {max_size: 0}\n")
    assert main(["check-config", str(stack)]) == 2
    err = capsys.readouterr().err
    assert "llmfleet:client: got \"Acme\"" in err
    assert "llmfleet:fleet.max_size: got 0" in err


def test_check_config_refuses_a_file_of_neither_kind_in_one_line(tmp_path, capsys):
    other = tmp_path / "compose.yaml"
    other.write_text("services:\n  web: {image: nginx}\n")
    assert main(["check-config", str(other)]) == 2
    err = capsys.readouterr().err
    assert err == (f"{other}: neither a sandbox config nor a Pulumi stack file: expected "
                   "top-level sections such as client, fleet, sandbox, as in "
                   "examples/sandbox.yaml, or llmfleet:<section> entries under a top-level "
                   "`config:`, as in stacks/Pulumi.example.yaml; found services\n")


@pytest.mark.parametrize("config", [
    "examples/sandbox.yaml", "stacks/Pulumi.startup-prod.yaml"])
def test_sandbox_options_win_over_either_kind_of_file(tmp_path, config):
    webhook = tmp_path / "webhook"
    args = _parser().parse_args([
        "up", "--config", str(ROOT / config), "--backends", "3", "--port", "9000",
        "--model", "org/model", "--slack-webhook-file", str(webhook)])
    merged = _config_from(args)
    assert (merged.sandbox.backends, merged.sandbox.edge_port) == (3, 9000)
    assert merged.model.name == "org/model"
    assert merged.alerts.slack_webhook_file == webhook.resolve()


def test_sandbox_options_keep_the_file_s_other_values():
    args = _parser().parse_args(["up", "--config", str(ROOT / "stacks/Pulumi.startup-prod.yaml"),
                                 "--backends", "1"])
    merged = _config_from(args)
    assert merged.model.served_name == "assistant"


def test_a_bad_option_is_named_with_its_source(capsys):
    assert main(["up", "--backends", "0", "--state-dir", "/nonexistent/never-used"]) == 2
    err = capsys.readouterr().err
    assert "built-in defaults with command-line options" in err
    assert "sandbox.backends: got 0" in err
