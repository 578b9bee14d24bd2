"""`python -m llmfleet.local.simbackend`: run one simulated vLLM server until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys

from llmfleet.local.simbackend.presets import preset_names
from llmfleet.local.simbackend.server import DEFAULT_MODEL, LISTEN_BACKLOG, SimSettings, serve


def build_parser() -> argparse.ArgumentParser:
    """The command line; flag names follow `vllm serve` where vLLM has the same knob."""
    p = argparse.ArgumentParser(
        prog="python -m llmfleet.local.simbackend",
        description="A simulated vLLM OpenAI-compatible server (no GPU, no model weights).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8001, help="port to bind; 0 picks a free one")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model path reported as `root`")
    p.add_argument("--served-model-name", nargs="+", default=[], help="name(s) the API accepts")
    p.add_argument("--max-model-len", type=int, default=4096, help="context length in tokens")
    p.add_argument("--preset", default="l4", choices=preset_names(), help="simulated GPU")
    p.add_argument("--max-num-seqs", type=int, help="max concurrent sequences (preset default)")
    p.add_argument("--max-num-batched-tokens", type=int, help="token budget per engine step")
    p.add_argument("--kv-cache-tokens", type=int, help="simulated KV-cache capacity in tokens")
    p.add_argument("--prefill-ms-per-token", type=float, help="prefill cost per prompt token")
    p.add_argument("--itl-ms", type=float, help="decode step time with an empty batch")
    p.add_argument(
        "--itl-ms-per-running-seq", type=float, help="extra step time per batched sequence"
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply every simulated duration (0.01 = 100x faster)",
    )
    p.add_argument(
        "--output-len-median",
        type=int,
        default=200,
        help="median output length when a request sets no max_tokens",
    )
    p.add_argument("--name", default="simbackend", help="backend name in every log line")
    p.add_argument("--seed", type=int, default=0, help="seed for output lengths and text")
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=5.0,
        help="seconds in-flight requests get to finish after SIGTERM",
    )
    p.add_argument(
        "--backlog",
        type=_positive_int,
        default=LISTEN_BACKLOG,
        help="connections queued before they are accepted; the kernel caps it at "
        f"net.core.somaxconn (default {LISTEN_BACKLOG}; vLLM's uvicorn has 2048)",
    )
    p.add_argument(
        "--startup-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="listen only after S seconds, as vLLM does once its model is loaded (default 0)",
    )
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def settings_from_args(argv: list[str] | None = None) -> SimSettings:
    """Parse argv into SimSettings; exits with a usage error on an inconsistent config."""
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = SimSettings(
        model=args.model,
        served_model_name=tuple(args.served_model_name),
        host=args.host,
        port=args.port,
        max_model_len=args.max_model_len,
        preset=args.preset,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        kv_cache_tokens=args.kv_cache_tokens,
        prefill_ms_per_token=args.prefill_ms_per_token,
        itl_ms=args.itl_ms,
        itl_ms_per_running_seq=args.itl_ms_per_running_seq,
        time_scale=args.time_scale,
        output_len_median=args.output_len_median,
        name=args.name,
        seed=args.seed,
        shutdown_timeout=args.shutdown_timeout,
        backlog=args.backlog,
        startup_delay_s=args.startup_delay,
    )
    try:
        settings.engine_config()
    except ValueError as exc:
        parser.error(str(exc))
    return settings


def raise_nofile_limit() -> None:
    """Lift the open-files soft limit to the hard limit: every open stream is a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse flags, serve until a signal, exit 0."""
    settings = settings_from_args(argv)
    raise_nofile_limit()
    try:
        asyncio.run(serve(settings))
    except OSError as exc:  # e.g. the port is taken: one clear line, not a traceback
        print(
            f"simbackend: cannot serve on {settings.host}:{settings.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
