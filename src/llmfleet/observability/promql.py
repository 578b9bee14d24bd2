"""Small PromQL text helpers: durations as Prometheus writes them, and the metric names an
expression reads (for checking dashboards and rules against what is exported)."""

from __future__ import annotations

import re

_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def duration(seconds: float) -> str:
    """`300` → "5m", `90` → "1m30s", `0.5` → "500ms" (Prometheus and Alertmanager syntax)."""
    remaining = round(seconds * 1000)
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
})  # fmt: skip
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# Label lists after by/without/on/ignoring/group_left/group_right name labels, not metrics.
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])\s*(\()?")


def metric_names(expr: str) -> set[str]:
    """The metric (or recording rule) names `expr` selects; Grafana's `$__x` variables and
    label matchers, range windows and function names are left out."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _LABEL_LIST.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call or name.lower() in _KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        names.add(name)
    return names


def family(name: str) -> str:
    """The metric family of a series name: histogram parts map to the histogram's name."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def unguarded_divisions(expr: str) -> list[str]:
    """Denominators not written `(b > 0)`: those turn an idle panel or rule into NaN."""
    text = _STRING.sub('""', expr)
    found = []
    for match in re.finditer(r"/\s*", text):
        rest = text[match.end():]
        if not rest.startswith("("):
            found.append(rest.split()[0] if rest.split() else rest)
            continue
        depth = 0
        for index, char in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                group = rest[: index + 1]
                break
        else:
            group = rest
        if not re.search(r">\s*0\s*\)$", group):
            found.append(group)
    return found
