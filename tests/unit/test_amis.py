"""`llmfleet amis`: each role's pin against what its SSM parameter names today (moto), and
`--write` pinning today's ids in the stack file without touching anything else in it."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws

from llmfleet import cli
from llmfleet.config import ConfigKind, load_config

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
# Public AMI parameters live under /aws/service/, which moto (like AWS) will not let anyone
# write: the copies point each role at a parameter of the test's own.
PARAMETERS = {"edge": "/team/edge-ami", "gpu_node": "/team/gpu-ami",
              "monitor": "/team/monitor-ami"}
TODAY = {"edge": "ami-0aaaaaaaaaaaaaaa1", "gpu_node": "ami-0bbbbbbbbbbbbbbb2",
         "monitor": "ami-0ccccccccccccccc3"}


def stack_copy(tmp_path: Path, stack: str) -> Path:
    """The stack file with each role's parameter replaced: line by line where the file names
    it (the example, comments kept), else set in the YAML (comments lost)."""
    text = (REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    sections = data["config"]
    if all("ami_parameter" in (sections.get(f"llmfleet:{r}") or {}) for r in PARAMETERS):
        for role, parameter in PARAMETERS.items():
            old = sections[f"llmfleet:{role}"]["ami_parameter"]
            text = text.replace(f"    ami_parameter: {'null' if old is None else old}\n",
                                f"    ami_parameter: {parameter}\n", 1)
    else:
        for role, parameter in PARAMETERS.items():
            sections[f"llmfleet:{role}"] = {**(sections.get(f"llmfleet:{role}") or {}),
                                            "ami_parameter": parameter}
        text = yaml.safe_dump(data, sort_keys=False)
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def ssm():
    with mock_aws():
        client = boto3.client("ssm", region_name=REGION)
        for role, parameter in PARAMETERS.items():
            client.put_parameter(Name=parameter, Value=TODAY[role], Type="String")
        yield client


def amis(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["amis", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_unpinned_roles_are_listed_with_todays_ids_and_the_command_to_pin(ssm, tmp_path, capsys):
    path = stack_copy(tmp_path, "example")
    before = path.read_text(encoding="utf-8")

    code, out, _ = amis(capsys, str(path), "--json")
    assert code == 0
    listed = {p["role"]: p for p in json.loads(out)}
    assert {r: p["today"] for r, p in listed.items()} == TODAY
    assert all(p["pinned"] is None and not p["current"] for p in listed.values())
    code, out, _ = amis(capsys, str(path))
    assert "3 not pinned" in out and f"llmfleet amis {path} --write" in out
    assert path.read_text(encoding="utf-8") == before, "listing writes nothing"


def test_write_pins_todays_ids_and_keeps_every_other_line(ssm, tmp_path, capsys):
    path = stack_copy(tmp_path, "example")
    before = path.read_text(encoding="utf-8")

    code, out, _ = amis(capsys, str(path), "--write")
    assert code == 0 and "pinned 3 AMIs" in out
    after = path.read_text(encoding="utf-8")
    config = load_config(path, kind=ConfigKind.STACK).config
    assert {role: config.images.ami(REGION, role) for role in TODAY} == TODAY
    # Only the amis entry changed: every comment and every other value is as it was.
    removed = set(before.splitlines()) - set(after.splitlines())
    assert removed == {"    amis: {}"}
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    new["config"]["llmfleet:images"]["amis"] = {}
    assert new == old

    # Pinned now: a second look finds them current; a newer image shows as newer.
    code, out, _ = amis(capsys, str(path))
    assert out.count("pinned, current") == 3
    ssm.put_parameter(Name=PARAMETERS["gpu_node"], Value="ami-0ddddddddddddddd4",
                      Type="String", Overwrite=True)
    code, out, _ = amis(capsys, str(path))
    assert f"pinned {TODAY['gpu_node']}, newer exists" in out


def test_a_stack_without_an_images_section_gets_one(ssm, tmp_path, capsys):
    path = stack_copy(tmp_path, "university-prod")
    assert "llmfleet:images" not in path.read_text(encoding="utf-8")

    code, _, _ = amis(capsys, str(path), "--write")
    assert code == 0
    config = load_config(path, kind=ConfigKind.STACK).config
    assert config.images.ami(REGION, "edge") == TODAY["edge"]


def test_a_file_it_cannot_edit_safely_is_left_alone_with_the_yaml_to_paste(ssm, tmp_path,
                                                                            capsys):
    path = stack_copy(tmp_path, "university-prod")
    path.write_text(path.read_text(encoding="utf-8") + "  llmfleet:images: {keep_last: 5}\n",
                    encoding="utf-8")
    before = path.read_text(encoding="utf-8")

    code, _, err = amis(capsys, str(path), "--write")
    assert code == 1
    assert "nothing written" in err and "amis:" in err
    assert path.read_text(encoding="utf-8") == before


def test_a_missing_parameter_is_one_line_naming_it(ssm, tmp_path, capsys):
    path = stack_copy(tmp_path, "example")
    ssm.delete_parameter(Name=PARAMETERS["edge"])

    code, out, err = amis(capsys, str(path))
    assert code == 1 and out == ""
    assert f"edge: SSM parameter {PARAMETERS['edge']} does not exist in {REGION}" in err
    assert "Traceback" not in err
