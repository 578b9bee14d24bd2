"""``llmfleet load``: command-line front end of the load generator."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable

from yarl import URL

from .progress import StderrProgress
from .runner import MAX_CONCURRENCY, MAX_REQUESTS, LoadSpec, LoadTargetError, run_load_sync
from .workload import ALLOWED_FORMS, DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS
from .workload import parse_distribution as _parse_distribution

__all__ = ["add_arguments", "run"]

DESCRIPTION = """\
Send OpenAI-compatible requests (to vLLM, the simulated backend or the nginx edge) and
report latency, time to first token, throughput, errors and which backend served each
request. Every run stops by itself after --requests requests or --max-duration seconds.

exit status: 0 when every request succeeded; 1 when some failed, the run stopped at
--max-duration, or the target could not be reached; 2 on bad arguments."""

DISTRIBUTION_HELP = f"forms: {ALLOWED_FORMS}"


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low} to {high}, got {text!r}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low} to {high}, got {value}"
            )
        return value

    return parse


def _seconds(allow_zero: bool) -> Callable[[str], float]:
    bound = ">= 0" if allow_zero else "> 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"expected seconds {bound}, got {text!r}")
        return value

    return parse


def _url(text: str) -> str:
    url = URL(text)
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(
            f"expected an http(s) URL such as http://127.0.0.1:8080, got {text!r}"
        )
    return text


def _distribution(text: str) -> str:
    try:
        _parse_distribution(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``llmfleet load`` options to ``parser``."""
    if parser.description is None:
        parser.description = DESCRIPTION
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--url",
        type=_url,
        default="http://127.0.0.1:8080",
        help="base URL of the OpenAI-compatible server (default: %(default)s)",
    )
    parser.add_argument(
        "--model", default=None, help="served model name (default: first id of GET /v1/models)"
    )
    parser.add_argument(
        "-n",
        "--requests",
        type=_int_in(1, MAX_REQUESTS),
        default=100,
        help="total requests to send (default: %(default)s)",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=_int_in(1, MAX_CONCURRENCY),
        default=10,
        help="concurrent clients (default: %(default)s)",
    )
    parser.add_argument(
        "--ramp",
        type=_seconds(allow_zero=True),
        default=0.0,
        metavar="SECONDS",
        help="spread client start-up over this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stream responses as server-sent events (default: stream)",
    )
    parser.add_argument(
        "--endpoint",
        choices=("chat", "completions"),
        default="chat",
        help="/v1/chat/completions or /v1/completions (default: %(default)s)",
    )
    parser.add_argument(
        "--output-tokens",
        type=_distribution,
        default=DEFAULT_OUTPUT_TOKENS,
        metavar="DIST",
        help=f"max_tokens per request (default: %(default)s); {DISTRIBUTION_HELP}",
    )
    parser.add_argument(
        "--prompt-tokens",
        type=_distribution,
        default=DEFAULT_PROMPT_TOKENS,
        metavar="DIST",
        help="approximate prompt length in tokens (default: %(default)s); same forms",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="workload random seed (default: %(default)s)"
    )
    parser.add_argument(
        "--max-duration",
        type=_seconds(allow_zero=False),
        default=120.0,
        metavar="SECONDS",
        help="hard stop for the whole run (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds(allow_zero=False),
        default=60.0,
        metavar="SECONDS",
        help="per-request timeout (default: %(default)s)",
    )
    parser.add_argument(
        "--ignore-eos",
        action="store_true",
        help="ask vLLM to ignore EOS so it generates exactly max_tokens",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LLMFLEET_API_KEY"),
        help="sent as 'Authorization: Bearer KEY' (default: $LLMFLEET_API_KEY)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only the JSON report on stdout (progress still goes to stderr)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``llmfleet load`` with parsed ``args``; return the exit status (0, 1 or 2)."""
    try:
        spec = LoadSpec(
            url=args.url,
            model=args.model,
            requests=args.requests,
            concurrency=args.concurrency,
            ramp_s=args.ramp,
            stream=args.stream,
            endpoint=args.endpoint,
            seed=args.seed,
            output_tokens=args.output_tokens,
            prompt_tokens=args.prompt_tokens,
            max_duration_s=args.max_duration,
            timeout_s=args.timeout,
            api_key=args.api_key,
            ignore_eos=args.ignore_eos,
        )
    except ValueError as exc:
        # add_arguments' types catch most of this; here for Namespaces built by other code.
        print(f"llmfleet load: invalid arguments: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_load_sync(spec, progress=StderrProgress())
    except LoadTargetError as exc:
        print(f"llmfleet load: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llmfleet load: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.render_text())
    return 0 if report.all_ok else 1
