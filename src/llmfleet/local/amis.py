"""`llmfleet amis STACK_FILE`: the AMI each role of a stack launches, pinned against what its
public SSM parameter names today; `--write` pins today's ids in the stack file.

The stack file is edited in place, only the `amis:` entry of `llmfleet:images` (added when
missing), so its comments stay; the result is read back and compared before it replaces the
file, and a file this cannot edit safely is left alone with the YAML to paste by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from llmfleet.config import ConfigKind, FleetConfig, load_config
from llmfleet.errors import LlmfleetError

IMAGES_KEY = "llmfleet:images"


@dataclass(frozen=True)
class AmiPin:
    role: str
    parameter: str
    pinned: str | None
    today: str

    @property
    def current(self) -> bool:
        return self.pinned == self.today


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stack_file", type=Path,
                        help="a Pulumi stack file, stacks/Pulumi.<client>-<env>.yaml")
    parser.add_argument("--region", help="default: the stack file's aws:region")
    parser.add_argument("--write", action="store_true",
                        help="pin today's ids in the stack file (then `pulumi up` to roll them "
                             "out: the groups refresh their instances)")
    parser.add_argument("--json", action="store_true", help="one JSON list on stdout")


def role_parameters(config: FleetConfig) -> dict[str, str]:
    """Each role's public SSM parameter, for the roles this stack runs."""
    roles = {"edge": config.edge.ami_parameter, "gpu_node": config.gpu_node.ami_parameter}
    if config.monitor.enabled:
        roles["monitor"] = config.monitor.image_parameter
    return roles


def look_up(config: FleetConfig, region: str, session: Any) -> list[AmiPin]:
    ssm = session.client("ssm", region_name=region)
    pins = []
    for role, parameter in role_parameters(config).items():
        try:
            today = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            raise LlmfleetError(f"{role}: SSM parameter {parameter} does not exist in "
                                f"{region}") from None
        pins.append(AmiPin(role, parameter, config.images.ami(region, role), today))
    return pins


def run(args: argparse.Namespace) -> int:
    import boto3

    loaded = load_config(args.stack_file, kind=ConfigKind.STACK)
    data = yaml.safe_load(args.stack_file.read_text(encoding="utf-8")) or {}
    region = args.region or (data.get("config") or {}).get("aws:region")
    if not region:
        raise LlmfleetError(f"{args.stack_file}: no aws:region; pass --region")
    pins = look_up(loaded.config, region, boto3.session.Session())
    if args.write:
        write_pins(args.stack_file, region, {p.role: p.today for p in pins})
    if args.json:
        print(json.dumps([{**asdict(p), "current": p.current, "region": region} for p in pins],
                         indent=2))
        return 0
    for p in pins:
        state = ("pinned, current" if p.current else
                 "not pinned" if p.pinned is None else f"pinned {p.pinned}, newer exists")
        print(f"{p.role:<9} {p.today}  {state}  ({p.parameter})")
    stale = [p for p in pins if not p.current]
    if args.write:
        print(f"{args.stack_file}: pinned {len(pins)} AMIs for {region}; `pulumi up` rolls "
              "them out (the groups refresh their instances)")
    elif stale:
        print(f"{len(stale)} not pinned to today's image: "
              f"llmfleet amis {args.stack_file} --write")
    return 0


def write_pins(path: Path, region: str, ids: dict[str, str]) -> None:
    """Set `llmfleet:images.amis.<region>` to `ids` in the stack file, keeping the rest of the
    file as written; refuse (changing nothing) when the edit would not read back as intended."""
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    config = data.get("config") or {}
    images = dict(config.get(IMAGES_KEY) or {})
    amis = {**(images.get("amis") or {}), region: ids}
    wanted = {**data, "config": {**config, IMAGES_KEY: {**images, "amis": amis}}}
    edited = _edit(text, amis)
    if edited is None or yaml.safe_load(edited) != wanted:
        snippet = yaml.safe_dump({"amis": amis}, default_flow_style=False)
        raise LlmfleetError(
            f"{path}: cannot place the pins safely in this file; nothing written. Put this "
            f"under {IMAGES_KEY}:\n{snippet}")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(edited)
    os.replace(temporary, path)


def _edit(text: str, amis: dict[str, dict[str, str]]) -> str | None:
    lines = text.splitlines(keepends=True)
    block = ["    amis:\n"] + [
        line for region, ids in amis.items()
        for line in [f"      {region}:\n"] + [f"        {role}: {ami}\n"
                                              for role, ami in ids.items()]]
    start = _line_of(lines, rf"^  {re.escape(IMAGES_KEY)}:\s*(#.*)?$")
    if start is None:
        # No images section yet: one at the end of `config:`, when that is the last mapping.
        config_at = _line_of(lines, r"^config:\s*$")
        if config_at is None or _line_of(lines, r"^[^\s#]", after=config_at + 1) is not None:
            return None
        ending = "" if not lines or lines[-1].endswith("\n") else "\n"
        return text + ending + f"  {IMAGES_KEY}:\n" + "".join(block)
    end = _block_end(lines, start, indent=2)
    amis_at = _line_of(lines[:end], r"^    amis:", after=start + 1)
    if amis_at is None:
        return "".join(lines[:start + 1] + block + lines[start + 1:])
    return "".join(lines[:amis_at] + block + lines[_block_end(lines, amis_at, indent=4):])


def _line_of(lines: list[str], pattern: str, after: int = 0) -> int | None:
    for number in range(after, len(lines)):
        if re.match(pattern, lines[number]):
            return number
    return None


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The line after the block that opens at `start`: the next blank line or line indented
    `indent` spaces or less, comments included (a comment there belongs to the next key)."""
    for number in range(start + 1, len(lines)):
        line = lines[number]
        if not line.strip() or len(line) - len(line.lstrip(" ")) <= indent:
            return number
    return len(lines)
