"""`llmfleet simulate`: a trace through the simulated fleet under a scaling policy."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from llmfleet.config import FleetConfig, load_config
from llmfleet.config.autoscaling import POLICIES
from llmfleet.local.simulator.report import clock
from llmfleet.local.simulator.run import Progress, simulate
from llmfleet.local.simulator.settings import SimulationError, SimulationSettings
from llmfleet.local.traces import TraceError, load_trace

DESCRIPTION = """\
Simulate the GPU fleet (nodes with the simulated backend's timings, boot and model-load
delays, spot interruptions, the on-demand fallback) under a scaling policy, with the same
decision function the sandbox and AWS run, against a trace of arrivals. Prints SLO
attainment (first token <= 2 s and end to end <= 30 s), latency, GPU hours and cost.

exit status: 0 on a finished simulation; 2 on a bad argument, trace or config."""

EXIT_OK, EXIT_USAGE = 0, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--trace", required=True,
                        help="a built-in trace (surge, diurnal, spiky) or a CSV file of t_s,rps")
    parser.add_argument("--policy", help=f"{POLICIES}, or fixed:max for the fleet's "
                                         "maximum (default: the config's autoscaling.policy)")
    parser.add_argument("--max-nodes", type=_whole(1), help="fleet.max_size")
    parser.add_argument("--min-nodes", type=_whole(0), help="fleet.min_size")
    parser.add_argument("--seed", type=_whole(0), default=0,
                        help="seeds arrivals, lengths and spot interruptions (default 0)")
    parser.add_argument("--config", type=Path,
                        help="a sandbox config or Pulumi stack file (default: built-in)")
    parser.add_argument("--preset", help="simulated GPU: t4, l4, a10g or a100 (default: from "
                                         "fleet.instance_types[0])")
    parser.add_argument("--boot-s", type=_seconds, help="launch to user data (default 120)")
    parser.add_argument("--load-s", type=_seconds,
                        help="image pull and model load after the boot (default 300)")
    parser.add_argument("--warm-start-s", type=_seconds,
                        help="an on-demand node from the warm pool to serving (default 60)")
    parser.add_argument("--spot-interruptions", type=_seconds, metavar="PER_NODE_HOUR",
                        help="spot interruptions per spot node-hour (default 0.01)")
    parser.add_argument("--spot-capacity", type=_whole(0),
                        help="spot instances AWS will give at once (default: no limit)")
    parser.add_argument("--think-s", type=_positive_seconds,
                        help="read the trace as students who think this long on average "
                             "between an answer and their next message (a closed loop; "
                             "default: the trace's requests as they are)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timeline", action="store_true",
                        help="with --json: the fleet at every decision")


def run(args: argparse.Namespace) -> int:
    try:
        trace = load_trace(args.trace)
        config = _config(args)
        given = {"seed": args.seed, "preset": args.preset, "boot_s": args.boot_s,
                 "load_s": args.load_s, "warm_start_s": args.warm_start_s,
                 "spot_interruptions_per_hour": args.spot_interruptions,
                 "spot_capacity": args.spot_capacity, "think_s": args.think_s}
        settings = SimulationSettings(**{k: v for k, v in given.items() if v is not None})
        result = simulate(config, trace, settings, _Progress(sys.stderr))
    except (TraceError, SimulationError) as error:
        print(f"llmfleet simulate: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.to_json(timeline=args.timeline), indent=2))
    else:
        print(result.render_text())
    return EXIT_OK


def _config(args: argparse.Namespace) -> FleetConfig:
    """The config file with the command line's policy and bounds over it."""
    policy = args.policy
    overrides: dict[str, dict[str, Any]] = {}
    if policy and policy != "fixed:max":
        overrides["autoscaling"] = {"policy": policy}
    bounds = {k: v for k, v in (("min_size", args.min_nodes), ("max_size", args.max_nodes))
              if v is not None}
    config = load_config(args.config, overrides or None).config
    if bounds:
        fleet = config.fleet
        low, high = bounds.get("min_size", fleet.min_size), bounds.get("max_size",
                                                                      fleet.max_size)
        # The starting size follows the new bounds, so --max-nodes 1 needs no --desired.
        bounds["desired"] = max(low, min(high, fleet.desired))
        overrides["fleet"] = bounds
        config = load_config(args.config, overrides).config
    if policy == "fixed:max":
        overrides["autoscaling"] = {"policy": f"fixed:{config.fleet.max_size}"}
        config = load_config(args.config, overrides).config
    return config


def _whole(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


class _Progress:
    """A line on stderr every few seconds once a run takes long enough to wonder about."""

    def __init__(self, stream: TextIO, after_s: float = 2.0, every_s: float = 2.0) -> None:
        self._stream = stream
        self._started = time.monotonic()
        self._next = self._started + after_s
        self._every_s = every_s

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._every_s
        print(f"[simulate] {clock(progress.t_s)} of {clock(progress.duration_s)} "
              f"simulated, {progress.nodes} nodes, {progress.requests:,} requests, "
              f"{now - self._started:.0f} s", file=self._stream, flush=True)

