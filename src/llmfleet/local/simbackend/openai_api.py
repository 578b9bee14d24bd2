"""The OpenAI-compatible wire format as vLLM speaks it: request validation and response bodies.

Pure functions and pydantic models, no I/O: the aiohttp handlers in `server.py` call these. The
request models mirror vLLM's (`extra="allow"`, pydantic's lax coercion, so `"stream": "yes"` is
true there and here) and the error bodies use vLLM's shape:
`{"error": {"message", "type", "param", "code"}}` with `code` equal to the HTTP status.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

VLLM_VERSION = "0.11.0"
CHARS_PER_TOKEN = 4  # rough English average for Llama-style tokenizers

# Generated text: one word per token, from a small fixed vocabulary.
VOCAB: tuple[str, ...] = (
    "the", "model", "answers", "with", "simulated", "tokens", "that", "look", "like", "text",
    "while", "the", "batch", "grows", "and", "latency", "follows", "queue", "of", "requests",
    "a", "fleet", "on", "spot", "GPUs", "keeps", "up", "when", "traffic", "explodes", "so",
    "every", "stream", "gets", "its", "words", "in", "order", "cache", "blocks", "fill",
    "then", "drain", "as", "sequences", "finish", "one", "step", "at", "time", "scheduler",
    "admits", "waiting", "work", "into", "running", "slots", "until", "memory", "runs", "out",
    "again",
)  # fmt: skip

ERROR_TYPES: dict[int, str] = {
    400: "BadRequestError",
    404: "NotFoundError",
    413: "RequestEntityTooLargeError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}

JSON_SEPARATORS = (",", ":")


class APIError(Exception):
    """A request the API refuses: rendered as vLLM's error body with `status`."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return error_body(self.status, self.message, self.param)


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """vLLM's error shape for HTTP `status`."""
    err_type = ERROR_TYPES.get(status, "BadRequestError" if status < 500 else "InternalServerError")
    return {"error": {"message": message, "type": err_type, "param": param, "code": status}}


def dumps(payload: Any) -> str:
    """Compact JSON, as vLLM (pydantic / Starlette) writes it."""
    return json.dumps(payload, ensure_ascii=False, separators=JSON_SEPARATORS, allow_nan=False)


def random_id() -> str:
    """A request id like vLLM's random_uuid()."""
    return uuid.uuid4().hex


# -- requests --------------------------------------------------------------------------------


class _VllmModel(BaseModel):
    # Unknown fields (temperature, top_p, tools, ...) are accepted and ignored, as vLLM does.
    model_config = ConfigDict(extra="allow")


class StreamOptions(_VllmModel):
    """`stream_options`; vLLM defaults include_usage to true once the object is given."""

    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


class _SamplingRequest(_VllmModel):
    model: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    n: int | None = 1
    request_id: str | None = None


class ChatCompletionRequest(_SamplingRequest):
    """The fields of a chat completion request that the simulator acts on."""

    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = None


class CompletionRequest(_SamplingRequest):
    """The fields of a text completion request that the simulator acts on."""

    prompt: list[int] | list[list[int]] | str | list[str] | None = None


