"""The local sandbox: the fleet's edge and backends as processes on this machine."""

from llmfleet.local.sandbox.lifecycle import default_state_dir, down, status, up
from llmfleet.local.sandbox.run import SandboxError, SandboxRun, SandboxState, load_state
from llmfleet.local.sandbox.status import BackendStatus, ProcessStatus, SandboxStatus

__all__ = [
    "BackendStatus",
    "ProcessStatus",
    "SandboxError",
    "SandboxRun",
    "SandboxState",
    "SandboxStatus",
    "default_state_dir",
    "down",
    "load_state",
    "status",
    "up",
]
