"""`llmfleet`: the sandbox (up, status, down, demo, top), load, the fleet simulator, API keys
and config checks.

Every failure ends the command with one line on stderr and an exit code: 1 when something
failed, 2 for a bad config or usage, 130 on Ctrl-C; no traceback (LLMFLEET_DEBUG=1 shows the
one behind an unexpected error)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only light modules here: a Ctrl-C while the heavy ones load (pydantic, aiohttp, redis) must
# reach main()'s handler, not end in a traceback.
from llmfleet.errors import LlmfleetError

if TYPE_CHECKING:
    from llmfleet.config import FleetConfig
    from llmfleet.local.sandbox import SandboxStatus

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return args.handler(args)
    except KeyboardInterrupt:
        _say_last("llmfleet: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`llmfleet status | head -3`): nothing left to say. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as error:
        return _failed(error)


def _failed(error: Exception) -> int:
    """One line (a bad config: one per problem) on stderr, and the exit code."""
    from llmfleet.config import ConfigError  # loaded already when it was raised

    if isinstance(error, ConfigError):
        _say_last(str(error))
        return EXIT_USAGE
    if isinstance(error, LlmfleetError):
        _say_last(f"llmfleet: {error}")
    elif isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        _say_last(f"llmfleet: {error.strerror or error}{where}")
    else:
        if os.environ.get("LLMFLEET_DEBUG"):
            raise error
        _say_last(f"llmfleet: unexpected {type(error).__name__}: {error} (run with "
                  "LLMFLEET_DEBUG=1 to see where)")
    return EXIT_FAILED


def _say_last(message: str) -> None:
    # When stderr is gone too, the exit code is all that is left.
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(message, file=sys.stderr, flush=True)


# Every command's --help ends with what its exit code means.
EXIT_CODES = "exit codes: 0 done, 1 failed (the message says why), 2 bad usage or config"


class _Commands(argparse._SubParsersAction):
    """Subcommands that all carry the exit codes under their help."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("epilog", EXIT_CODES)
        return super().add_parser(name, **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmfleet", description=__doc__, epilog=EXIT_CODES)
    parser.register("action", "parsers", _Commands)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up_cmd = commands.add_parser("up", help="start the local sandbox (backends + nginx edge)")
    _sandbox_options(up_cmd)
    up_cmd.add_argument("--autoscale", action="store_true",
                        help="run the autoscaling policy: backends join under load and leave "
                             "when idle (needs monitoring)")
    up_cmd.add_argument("--max-backends", type=int, metavar="M",
                        help="with --autoscale: the most backends (default fleet.max_size)")
    up_cmd.add_argument("--no-supervise", dest="supervise", action="store_false",
                        help="do not start a process again when it ends (by default the "
                             "sandbox restarts it with backoff, as systemd does on the edge)")
    up_cmd.add_argument("--throwaway-keys", dest="keep_keys", action="store_false",
                        help="Redis keeps no data: every up starts with no API keys, and a "
                             "restarted Redis has none (by default keys persist in the state "
                             "directory)")
    up_cmd.add_argument("--tls", action="store_true",
                        help="serve HTTPS on the edge with a certificate from a CA the sandbox "
                             "makes in its state directory (`status --json` names its "
                             "ca_file); plain HTTP then redirects to HTTPS")
    up_cmd.add_argument("--json", action="store_true", help="print the status as JSON")
    up_cmd.set_defaults(handler=_up)

    status_cmd = commands.add_parser("status", help="what the sandbox runs and whether it is up")
    _state_dir_option(status_cmd)
    status_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    status_cmd.set_defaults(handler=_status)

    down_cmd = commands.add_parser("down", help="stop everything `up` started (idempotent)")
    _state_dir_option(down_cmd)
    down_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    down_cmd.set_defaults(handler=_down)

    demo_cmd = commands.add_parser(
        "demo", help="bring the sandbox up, send a short burst of traffic and print the report")
    _sandbox_options(demo_cmd)
    demo_cmd.add_argument("--requests", type=int, default=60, help="requests in the burst")
    demo_cmd.add_argument("--concurrency", type=int, default=12, help="clients at once")
    demo_cmd.set_defaults(handler=_demo)

    from llmfleet.local.loadgen import cli as load_cli

    load_cmd = commands.add_parser("load", help="send OpenAI-compatible load and report on it")
    load_cli.add_arguments(load_cmd)
    load_cmd.set_defaults(handler=load_cli.run)

    from llmfleet.local import top as top_cli

    top_cmd = commands.add_parser(
        "top", help="live view of throughput, latency, queue, errors and backends")
    top_cli.add_arguments(top_cmd)
    top_cmd.set_defaults(handler=top_cli.run)

    from llmfleet.local.simulator import cli as simulate_cli

    simulate_cmd = commands.add_parser(
        "simulate", help="a trace through the simulated fleet under a scaling policy")
    simulate_cli.add_arguments(simulate_cmd)
    simulate_cmd.set_defaults(handler=simulate_cli.run)

    from llmfleet.gateway import cli as keys_cli

    keys_cmd = commands.add_parser(
        "keys", help="API keys: create, list, revoke, set-tier, export, import")
    keys_cmd.register("action", "parsers", _Commands)  # its actions' help ends the same way
    keys_cli.add_arguments(keys_cmd)
    keys_cmd.set_defaults(handler=_keys)

    cost_cmd = commands.add_parser(
        "cost", help="a stack's hourly cost at min, typical and max size, from its prices")
    cost_cmd.add_argument("stack_file", type=Path,
                          help="a Pulumi stack file, stacks/Pulumi.<client>-<env>.yaml")
    cost_cmd.add_argument("--json", action="store_true")
    cost_cmd.set_defaults(handler=_cost)

    from llmfleet.local import amis, sweep_cli

    amis_cmd = commands.add_parser(
        "amis", help="each role's pinned AMI against today's; --write pins today's")
    amis.add_arguments(amis_cmd)
    amis_cmd.set_defaults(handler=amis.run)

    sweep_cmd = commands.add_parser(
        "sweep", help="what a stack left on AWS (tagged with it): list, or delete with --yes")
    sweep_cli.add_arguments(sweep_cmd)
    sweep_cmd.set_defaults(handler=sweep_cli.run_sweep)
    teardown_cmd = commands.add_parser(
        "teardown", help="pulumi destroy a stack, then sweep what it left (--yes to do both)")
    sweep_cli.add_arguments(teardown_cmd)
    teardown_cmd.set_defaults(handler=sweep_cli.run_teardown)

    check_cmd = commands.add_parser(
        "check-config", help="validate a sandbox config or a Pulumi stack file")
    check_cmd.add_argument("file", type=Path,
                           help="e.g. examples/sandbox.yaml or stacks/Pulumi.<stack>.yaml")
    check_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    check_cmd.set_defaults(handler=_check_config)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmfleet")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where the sandbox keeps its records and logs (default: "
                             ".llmfleet/sandbox in the repository, or $LLMFLEET_STATE_DIR)")


