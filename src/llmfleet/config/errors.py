"""Config errors a person can act on: the key, the value given, and what is allowed.

Pydantic already collects every bad value in one pass; this module turns its records into
one line per problem, with the allowed keys or range spelled out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

# A ConfigIssue about a key rather than its value (a missing or misplaced key) shows none.
NO_VALUE = object()


@dataclass(frozen=True)
class ConfigIssue:
    key: str
    value: Any
    problem: str

    def __str__(self) -> str:
        if self.value is NO_VALUE:
            return f"{self.key}: {self.problem}"
        return f"{self.key}: got {_show(self.value)}; {self.problem}"


class ConfigError(ValueError):
    """Raised when a config has one or more bad values; lists all of them."""

    def __init__(self, source: str, issues: list[ConfigIssue]):
        self.source = source
        self.issues = issues
        count = f"{len(issues)} problem" + ("s" if len(issues) != 1 else "")
        lines = [f"invalid llmfleet config in {source} ({count}):"]
        lines += [f"  - {issue}" for issue in issues]
        super().__init__("\n".join(lines))


class ConfigFileError(ConfigError):
    """The file as a whole is wrong (unreadable, not YAML, not a config at all): one line."""

    def __init__(self, source: str, problem: str):
        super().__init__(source, [ConfigIssue("(file)", NO_VALUE, problem)])
        self.args = (f"{source}: {problem}",)


def from_validation_error(
    source: str, error: ValidationError, model: type[BaseModel], prefix: str = ""
) -> ConfigError:
    """Translate pydantic's error list into a ConfigError against `model`'s keys."""
    records = error.errors(include_url=False)
    locs = [tuple(r["loc"]) for r in records]
    issues = []
    for record, loc in zip(records, locs, strict=True):
        # A bad item also fails its container ("at least 1 item"); report only the item.
        if any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs):
            continue
        # A bad mapping key (a tier name, say) is reported against the mapping it is in.
        key = prefix + _dotted(loc[:-2] if loc and loc[-1] == "[key]" else loc)
        value = record.get("input", NO_VALUE)
        issues.append(ConfigIssue(key, value, _problem(record, model, loc)))
    return ConfigError(source, issues)


def _problem(record: dict[str, Any], model: type[BaseModel], loc: tuple) -> str:
    kind = record["type"]
    message = record["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if loc and loc[-1] == "[key]":
        return f"{loc[-2]!r} is not an allowed name here; {message[0].lower() + message[1:]}"
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "?"
        return f"unknown key; allowed keys here: {allowed}"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        field = _field_at(model, loc)
        if field is not None and field.description:
            return f"must be {field.description}"
    if kind in ("tuple_type", "list_type"):
        return "must be a list"
    if kind in ("model_type", "dict_type"):
        parent = _model_at(model, loc)
        if parent is not None:
            return f"must be a mapping with keys: {', '.join(parent.model_fields)}"
    message = message.replace("Input should be", "must be").replace("input should be", "must be")
    return message[0].lower() + message[1:] if message else kind


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _model_class(field.annotation)
    return current


def _field_at(model: type[BaseModel], loc: tuple) -> FieldInfo | None:
    names = [p for p in loc if not isinstance(p, int)]
    if not names:
        return None
    parent = _model_at(model, tuple(names[:-1]))
    if parent is None:
        return None
    return parent.model_fields.get(str(names[-1]))


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
