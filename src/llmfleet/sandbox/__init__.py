"""The local sandbox: the fleet's edge and backends as processes on this machine."""

from llmfleet.sandbox.lifecycle import SandboxError, default_state_dir, down, status, up

__all__ = ["SandboxError", "default_state_dir", "down", "status", "up"]