def _sandbox_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="sandbox config YAML (default: built-in)")
    parser.add_argument("--backends", type=int, help="number of backends (default 2)")
    parser.add_argument("--port", type=int, help="edge port on 127.0.0.1 (default 8080)")
    parser.add_argument("--backend", choices=["simulated", "vllm"],
                        help="simulated vLLM (default) or real `vllm serve` (needs a GPU)")
    parser.add_argument("--model", help="model to serve (Hugging Face id)")
    parser.add_argument("--slack-webhook-file", type=Path,
                        help="file holding a Slack webhook URL: alerts go to Slack "
                             "(default: a local sink that logs them)")
    _state_dir_option(parser)


def _config_from(args: argparse.Namespace) -> FleetConfig:
    from llmfleet.config import load_config

    sandbox = {"backends": args.backends, "edge_port": args.port, "backend": args.backend}
    overrides: dict[str, dict[str, Any]] = {
        "sandbox": {k: v for k, v in sandbox.items() if v is not None},
        "model": {"name": args.model} if args.model else {},
        "alerts": ({"slack_webhook_file": str(args.slack_webhook_file.resolve())}
                   if args.slack_webhook_file else {}),
    }
    return load_config(args.config, {k: v for k, v in overrides.items() if v}).config


def _state_dir(args: argparse.Namespace) -> Path:
    from llmfleet.local.sandbox import default_state_dir

    return args.state_dir or default_state_dir()