Kind = Literal["chat", "completion"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated generation request, reduced to what the engine and the response need."""

    kind: Kind
    model: str  # the served name to echo back
    prompt_tokens: int
    max_tokens: int | None  # the client's limit, if any
    min_tokens: int
    ignore_eos: bool
    stream: bool
    include_usage: bool
    continuous_usage_stats: bool
    body_request_id: str | None


def estimate_tokens(text: str) -> int:
    """Approximate token count of `text`: ~1 token per 4 characters, at least 1."""
    return estimate_tokens_from_chars(len(text))


def estimate_tokens_from_chars(chars: int) -> int:
    """Approximate tokens for `chars` characters of text, at least 1."""
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))


def _chat_chars(messages: list[dict[str, Any]]) -> int:
    """Characters of text over all message contents; 400 on a malformed message."""
    if not messages:
        raise APIError(400, "messages must contain at least one message", "messages")
    total = 0
    for i, message in enumerate(messages):
        if not isinstance(message.get("role"), str):
            raise APIError(400, f"messages[{i}].role must be a string", "messages")
        content = message.get("content")
        if content is None:
            continue
        if isinstance(content, str):
            total += len(content)
            continue
        if not isinstance(content, list):
            raise APIError(400, f"messages[{i}].content must be a string or a list", "messages")
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise APIError(
                    400, f"messages[{i}].content parts must be objects with a type", "messages"
                )
            if part["type"] == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise APIError(400, f"messages[{i}] text part needs a string text", "messages")
                total += len(text)
    return total


def _completion_prompt_tokens(prompt: list[int] | list[list[int]] | str | list[str] | None) -> int:
    if prompt is None:
        raise APIError(400, "Either prompt or prompt_embeds must be provided.", "prompt")
    if isinstance(prompt, str):
        return estimate_tokens(prompt)
    if not prompt:
        raise APIError(400, "The prompt cannot be empty.", "prompt")
    if len(prompt) > 1 and not isinstance(prompt[0], int):
        # Batched prompts would need one choice per prompt; load tests never send them.
        raise APIError(400, "The simulated backend accepts one prompt per request.", "prompt")
    first = prompt[0]
    if isinstance(first, str):
        return estimate_tokens(first)
    if isinstance(first, list):
        if not first:
            raise APIError(400, "The prompt cannot be empty.", "prompt")
        return len(first)
    return len(prompt)


def _validation_message(exc: ValidationError) -> str:
    # One line per problem, without pydantic's documentation links, so clients can show it.
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
    ]
    return f"{exc.error_count()} validation error(s) for {exc.title}: " + "; ".join(problems)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object; 400 otherwise."""
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad JSON, non-UTF-8 bytes and integers too long to convert.
        raise APIError(400, f"JSON decode error: {exc}") from None
    if not isinstance(payload, dict):
        raise APIError(400, "Input should be a valid dictionary or object to extract fields from")
    try:
        # A lone surrogate (a "\\ud800" escape) is valid JSON but not Unicode text: strict
        # parsers (orjson) refuse it, and nothing that echoes it back could encode it.
        json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end].encode("utf-8", "backslashreplace").decode()
        raise APIError(400, f"JSON decode error: a lone surrogate ({bad}) is not valid "
                            "Unicode text") from None
    return payload


def parse_generation_request(
    kind: Kind, payload: dict[str, Any], served_names: tuple[str, ...], max_model_len: int
) -> GenerationRequest:
    """Validate a chat or completion request the way vLLM does; APIError on refusal."""
    model_cls = ChatCompletionRequest if kind == "chat" else CompletionRequest
    try:
        req = model_cls.model_validate(payload)
    except ValidationError as exc:
        raise APIError(400, _validation_message(exc)) from None
    model = req.model if req.model is not None else served_names[0]
    if model not in served_names:
        raise APIError(404, f"The model `{model}` does not exist.", "model")
    if req.stream_options is not None and not req.stream:
        raise APIError(
            400, "Stream options can only be defined when `stream=True`.", "stream_options"
        )
    if req.n is not None and req.n != 1:
        raise APIError(400, "The simulated backend supports only n=1.", "n")
    if isinstance(req, ChatCompletionRequest):
        prompt_tokens = estimate_tokens_from_chars(_chat_chars(req.messages))
        max_tokens = req.max_completion_tokens or req.max_tokens
    else:
        assert isinstance(req, CompletionRequest)
        prompt_tokens = _completion_prompt_tokens(req.prompt)
        max_tokens = req.max_tokens
    if max_tokens is not None and max_tokens < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
    if req.min_tokens < 0:
        raise APIError(
            400,
            f"min_tokens must be greater than or equal to 0, got {req.min_tokens}.",
            "min_tokens",
        )
    if max_tokens is not None and req.min_tokens > max_tokens:
        raise APIError(
            400,
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, "
            f"got {req.min_tokens}.",
            "min_tokens",
        )
    if prompt_tokens >= max_model_len:
        raise APIError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {prompt_tokens} input tokens. Please reduce the length of the input "
            "messages.",
            "messages" if kind == "chat" else "prompt",
        )
    if max_tokens is not None and prompt_tokens + max_tokens > max_model_len:
        raise APIError(
            400,
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
            f"maximum context length is {max_model_len} tokens and your request has "
            f"{prompt_tokens} input tokens ({max_tokens} > {max_model_len} - {prompt_tokens}).",
            "max_tokens",
        )
    options = req.stream_options
    return GenerationRequest(
        kind=kind,
        model=model,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        min_tokens=req.min_tokens,
        ignore_eos=req.ignore_eos,
        stream=bool(req.stream),
        include_usage=bool(req.stream and options and options.include_usage),
        continuous_usage_stats=bool(req.stream and options and options.continuous_usage_stats),
        body_request_id=req.request_id,
    )


