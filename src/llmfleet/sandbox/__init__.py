"""The local sandbox: the fleet's edge and backends as processes on this machine."""

from llmfleet.sandbox.lifecycle import default_state_dir, down, status, up
from llmfleet.sandbox.run import SandboxError, SandboxRun

__all__ = ["SandboxError", "SandboxRun", "default_state_dir", "down", "status", "up"]