def _say(message: str) -> None:
    print(f"[llmfleet] {message}", file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    config = _config_from(args)
    from llmfleet.local.sandbox import up

    report = up(config, _state_dir(args), edge_port_explicit=args.port is not None,
                autoscale=args.autoscale, max_backends=args.max_backends,
                supervise=args.supervise, keep_keys=args.keep_keys, tls=args.tls, say=_say)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_status(report)
        print(f"\nEndpoint: {report.endpoint}/v1  (stop with: llmfleet down)")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from llmfleet.local.sandbox import status

    report = status(_state_dir(args))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_status(report)
    return EXIT_OK if report.running else EXIT_FAILED


def _down(args: argparse.Namespace) -> int:
    from llmfleet.local.sandbox import down

    state_dir = _state_dir(args)
    stopped = down(state_dir, say=_say)
    if args.json:
        print(json.dumps({"state_dir": str(state_dir), "stopped": stopped}))
    else:
        _say(f"sandbox is down ({stopped} process{'es' if stopped != 1 else ''} stopped)")
    return EXIT_OK


def _keys(args: argparse.Namespace) -> int:
    from llmfleet.gateway import cli as keys_cli

    return keys_cli.run(args, _sandbox_key_store)


def _sandbox_key_store(args: argparse.Namespace):
    """The running sandbox's keys, for `llmfleet keys` without --redis-url."""
    from llmfleet.local.sandbox.auth import key_store

    try:
        return key_store(_state_dir(args))
    except LlmfleetError as error:
        raise LookupError(str(error)) from None


def _check_config(args: argparse.Namespace) -> int:
    from llmfleet.config import ConfigKind, load_config

    loaded = load_config(args.file)
    if args.json:
        print(json.dumps({"file": str(args.file), "valid": True, "kind": str(loaded.kind),
                          "stack": loaded.stack or loaded.config.stack_name}))
    elif loaded.kind is ConfigKind.STACK:
        print(f"{args.file}: valid {loaded.kind} for stack {loaded.stack}")
    else:
        print(f"{args.file}: valid {loaded.kind} ({loaded.config.stack_name})")
    return EXIT_OK


def _cost(args: argparse.Namespace) -> int:
    from llmfleet.config import ConfigKind, load_config
    from llmfleet.local.cost import estimate_hourly_cost

    config = load_config(args.stack_file, kind=ConfigKind.STACK).config
    try:
        estimate = estimate_hourly_cost(config)
    except ValueError as error:
        print(f"llmfleet cost: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(estimate.as_dict(), indent=2))
        return EXIT_OK
    rate = estimate.pkr_per_usd
    scheduled = estimate.on_share < 1
    print(f"{config.stack_name}: USD per hour, and per month in USD and PKR (at {rate:g} PKR "
          "per USD), without data transfer")
    if scheduled:
        print(f"  off-hours ({config.off_hours.time_zone}: stop {config.off_hours.stop!r}, "
              f"start {config.off_hours.start!r}): GPU nodes up {estimate.on_share:.0%} of "
              "the week")
    for scale in estimate.scales:
        month = scale.usd_per_month
        text = (f"  {scale.scale:<8} {scale.gpu_units:>3} GPU units  {scale.usd_per_hour:8.3f}/h"
                f"  {month:9,.0f} USD {month * rate:12,.0f} PKR a month")
        if scheduled:
            on = scale.usd_per_month_on(estimate.on_share)
            text += f";  with off-hours {on:9,.0f} USD {on * rate:12,.0f} PKR"
        print(text)
        for line in scale.lines:
            if line.count:
                print(f"      {line.count:>7g} x {line.item:<56} {line.usd_per_hour:8.4f}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from llmfleet.local.demo import closing_words, run_demo

    result = run_demo(_config_from(args), _state_dir(args), requests=args.requests,
                      concurrency=args.concurrency, edge_port_explicit=args.port is not None,
                      say=_say)
    _print_status(result.sandbox)
    print()
    print(result.load.render_text())
    print(closing_words(result))
    return EXIT_OK if result.load.all_ok else EXIT_FAILED


def _print_status(report: SandboxStatus) -> None:
    from llmfleet.local.sandbox import BackendStatus

    if not report.running:
        print("The sandbox is not running (start it with: llmfleet up).")
        return
    print(f"Sandbox {report.stack}: endpoint {report.endpoint}")
    if report.ca_file:
        print(f"HTTPS with the sandbox's own CA: {report.ca_file}")
    for process in [*report.backends, *report.services.values()]:
        health = "healthy" if process.healthy else (
            "UNHEALTHY" if process.running else "STOPPED")
        if isinstance(process, BackendStatus):
            health = f"{health} ({process.state.value})"
        restarts = ""
        if process.restarts or process.last_exit:
            restarts = f" restarts {process.restarts} (last: {process.last_exit})"
        print(f"  {process.name:<13} {process.url or '-':<30} pid {process.pid:<7} "
              f"{health:<17} log {process.log}{restarts}")
    if report.autoscaler is not None:
        print(f"Autoscaler {report.autoscaler.summary()}")


if __name__ == "__main__":
    sys.exit(main())
