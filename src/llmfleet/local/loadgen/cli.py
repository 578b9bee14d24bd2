"""``llmfleet load``: command-line front end of the load generator."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from yarl import URL

from llmfleet.local.traces import BUILTIN_TRACES, Trace, TraceError, load_trace

from .arrivals import ARRIVALS
from .benchmark import Slo, SloError, parse_slo
from .fleet import (
    FleetQueryError,
    FleetSeries,
    query_fleet,
    sandbox_ca_file,
    sandbox_endpoint,
    sandbox_prometheus,
)
from .plot import PlotUnavailable, require_matplotlib, write_plot
from .progress import StderrProgress
from .records import write_records
from .report import LoadReport
from .runner import (
    MAX_CONCURRENCY,
    MAX_REQUEST_RATE,
    MAX_REQUESTS,
    LoadSpec,
    LoadTargetError,
    run_load_sync,
)
from .workload import ALLOWED_FORMS, DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS
from .workload import parse_distribution as _parse_distribution

__all__ = ["add_arguments", "run"]

DESCRIPTION = """\
Send OpenAI-compatible requests (to vLLM, the simulated backend or the nginx edge) and
report latency, time to first token, throughput, errors, which backend served each
request, and a timeline of the run.

Closed loop (default): --concurrency clients, each sending its next request when the last
one is answered. Open loop: --request-rate or --profile start requests on a schedule,
whatever the answers do, as real users arrive; arrivals over --max-in-flight are dropped
by the client and counted. Every run stops by itself: after --requests requests, after
--duration seconds or the profile's end (no new requests), and at --max-duration (requests
still in flight are cut). Ctrl-C stops sending, gives the requests in flight 2 seconds to
finish, and prints (and saves) the partial report.

The report gives vLLM's benchmark figures: TTFT, TPOT, ITL and E2EL at mean, median, P90,
P95 and P99, and with --slo the goodput: requests per second that met every bound.

