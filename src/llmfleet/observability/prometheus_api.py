"""Prometheus' HTTP query API, as the autoscaler, `llmfleet top` and the load generator's
picture read it: instant and range queries, each one request with a timeout."""

from __future__ import annotations

import json
from typing import Any
from urllib.error import URLError
from urllib.parse import urlencode
from urllib.request import urlopen

from llmfleet.errors import LlmfleetError


class PrometheusError(LlmfleetError):
    """Prometheus could not be asked, or refused the query; the message names both."""


def query(url: str, expr: str, *, at: float | None = None,
          timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """An instant query's result (`metric` and `value` per series), now or `at` a Unix time."""
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    return _get(url, "query", params, expr, timeout_s)


def query_range(url: str, expr: str, start: float, end: float, step_s: float, *,
                timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """A range query's result (`metric` and `values` per series) over Unix times."""
    params = {"query": expr, "start": start, "end": end, "step": step_s}
    return _get(url, "query_range", params, expr, timeout_s)


def _get(url: str, endpoint: str, params: dict[str, Any], expr: str,
         timeout_s: float) -> list[dict[str, Any]]:
    base = url.rstrip("/")
    try:
        with urlopen(f"{base}/api/v1/{endpoint}?{urlencode(params)}",
                     timeout=timeout_s) as response:
            body = json.load(response)
    except (URLError, OSError, ValueError) as error:
        raise PrometheusError(f"cannot query Prometheus at {base}: {error}") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", body) if isinstance(body, dict) else body
        raise PrometheusError(f"Prometheus at {base} refused {expr!r}: {error}")
    return body["data"]["result"]
