"""One loader for both config files: it tells a sandbox config from a Pulumi stack file by what
is in it, says which it read, and refuses in one line a file that is neither."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmfleet.config import (
    ConfigError,
    ConfigKind,
    FleetConfig,
    from_pulumi_config_env,
    load_config,
)
from llmfleet.config.errors import ConfigFileError

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def file_error(path: Path, **kwargs) -> str:
    with pytest.raises(ConfigFileError) as caught:
        load_config(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def test_a_sandbox_config_is_read_as_one():
    loaded = load_config(ROOT / "examples" / "sandbox.yaml")
    assert loaded.kind is ConfigKind.SANDBOX
    assert loaded.stack is None
    assert loaded.config.stack_name == "demo-sandbox"


def test_a_stack_file_is_read_as_pulumi_hands_it_to_the_program():
    loaded = load_config(STACKS / "Pulumi.startup-prod.yaml")
    assert loaded.kind is ConfigKind.STACK
    assert loaded.stack == "startup-prod"
    assert loaded.config.model.public_name == "assistant"
    assert [t.weight for t in loaded.config.fleet.instance_types] == [1, 2]


def test_the_stack_name_comes_from_the_file_name_as_for_pulumi():
    # The example configures client acme, environment prod, but is the stack `example`.
    loaded = load_config(STACKS / "Pulumi.example.yaml")
    assert (loaded.stack, loaded.config.stack_name) == ("example", "acme-prod")


@pytest.mark.parametrize("name", ["startup.yaml", "Pulumi.yaml"])
def test_a_stack_file_is_recognised_by_its_content_whatever_its_name(tmp_path, name):
    copy = tmp_path / name
    shutil.copy(STACKS / "Pulumi.startup-prod.yaml", copy)
    loaded = load_config(copy)
    assert loaded.kind is ConfigKind.STACK
    assert loaded.stack == "startup-prod"  # <client>-<environment>, lacking a Pulumi.<stack> name


def test_a_sandbox_config_named_like_a_stack_file_is_still_a_sandbox_config(tmp_path):
    path = write(tmp_path, "Pulumi.acme-prod.yaml", "client: acme\nenvironment: prod\n")
    assert load_config(path).kind is ConfigKind.SANDBOX


def test_scalars_arrive_as_strings_as_pulumi_passes_them(tmp_path):
    # Pulumi hands `llmfleet:client: "123"` to the program as the string 123, which is
    # decoded as JSON; the file loader must see the same value the program does.
    path = write(tmp_path, "Pulumi.s.yaml", 'config:\n  llmfleet:client: "123"\n')
    with pytest.raises(ConfigError, match=r"llmfleet:client: got 123; must be a valid string"):
        load_config(path)


def test_no_file_means_the_built_in_defaults():
    loaded = load_config(None)
    assert (loaded.kind, loaded.config) == (ConfigKind.SANDBOX, FleetConfig())


def test_an_empty_file_is_a_sandbox_config_with_every_default(tmp_path):
    loaded = load_config(write(tmp_path, "empty.yaml", "# nothing set\n"))
    assert (loaded.kind, loaded.config) == (ConfigKind.SANDBOX, FleetConfig())


@pytest.mark.parametrize(("text", "says"), [
    ("services:\n  web: {image: nginx}\nversion: '3'\n", "found services, version"),
    ("- client: acme\n", "its top level is a list, not a mapping"),
    ("just words\n", "its top level is a string, not a mapping"),
    ("llmfleet:client: acme\naws:region: us-east-1\n",
     "namespace:key entries (llmfleet:client, aws:region) go under a top-level `config:`"),
])
def test_a_file_that_is_neither_kind_is_refused_in_one_line(tmp_path, text, says):
    message = file_error(write(tmp_path, "other.yaml", text))
    assert "neither a sandbox config nor a Pulumi stack file" in message
    assert says in message


@pytest.mark.parametrize("text", [
    "config:\n  aws:region: us-east-1\n",
    "config: {}\n",
    "encryptionsalt: v1:abc:def\n",  # what `pulumi stack init` leaves before any config
])
def test_a_stack_file_without_llmfleet_keys_is_refused_rather_than_read_as_defaults(
        tmp_path, text):
    message = file_error(write(tmp_path, "Pulumi.acme-prod.yaml", text))
    assert "a Pulumi stack file without llmfleet: keys" in message
    assert "llmfleet:client and llmfleet:environment" in message


def test_a_stack_file_whose_config_is_not_a_mapping_is_refused(tmp_path):
    message = file_error(write(tmp_path, "Pulumi.a-b.yaml", "config:\n  - llmfleet:client\n"))
    assert "its `config:` is a list" in message


def test_misspelled_namespaces_and_keys_are_reported_with_every_bad_value(tmp_path):
    path = write(tmp_path, "Pulumi.acme-prod.yaml", (
        "config:\n"
        "  aws:region: us-east-1\n"  # a provider's: not ours, not reported
        "  kubernetes:context: x\n"
        "  llmfleet:client: acme\n"
        "  llmflet:fleet: {max_size: 4}\n"
        "  LLMFleet:edge: {allowed_cidrs: ['0.0.0.0/0']}\n"
        "  llmfleet:fleets: {max_size: 4}\n"
        "  llmfleet:load_balancing: {strategy: fastest}\n"
        "  network: {nat: true}\n"
    ))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    found = {issue.key: issue.problem for issue in caught.value.issues}
    assert set(found) == {"config.network", "llmflet:fleet", "LLMFleet:edge", "llmfleet:fleets",
                          "llmfleet:load_balancing.strategy"}
    assert "did you mean llmfleet:fleet?" in found["llmflet:fleet"]
    assert "did you mean llmfleet:edge?" in found["LLMFleet:edge"]
    assert "did you mean llmfleet:network?" in found["config.network"]
    assert "unknown key" in found["llmfleet:fleets"]


def test_the_pulumi_program_also_refuses_a_near_miss_of_its_namespace():
    with pytest.raises(ConfigError, match="did you mean llmfleet:fleet"):
        from_pulumi_config_env({"llmfleet:client": "acme",
                                "llmfeet:fleet": json.dumps({"max_size": 4})}, "acme-prod")


def test_a_required_kind_refuses_the_other_before_validating(tmp_path):
    message = file_error(ROOT / "examples" / "sandbox.yaml", kind=ConfigKind.STACK)
    assert "this is a sandbox config, but a Pulumi stack file is needed here" in message
    message = file_error(STACKS / "Pulumi.example.yaml", kind=ConfigKind.SANDBOX)
    assert "this is a Pulumi stack file, but a sandbox config is needed here" in message
    # Even an invalid sandbox config is named for its kind first.
    bad = write(tmp_path, "bad.yaml", "fleet: {max_size: 0}\n")
    assert "this is a sandbox config" in file_error(bad, kind=ConfigKind.STACK)


@pytest.mark.parametrize(("name", "text"), [
    ("sandbox.yaml", "sandbox:\n  backends: 3\n  edge_port: 9000\nmodel: {name: a/b}\n"),
    ("Pulumi.a-b.yaml",
     "config:\n  llmfleet:sandbox: {backends: 3, edge_port: 9000}\n"
     "  llmfleet:model: {name: a/b}\n"),
])
def test_overrides_win_over_the_file_and_keep_its_other_keys(tmp_path, name, text):
    path = write(tmp_path, name, text)
    config = load_config(path, {"sandbox": {"backends": 5}, "alerts": {"rate_window_s": 30}}).config
    assert (config.sandbox.backends, config.sandbox.edge_port) == (5, 9000)
    assert config.model.name == "a/b"
    assert config.alerts.rate_window_s == 30


def test_an_override_never_hides_a_bad_section_in_the_file(tmp_path):
    path = write(tmp_path, "sandbox.yaml", "sandbox: 3\n")
    with pytest.raises(ConfigError, match=r"with command-line options") as caught:
        load_config(path, {"sandbox": {"backends": 2}})
    assert [issue.key for issue in caught.value.issues] == ["sandbox"]


def test_files_that_cannot_be_read_are_one_line(tmp_path):
    assert "No such file" in file_error(tmp_path / "absent.yaml")
    assert "not valid YAML at line 2, column 9: mapping values are not allowed" in file_error(
        write(tmp_path, "broken.yaml", "client: acme\nmodel: a: b\n"))
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(b"\xff\xfe\x00binary")
    assert "not a text file" in file_error(binary)
