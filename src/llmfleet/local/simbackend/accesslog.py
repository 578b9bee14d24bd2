"""The simulator's one-line-per-request access log, and its parser.

A line looks like (one line, fields separated by single spaces, values never contain spaces):

    2026-11-28T01:02:03.123Z backend-1 request_id=chatcmpl-abc method=POST
    path=/v1/chat/completions status=200 stream=true prompt_tokens=12 completion_tokens=40
    finish_reason=length duration_ms=523.1

`-` stands for "not applicable" (e.g. token counts of a rejected request). Tests and the sandbox
count requests per backend by parsing log files with `parse_access_log_line`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ACCESS_LOG_FIELDS: tuple[str, ...] = (
    "request_id",
    "method",
    "path",
    "status",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "duration_ms",
)
_INT_FIELDS = ("status", "prompt_tokens", "completion_tokens")
_MAX_VALUE_LEN = 200  # client-supplied values (request ids, paths) are cut to keep lines sane
_UNSAFE = re.compile(r"[\s=\"]|[^\x21-\x7e]")
_LINE_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+)((?: [a-z_]+=\S*)+)$")


def utc_timestamp(moment: datetime | None = None) -> str:
    """An ISO-8601 UTC timestamp with milliseconds and a Z, e.g. 2026-11-28T01:02:03.123Z."""
    moment = moment or datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def clean_value(value: object) -> str:
    """A value that cannot break the line format: no spaces, quotes, `=` or control bytes."""
    text = str(value)
    if text == "":
        return "-"
    return _UNSAFE.sub("_", text[:_MAX_VALUE_LEN])


def format_access_log_line(backend: str, fields: dict[str, Any]) -> str:
    """One access-log line for `backend`, fields in ACCESS_LOG_FIELDS order (missing → `-`)."""
    parts = [utc_timestamp(), clean_value(backend)]
    for key in ACCESS_LOG_FIELDS:
        value = fields.get(key)
        if value is None:
            text = "-"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = f"{value:.1f}"
        else:
            text = clean_value(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def parse_access_log_line(line: str) -> dict[str, Any] | None:
    """Parse one access-log line; None for anything else (startup line, blank, garbage).

    Returns `ts`, `backend` and every key=value field; `status`, `prompt_tokens` and
    `completion_tokens` become int (or None for `-`), `duration_ms` float, `stream` bool.
    """
    match = _LINE_RE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    out: dict[str, Any] = {"ts": match.group(1), "backend": match.group(2)}
    for pair in match.group(3).split():
        key, _, value = pair.partition("=")
        out[key] = value
    if not all(key in out for key in ("request_id", "method", "path", "status")):
        return None
    try:
        for key in _INT_FIELDS:
            if key in out:
                out[key] = None if out[key] == "-" else int(out[key])
        if "duration_ms" in out:
            out["duration_ms"] = None if out["duration_ms"] == "-" else float(out["duration_ms"])
    except ValueError:
        return None
    if "stream" in out:
        out["stream"] = out["stream"] == "true"
    return out


def read_access_log(path: str | Path, path_filter: str | None = None) -> list[dict[str, Any]]:
    """Every request entry in a backend's log file (other lines skipped), optionally only
    those for one URL path: how tests and people count where requests went."""
    entries = []
    for line in Path(path).read_text(errors="replace").splitlines():
        entry = parse_access_log_line(line)
        if entry is not None and (path_filter is None or entry["path"] == path_filter):
            entries.append(entry)
    return entries
