"""The running sandbox's API keys: its Redis, with the tiers it was started with."""

from __future__ import annotations

from pathlib import Path

from llmfleet.config import load_config
from llmfleet.gateway.keys import KeyStore
from llmfleet.local.sandbox.run import SandboxError, load_state


def key_store(state_dir: Path) -> KeyStore:
    """The keys of the sandbox recorded in `state_dir`."""
    state = load_state(state_dir)
    if state is None or state.redis_url is None or state.redis_password_file is None:
        raise SandboxError("no sandbox with Redis is running here; start one with "
                           "`llmfleet up`, or name a Redis with --redis-url")
    config = load_config(state.config_file).config
    return KeyStore.connect(state.redis_url, Path(state.redis_password_file).read_text(),
                            set(config.rate_limits.tiers))
