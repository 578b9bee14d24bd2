"""llmfleet: a self-hosted, OpenAI-compatible LLM API that scales on spot GPUs."""