exit status: 0 when every request succeeded; 1 when some failed or were dropped, the run
stopped at --max-duration, the target could not be reached, or --plot needs matplotlib;
2 on bad arguments; 130 after Ctrl-C (the partial report is still printed)."""

DEFAULT_REQUESTS = 100
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_MAX_IN_FLIGHT = 500

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


def _positive(what: str, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= high):
            raise argparse.ArgumentTypeError(f"expected {what} > 0 and <= {high:g}, got {text!r}")
        return value

    return parse


def _trace(text: str) -> Trace:
    try:
        return load_trace(text)
    except TraceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _png(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"expected a file name ending in .png, got {text!r}")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(path.parent)!r} does not exist")
    return path


def _slo(text: str) -> Slo:
    try:
        return parse_slo(text)
    except SloError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _writable(text: str) -> Path:
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder")
    return path


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
        default=None,
        help="base URL of the OpenAI-compatible server (default: the running sandbox's "
        f"endpoint, as `llmfleet status` finds it; without one {DEFAULT_URL})",
    )
    parser.add_argument(
        "--model", default=None, help="served model name (default: first id of GET /v1/models)"
    )
    parser.add_argument(
        "-n",
        "--requests",
        type=_int_in(1, MAX_REQUESTS),
        default=None,
        help=f"send at most this many requests (default: {DEFAULT_REQUESTS}, "
        "or no count limit with --duration or --profile)",
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument(
        "-c",
        "--concurrency",
        type=_int_in(1, MAX_CONCURRENCY),
        default=10,
        help="closed loop: concurrent clients (default: %(default)s)",
    )
    shape.add_argument(
        "--request-rate",
        type=_positive("requests per second", MAX_REQUEST_RATE),
        default=None,
        metavar="RPS",
        help="open loop: start requests at this rate, whatever the answers do",
    )
    shape.add_argument(
        "--profile",
        type=_trace,
        default=None,
        metavar="NAME|FILE",
        help="open loop: the rate follows a trace, built in "
        f"({', '.join(BUILTIN_TRACES)}) or a CSV file with the header t_s,rps",
    )
    parser.add_argument(
        "--arrival",
        choices=ARRIVALS,
        default=None,
        help="open loop: Poisson arrivals or evenly spaced ones (default: poisson)",
    )
    parser.add_argument(
        "--time-scale",
        type=_positive("a time scale", 1000.0),
        default=None,
        metavar="X",
        help="--profile: play the trace's time axis X times as long (0.1: 30 minutes in 3), "
        "rates unchanged (default: 1)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=_int_in(1, MAX_CONCURRENCY),
        default=None,
        metavar="N",
        help="open loop: arrivals while N requests are in flight are dropped and counted "
        f"(default: {DEFAULT_MAX_IN_FLIGHT})",
    )
    parser.add_argument(
        "--duration",
        type=_seconds(allow_zero=False),
        default=None,
        metavar="SECONDS",
        help="start no request after this many seconds (default: no limit but -n, "
        "or the profile's end)",
    )
    parser.add_argument(
        "--ramp",
        type=_seconds(allow_zero=True),
        default=0.0,
        metavar="SECONDS",
        help="closed loop: spread client start-up over this many seconds (default: %(default)s)",
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
        default=None,
        metavar="SECONDS",
        help="hard stop for the whole run, cutting requests in flight (default: 120, or "
        "--timeout after the last request may start)",
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
        "--slo",
        type=_slo,
        default=None,
        metavar="ttft=500ms,tpot=50ms,e2e=10s",
        help="count goodput: requests that succeeded within every bound given (keys ttft, "
        "tpot, e2e; durations in ms or s)",
    )
    parser.add_argument(
        "--save-records",
        type=_writable,
        default=None,
        metavar="FILE.jsonl",
        help="write one JSON line per request: start, TTFT, end, tokens in and out, status, "
        "error, backend (also after Ctrl-C)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only the JSON report on stdout (progress still goes to stderr)",
    )
    parser.add_argument(
        "--plot",
        type=_png,
        default=None,
        metavar="FILE.png",
        help="draw the run over time: requests, in flight, latency, errors (needs matplotlib)",
    )
    parser.add_argument(
        "--prometheus",
        type=_url,
        default=None,
        metavar="URL",
        help="--plot: add the fleet's queue and ready backends from this Prometheus "
        "(default: the running sandbox's, when --url is its edge or a backend)",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=None,
        metavar="PEM",
        help="verify an HTTPS --url against this CA (default: the running sandbox's own, "
        "with `up --tls`, when --url is its edge; else the system's)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the sandbox whose endpoint is the default --url, whose CA verifies it and whose "
        "Prometheus --plot reads (default: as `llmfleet status`)",
    )


def _open_loop_only(args: argparse.Namespace) -> str | None:
    """The first open-loop flag given to a closed-loop run, or None."""
    if args.request_rate is not None or args.profile is not None:
        return None
    given = {
        "--arrival": args.arrival is not None,
        "--time-scale": args.time_scale is not None,
        "--max-in-flight": args.max_in_flight is not None,
    }
    return next((flag for flag, present in given.items() if present), None)


def _spec(args: argparse.Namespace) -> LoadSpec:
    """The LoadSpec of ``args``; ValueError names the flag and what is allowed."""
    flag = _open_loop_only(args)
    if flag:
        raise ValueError(f"{flag} applies to open-loop runs: add --request-rate or --profile")
    if args.time_scale is not None and args.profile is None:
        raise ValueError("--time-scale compresses a --profile; there is none")
    open_loop = args.request_rate is not None or args.profile is not None
    if open_loop and args.ramp:
        raise ValueError("--ramp spreads closed-loop clients; an open-loop run has none")
    if args.prometheus and not args.plot:
        raise ValueError("--prometheus feeds the --plot picture: add --plot FILE.png")
    requests = args.requests
    if requests is None and args.duration is None and args.profile is None:
        requests = DEFAULT_REQUESTS
    url = args.url or sandbox_endpoint(args.state_dir) or DEFAULT_URL
    if args.ca_file is not None and not args.ca_file.is_file():
        raise ValueError(f"--ca-file {args.ca_file}: no such file")
    ca_file = str(args.ca_file) if args.ca_file else None
    if ca_file is None and URL(url).scheme == "https":  # only HTTPS asks the sandbox for it
        ca_file = sandbox_ca_file(url, args.state_dir)
    return LoadSpec(
        url=url,
        ca_file=ca_file,
        model=args.model,
        requests=requests,
        concurrency=args.concurrency,
        ramp_s=args.ramp,
        request_rate=args.request_rate,
        profile=args.profile,
        time_scale=args.time_scale or 1.0,
        arrival=args.arrival or "poisson",
        max_in_flight=args.max_in_flight or DEFAULT_MAX_IN_FLIGHT,
        duration_s=args.duration,
        stream=args.stream,
        endpoint=args.endpoint,
        seed=args.seed,
        output_tokens=args.output_tokens,
        prompt_tokens=args.prompt_tokens,
        max_duration_s=args.max_duration,
        timeout_s=args.timeout,
        api_key=args.api_key,
        ignore_eos=args.ignore_eos,
        slo=args.slo,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``llmfleet load`` with parsed ``args``; return the exit status (0, 1, 2 or 130)."""
    try:
        spec = _spec(args)
    except ValueError as exc:
        # add_arguments' types catch most of this; the rest is flags that do not fit together.
        print(f"llmfleet load: invalid arguments: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            require_matplotlib()  # before the run, not after minutes of load
        except PlotUnavailable as exc:
            print(f"llmfleet load: {exc}", file=sys.stderr)
            return 1
    try:
        report = run_load_sync(spec, progress=StderrProgress(), stop_on_sigint=True)
    except LoadTargetError as exc:
        print(f"llmfleet load: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llmfleet load: interrupted", file=sys.stderr)
        return 130
    # Flushed: the report shows at once, before the picture that takes a few seconds.
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), flush=True)
    else:
        print(report.render_text(), flush=True)
    if args.save_records:
        try:
            write_records(report.records, args.save_records)
        except OSError as exc:
            print(
                f"llmfleet load: cannot write --save-records {args.save_records}: {exc}",
                file=sys.stderr,
            )
            return 1
        print(f"llmfleet load: wrote {args.save_records}", file=sys.stderr)
    if args.plot:
        try:
            write_plot(report, args.plot, _fleet(args, report))
        except OSError as exc:
            print(f"llmfleet load: cannot write --plot {args.plot}: {exc}", file=sys.stderr)
            return 1
        print(f"llmfleet load: wrote {args.plot}", file=sys.stderr)
    if report.interrupted:
        print("llmfleet load: interrupted (Ctrl-C): the report is partial", file=sys.stderr)
        return 130
    return 0 if report.all_ok else 1


def _fleet(args: argparse.Namespace, report: LoadReport) -> FleetSeries | None:
    """The fleet's series over the run, or None (with a line on stderr if the query failed)."""
    prometheus = args.prometheus or sandbox_prometheus(report.url, args.state_dir)
    if prometheus is None or report.started_at is None:
        return None
    start = report.started_at
    try:
        return query_fleet(prometheus, start, start + report.wall_time_s, report.bucket_s)
    except FleetQueryError as exc:
        print(f"llmfleet load: the picture has no fleet panel: {exc}", file=sys.stderr)
        return None
