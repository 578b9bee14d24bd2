"""A simulated vLLM server: `vllm serve`'s HTTP surface over a continuous-batching model.

Used by the local sandbox (nginx in front of several of these) and by integration tests. See
docs/simulated-backend.md. Run it with `python -m llmfleet.local.simbackend --help`.
"""

from llmfleet.local.simbackend.accesslog import (
    format_access_log_line,
    parse_access_log_line,
    read_access_log,
)
from llmfleet.local.simbackend.faults import FAULT_MODES
from llmfleet.local.simbackend.metrics import parse_exposition
from llmfleet.local.simbackend.openai_api import VLLM_VERSION, estimate_tokens
from llmfleet.local.simbackend.presets import PRESETS, Preset, get_preset
from llmfleet.local.simbackend.server import ServerThread, SimSettings, build_app, serve

__all__ = [
    "FAULT_MODES",
    "PRESETS",
    "VLLM_VERSION",
    "Preset",
    "ServerThread",
    "SimSettings",
    "build_app",
    "estimate_tokens",
    "format_access_log_line",
    "get_preset",
    "parse_access_log_line",
    "parse_exposition",
    "read_access_log",
    "serve",
]
