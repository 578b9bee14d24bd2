"""The local sandbox: the fleet's edge and backends as processes on this machine."""

from llmfleet.local.sandbox.lifecycle import default_state_dir, down, status, up
from llmfleet.local.sandbox.run import SandboxError, SandboxRun

__all__ = ["SandboxError", "SandboxRun", "default_state_dir", "down", "status", "up"]