# -- responses -------------------------------------------------------------------------------


def token_text(word_seed: int, index: int) -> str:
    """The text of output token `index`: a vocabulary word, space-separated after the first."""
    word = VOCAB[(word_seed + index * 7) % len(VOCAB)]
    return word if index == 0 else " " + word


def output_text(word_seed: int, count: int) -> str:
    """The whole text of `count` output tokens."""
    return "".join(token_text(word_seed, i) for i in range(count))


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The `usage` object, in vLLM's key order."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def response_id(kind: Kind, request_id: str) -> str:
    """`chatcmpl-…` or `cmpl-…`, as vLLM derives it from the request id."""
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{request_id}"


def completion_body(
    req: GenerationRequest,
    resp_id: str,
    created: int,
    text: str,
    finish_reason: str,
    completion_tokens: int,
) -> dict[str, Any]:
    """A non-streaming response body, field for field as vLLM 0.11 returns it."""
    use = {**usage(req.prompt_tokens, completion_tokens), "prompt_tokens_details": None}
    if req.kind == "chat":
        message = {
            "role": "assistant",
            "content": text,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": [],
            "reasoning_content": None,
        }
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
        }
        return {
            "id": resp_id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": use,
            "prompt_logprobs": None,
            "kv_transfer_params": None,
        }
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": None,
        "prompt_logprobs": None,
    }
    return {
        "id": resp_id,
        "object": "text_completion",
        "created": created,
        "model": req.model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": use,
        "kv_transfer_params": None,
    }


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying `payload`."""
    return f"data: {dumps(payload)}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


def stream_chunk(
    req: GenerationRequest,
    resp_id: str,
    created: int,
    text: str,
    finish_reason: str | None,
    *,
    role: bool = False,
    usage_so_far: dict[str, int] | None = None,
) -> bytes:
    """One streamed chunk carrying `text` (chat: a delta; completions: a text piece)."""
    choice: dict[str, Any]
    if req.kind == "chat":
        delta = {"role": "assistant", "content": text} if role else {"content": text}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    if finish_reason is not None:
        choice["stop_reason"] = None
    payload: dict[str, Any] = {
        "id": resp_id,
        "object": obj,
        "created": created,
        "model": req.model,
        "choices": [choice],
    }
    if usage_so_far is not None:
        payload["usage"] = usage_so_far
    return sse(payload)


def usage_chunk(
    req: GenerationRequest, resp_id: str, created: int, completion_tokens: int
) -> bytes:
    """The final `choices: []` chunk with usage, sent when stream_options.include_usage."""
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    payload = {
        "id": resp_id,
        "object": obj,
        "created": created,
        "model": req.model,
        "choices": [],
        "usage": usage(req.prompt_tokens, completion_tokens),
    }
    return sse(payload)


def models_body(served_names: tuple[str, ...], root: str, max_model_len: int) -> dict[str, Any]:
    """The `GET /v1/models` body, one entry per served name, as vLLM lists them."""
    created = int(time.time())
    data = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": root,
            "parent": None,
            "max_model_len": max_model_len,
            "permission": [
                {
                    "id": f"modelperm-{random_id()}",
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        for name in served_names
    ]
    return {"object": "list", "data": data}
