"""The commands that start one model server: the simulated vLLM, or real `vllm serve`."""

from __future__ import annotations

import shutil
import sys

from llmfleet.config import BackendKind, FleetConfig
from llmfleet.local.sandbox.ports import LOOPBACK


def backend_command(config: FleetConfig, index: int, port: int, *,
                    startup_delay_s: float = 0.0) -> list[str]:
    """argv for backend number `index` (0-based) listening on `port`; a simulated one waits
    `startup_delay_s` before it listens (a real vLLM takes its own time)."""
    model = config.model
    if config.sandbox.backend is BackendKind.VLLM:
        vllm = shutil.which("vllm")
        if vllm is None:
            raise FileNotFoundError(
                "--backend vllm needs vLLM installed (pip install vllm) and a GPU; "
                "use the simulated backend otherwise"
            )
        return [
            vllm, "serve", model.name,
            "--host", LOOPBACK,
            "--port", str(port),
            "--served-model-name", model.public_name,
            "--max-model-len", str(model.max_model_len),
            *model.extra_args,
        ]
    sandbox = config.sandbox
    command = [
        sys.executable, "-m", "llmfleet.local.simbackend",
        "--host", LOOPBACK,
        "--port", str(port),
        "--model", model.name,
        "--served-model-name", model.public_name,
        "--max-model-len", str(model.max_model_len),
        "--preset", sandbox.preset,
        "--name", backend_name(index),
        "--seed", str(index),
        "--time-scale", str(sandbox.time_scale),
        # `down` stops the edge first, so little is in flight; don't hold the teardown long.
        "--shutdown-timeout", "1",
    ]
    if sandbox.max_num_seqs is not None:
        command += ["--max-num-seqs", str(sandbox.max_num_seqs)]
    if startup_delay_s > 0:
        command += ["--startup-delay", f"{startup_delay_s:g}"]
    return command


def backend_name(index: int) -> str:
    return f"backend-{index + 1}"
