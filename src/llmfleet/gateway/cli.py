"""`llmfleet keys ...`: create, list, revoke and re-tier API keys; export and import them.

By default it talks to the running sandbox's Redis (the caller hands in how to reach it). Any
other Redis works with --redis-url (on AWS: through an SSM port forward to the edge, see
docs/rate-limits.md) and the password from --redis-password-file or $LLMFLEET_REDIS_PASSWORD.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import redis

from llmfleet.config import load_config
from llmfleet.gateway.keys import KeyRecord, KeyStore, UnknownKey, parse_export

# The running sandbox's key store, for when no --redis-url is given; it raises LookupError
# with what to do when there is no sandbox to talk to.
DefaultStore = Callable[[argparse.Namespace], KeyStore]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=os.environ.get("LLMFLEET_REDIS_URL"),
                        help="Redis holding the keys (default: the running sandbox's)")
    parser.add_argument("--redis-password-file", type=Path,
                        help="file with the Redis password (or set $LLMFLEET_REDIS_PASSWORD)")
    parser.add_argument("--config", type=Path,
                        help="config naming the tiers: a sandbox YAML or a stack file "
                             "(default: the running sandbox's)")
    parser.add_argument("--state-dir", type=Path, default=None, help="the sandbox's state dir")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="make a key; it is printed once, never stored")
    create.add_argument("--client", required=True, help="who the key belongs to")
    create.add_argument("--tier", required=True, help="a tier from the config")
    create.add_argument("--requests", type=int, help="override: requests per window")
    create.add_argument("--window", type=float, help="override: window in seconds")
    create.add_argument("--max-concurrent", type=int, help="override: requests in flight")
    create.add_argument("--json", action="store_true")

    listing = actions.add_parser("list", help="every key, by id (never the key itself)")
    listing.add_argument("--json", action="store_true")

    revoke = actions.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key", help="the key, or its id from `keys list`")
    revoke.add_argument("--json", action="store_true", help="the record after the change")

    set_tier = actions.add_parser("set-tier", help="move a key to another tier")
    set_tier.add_argument("key", help="the key, or its id from `keys list`")
    set_tier.add_argument("tier")
    set_tier.add_argument("--json", action="store_true", help="the record after the change")

    export = actions.add_parser(
        "export", help="every key record as JSON lines (digests, never keys): a backup")
    export.add_argument("--output", type=Path, help="write here (default: standard output)")

    imports = actions.add_parser(
        "import", help="key records from `keys export` into this Redis; each key then works")
    imports.add_argument("file", type=Path, help="a `keys export` file ('-': standard input)")
    imports.add_argument("--overwrite", action="store_true",
                         help="replace records already here (default: keep them)")


def run(args: argparse.Namespace, default_store: DefaultStore) -> int:
    try:
        store = _store(args, default_store)
        if args.action == "create":
            _check_overrides(args)
            raw, record = store.create(
                args.client, args.tier, requests=args.requests,
                window_ms=round(args.window * 1000) if args.window else None,
                max_concurrent=args.max_concurrent)
            if args.json:
                print(json.dumps({"key": raw, **record.to_dict()}))
            else:
                print(raw)
                print(f"id {record.id}, client {record.client}, tier {record.tier}. "
                      "Keep the key now: it is not stored and cannot be shown again.",
                      file=sys.stderr)
        elif args.action == "list":
            records = store.list()
            if args.json:
                print(json.dumps([r.to_dict() for r in records], indent=2))
            else:
                _print_table(records)
        elif args.action == "revoke":
            record = store.revoke(args.key)
            print(json.dumps(record.to_dict()) if args.json
                  else f"revoked {record.id} (client {record.client})")
        elif args.action == "set-tier":
            record = store.set_tier(args.key, args.tier)
            print(json.dumps(record.to_dict()) if args.json
                  else f"{record.id} (client {record.client}) is now on tier {record.tier}")
        elif args.action == "export":
            _export(store, args.output)
        elif args.action == "import":
            text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
            records = parse_export(text.splitlines(), store.tiers)
            result = store.import_records(records, overwrite=args.overwrite)
            print(f"imported {len(records)} key records: {result.added} added, "
                  f"{result.replaced} replaced, {result.kept} kept as they were")
    except (UnknownKey, ValueError, LookupError, OSError) as error:
        print(f"llmfleet keys: {error}", file=sys.stderr)
        return 2
    except redis.exceptions.RedisError as error:
        print(f"llmfleet keys: Redis at {args.redis_url or 'the sandbox'}: {error}",
              file=sys.stderr)
        return 1
    return 0


def _store(args: argparse.Namespace, default_store: DefaultStore) -> KeyStore:
    if args.redis_url is None:
        return default_store(args)
    password = os.environ.get("LLMFLEET_REDIS_PASSWORD")
    if args.redis_password_file:
        password = args.redis_password_file.read_text().strip()
    config = load_config(args.config).config
    return KeyStore.connect(args.redis_url, password, set(config.rate_limits.tiers))


def _export(store: KeyStore, output: Path | None) -> None:
    lines = store.export()
    text = "".join(line + "\n" for line in lines)
    if output is None:
        sys.stdout.write(text)
        return
    # A backup holds digests only, still nobody else's business: owner-only, written whole.
    partial = output.with_name(output.name + ".partial")
    partial.touch(mode=0o600)
    partial.write_text(text)
    partial.replace(output)
    print(f"exported {len(lines)} key records to {output}", file=sys.stderr)


def _check_overrides(args: argparse.Namespace) -> None:
    for flag, value in (("--requests", args.requests), ("--max-concurrent", args.max_concurrent)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be a whole number of at least 1, got {value}")
    if args.window is not None and args.window <= 0:
        raise ValueError(f"--window must be more than 0 seconds, got {args.window}")


def _print_table(records: list[KeyRecord]) -> None:
    if not records:
        print("no keys yet; make one with: llmfleet keys create --client NAME --tier TIER")
        return
    print(f"{'id':<13} {'client':<20} {'tier':<12} {'hint':<14} {'created':<21} state")
    for r in records:
        d = r.to_dict()
        print(f"{r.id:<13} {r.client[:20]:<20} {r.tier:<12} {r.hint:<14} {d['created']:<21} "
              f"{'revoked' if r.revoked else 'active'}")
