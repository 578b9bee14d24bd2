"""`llmfleet sweep STACK` and `llmfleet teardown STACK`: find (and with --yes delete) what a
stack left on AWS, after `pulumi destroy` or on its own."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from llmfleet.errors import LlmfleetError
from llmfleet.local import sweep
from llmfleet.paths import repo_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stack", help="the Pulumi stack, <client>-<environment>")
    parser.add_argument("--region", action="append", metavar="REGION",
                        help="where to look (repeatable; default: the stack file's aws:region, "
                             "else boto3's default region)")
    parser.add_argument("--yes", action="store_true",
                        help="delete what is found (without it: only list)")
    parser.add_argument("--json", action="store_true", help="one JSON list on stdout")


def run_sweep(args: argparse.Namespace) -> int:
    import boto3

    session = boto3.session.Session()
    regions = args.region or [_stack_region(args.stack) or session.region_name]
    if not all(regions):
        raise LlmfleetError("no region: pass --region, or set aws:region in the stack file or "
                            "AWS_DEFAULT_REGION")
    found, unlisted = [], []
    for item in sweep.find(session, args.stack, regions):
        (found if isinstance(item, sweep.Leftover) else unlisted).append(item)
    outcomes = sweep.delete(session, found) if args.yes else [
        sweep.Outcome(f, deleted=False) for f in found]
    outcomes += unlisted
    _report(args, regions, outcomes)
    failed = [o for o in outcomes if o.error]
    return 1 if failed or (found and not args.yes) else 0


def run_teardown(args: argparse.Namespace) -> int:
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise LlmfleetError("the Pulumi CLI is not on PATH: https://www.pulumi.com/docs/install/")
    command = [pulumi, "destroy", "--stack", args.stack, "--non-interactive"] + (
        ["--yes"] if args.yes else ["--preview-only"])
    print(f"llmfleet teardown: {' '.join(command[1:])}", file=sys.stderr)
    destroyed = subprocess.run(command, cwd=repo_root(), check=False)
    if destroyed.returncode != 0:
        print(f"llmfleet teardown: pulumi destroy failed (exit {destroyed.returncode}); "
              "sweeping anyway, to show what remains", file=sys.stderr)
    swept = run_sweep(args)
    return destroyed.returncode or swept


def _stack_region(stack: str) -> str | None:
    path = repo_root() / "stacks" / f"Pulumi.{stack}.yaml"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return None
    return (data.get("config") or {}).get("aws:region")


def _report(args: argparse.Namespace, regions: list[str], outcomes: list[sweep.Outcome]) -> None:
    if args.json:
        print(json.dumps([o.to_json() for o in outcomes], indent=2))
        return
    where = ", ".join(regions)
    if not outcomes:
        print(f"{args.stack}: nothing tagged llmfleet:stack={args.stack} in {where}")
        return
    print(f"{args.stack}: {len(outcomes)} found tagged llmfleet:stack={args.stack} in {where}")
    for o in outcomes:
        state = "deleted" if o.deleted else (f"NOT deleted: {o.error}" if o.error or args.yes
                                             else "left (pass --yes to delete)")
        item: Any = o.leftover
        print(f"  {item.region}  {item.kind:<17} {item.id:<28} {item.detail:<24} {state}")
