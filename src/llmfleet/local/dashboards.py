"""Grafana dashboards as code: plain Python here, built with Grafana's grafana-foundation-sdk,
JSON in grafana/dashboards/ (checked in).

    python -m llmfleet.local.dashboards          # write the JSON
    python -m llmfleet.local.dashboards --check  # fail when stale, when a panel queries a
                                                 # metric nothing exports, divides unguarded
                                                 # or leaves out a variable

Every dashboard picks its Prometheus with a datasource variable and filters every query by the
`stack`, `model` and `node` variables its series can carry (:data:`FILTERS`); fleet-wide panels
read the recording rules, which keep `stack` only. Ratios are written `a / (b > 0)` so an idle
panel shows nothing instead of NaN. Panels whose data only exists on AWS, with a GPU or with the
gateway say so in `needs`; the integration test queries every other panel against a real
Prometheus scraping the sandbox under load.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models import prometheus as prom_model

from llmfleet.config import FleetConfig
from llmfleet.observability import edge_exporter
from llmfleet.observability.promql import family, metric_names, unguarded_divisions
from llmfleet.observability.rules import recorded_names
from llmfleet.observability.vllm_metrics import METRIC_NAMES as VLLM_METRIC_NAMES
from llmfleet.paths import repo_root

# The Grafana version the pinned grafana-foundation-sdk builds for (pyproject.toml).
GRAFANA_VERSION = "11.6"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
Needs = Literal["aws", "gpu", "gateway"]
RATE = "$__rate_interval"
ALERTS = FleetConfig().alerts

# The label matchers each kind of series gets, by the labels it carries: vLLM's series carry
# `model_name` and, from the scrape, `stack` and `node`; the recording rules keep `stack`, and
# the `node:` ones `node`; the exporters on GPU nodes have `node`, the edge's only `stack`.
STACK = 'stack=~"$stack"'
NODE = f'{STACK}, node=~"$node"'
VLLM = f'{STACK}, model_name=~"$model", node=~"$node"'
_FILTER_BY_PREFIX: tuple[tuple[str, str], ...] = (
    ("vllm:", VLLM),
    ("node:", NODE),
    ("fleet:", STACK),
    ("tier:", STACK),
    ("DCGM_", NODE),
    ("node_", NODE),
    ("up", NODE),
)
VARIABLES = ("stack", "model", "node")


def filters_for(name: str) -> str:
    """The matchers a selector of metric `name` must carry (see :data:`STACK` and so on)."""
    for prefix, matchers in _FILTER_BY_PREFIX:
        if name == prefix or (prefix != "up" and name.startswith(prefix)):
            return matchers
    return STACK


def s(name: str, matchers: str = "") -> str:
    """The selector of `name` with the variables' matchers and any `matchers` of its own."""
    extra = f", {matchers}" if matchers else ""
    return f"{name}{{{filters_for(name)}{extra}}}"


def quantile(q: str, histogram: str, by: str = "") -> str:
    """`histogram_quantile` of a vLLM histogram over the panel's rate interval."""
    labels = f"{by}, le" if by else "le"
    return (f"histogram_quantile({q}, sum by ({labels}) "
            f"(rate({s(histogram + '_bucket')}[{RATE}])))")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


Kind = Literal["timeseries", "stat", "heatmap"]


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    kind: Kind = "timeseries"
    # What must exist for the panel to have data; None: the sandbox has it.
    needs: Needs | None = None
    # Shown when the query returns no series.
    no_value: str | None = None
    # Stat panels: (value, colour) steps above the base colour.
    thresholds: tuple[tuple[float, str], ...] = ()
    base_colour: str = "green"


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]

    @property
    def filename(self) -> str:
        return f"{self.uid}.json"

    @property
    def panels(self) -> tuple[Panel, ...]:
        return tuple(panel for row in self.rows for panel in row.panels)


def _q(expr: str, legend: str = "") -> tuple[Query, ...]:
    return (Query(expr, legend),)


def _quantiles(histogram: str) -> tuple[Query, ...]:
    return tuple(Query(quantile(q, histogram), f"P{round(float(q) * 100)}")
                 for q in ("0.5", "0.95", "0.99"))


TOKENS_PER_S = "suffix: tok/s"
RULES_NOT_LOADED = "rules not loaded"
NO_TRAFFIC = "no traffic"

TRAFFIC = Row("Traffic", (
    Panel("Healthy backends", _q(s("fleet:healthy_backends:count")), kind="stat",
          description="vLLM nodes whose metrics endpoint answers (recording rule).",
          no_value=RULES_NOT_LOADED, thresholds=((1, "green"),), base_colour="red"),
    Panel("Requests waiting", _q(s("fleet:requests_waiting:sum"), "waiting"), kind="stat",
          description="Requests queued on all nodes; the scaler acts on this. Amber at one, red "
                      "at the default LLMFleetQueueBacklog threshold.",
          no_value=RULES_NOT_LOADED,
          thresholds=((1, "orange"), (ALERTS.queue_backlog.threshold, "red"))),
    Panel("Generated tokens per second", _q(s("fleet:generation_tokens:rate"), "generated"),
          kind="stat", unit=TOKENS_PER_S, no_value=RULES_NOT_LOADED,
          thresholds=((0.001, "green"),), base_colour="text",
          description="Tokens the fleet generates per second (recording rule)."),
    Panel("5xx share at the edge", _q(s("fleet:edge_errors:ratio", 'class="5xx"'), "5xx"),
          kind="stat", unit="percentunit", no_value=NO_TRAFFIC,
          thresholds=((ALERTS.high_error_rate.threshold, "red"),),
          description="Share of responses the edge answered 5xx; red at the default "
                      "LLMFleetHighErrorRate threshold. No traffic: nothing answered."),
    Panel("Tokens per second", (Query(s("fleet:generation_tokens:rate"), "generated"),
                                Query(s("fleet:prompt_tokens:rate"), "prompt")),
          unit=TOKENS_PER_S, no_value=RULES_NOT_LOADED,
          description="Tokens the fleet generates and reads per second."),
    Panel("Requests finished per second", _q(s("fleet:requests_finished:rate"),
                                             "{{finished_reason}}"),
          unit="reqps", no_value=RULES_NOT_LOADED,
          description="stop/length: completed; abort: client left."),
))

LATENCY = Row("Latency", (
    Panel("End-to-end latency P50 / P95 / P99",
          _q(s("fleet:e2e_latency_seconds:quantile"), "P{{quantile}}"), unit="s",
          no_value=RULES_NOT_LOADED,
          description="Request latency at the model servers over the rules' rate window, "
                      "for the whole stack (recording rule: model and node do not apply)."),
    Panel("Time to first token P50 / P95 / P99",
          _q(s("fleet:ttft_seconds:quantile"), "P{{quantile}}"), unit="s",
          no_value=RULES_NOT_LOADED,
          description="For the whole stack (recording rule: model and node do not apply)."),
    Panel("Inter-token latency P50 / P95 / P99", _quantiles("vllm:inter_token_latency_seconds"),
          unit="s", no_value=NO_TRAFFIC,
          description="Time between successive tokens of a stream (vLLM's ITL)."),
    Panel("Time per output token P50 / P95 / P99",
          _quantiles("vllm:request_time_per_output_token_seconds"), unit="s",
          no_value=NO_TRAFFIC,
          description="Each request's decode time over its tokens after the first (TPOT)."),
    Panel("Queue, prefill and decode time P95", (
        Query(quantile("0.95", "vllm:request_queue_time_seconds"), "queue"),
        Query(quantile("0.95", "vllm:request_prefill_time_seconds"), "prefill"),
        Query(quantile("0.95", "vllm:request_decode_time_seconds"), "decode"),
    ), unit="s", no_value=NO_TRAFFIC,
          description="Where a request's time goes: waiting for a place in the batch, reading "
                      "the prompt, generating."),
    Panel("End-to-end latency P95 per node",
          _q(quantile("0.95", "vllm:e2e_request_latency_seconds", by="node"), "{{node}}"),
          unit="s", no_value=NO_TRAFFIC,
          description="A node much slower than the others is worth a look."),
))

ENGINE = Row("Engine", (
    Panel("Requests waiting per node", (Query(s("node:requests_waiting:sum"), "{{node}}"),
                                        Query(s("fleet:requests_waiting:max"), "max")),
          no_value=RULES_NOT_LOADED,
          description="The alert fires on the busiest node's queue."),
    Panel("Requests running", (Query(s("node:requests_running:sum"), "{{node}}"),
                               Query(s("fleet:requests_running:sum"), "stack")),
          no_value=RULES_NOT_LOADED, description="Requests in the nodes' running batches."),
    Panel("KV-cache usage", _q(s("node:kv_cache_usage:max"), "{{node}}"), unit="percentunit",
          no_value=RULES_NOT_LOADED,
          description="Above 90 % requests get preempted and recomputed."),
    Panel("Preemptions per second", _q(
        f"sum by (node) (rate({s('vllm:num_preemptions_total')}[{RATE}]))", "{{node}}"),
          no_value=NO_TRAFFIC,
          description="Requests evicted from the batch because the KV cache was full; each is "
                      "recomputed (runbook: LLMFleetKVCacheFull)."),
    Panel("Prefix-cache hit rate", _q(
        f"sum by (node) (rate({s('vllm:prefix_cache_hits_total')}[{RATE}])) / "
        f"(sum by (node) (rate({s('vllm:prefix_cache_queries_total')}[{RATE}])) > 0)",
        "{{node}}"), unit="percentunit", no_value=NO_TRAFFIC,
          description="Share of prompt tokens found in the prefix cache."),
    Panel("Prompt length", _q(
        f"sum by (le) (increase({s('vllm:request_prompt_tokens_bucket')}[{RATE}]))",
        "{{le}}"), kind="heatmap", unit="short", no_value=NO_TRAFFIC,
          description="Prompt tokens of the requests finished, by vLLM's 1-2-5 buckets."),
    Panel("Generation length", _q(
        f"sum by (le) (increase({s('vllm:request_generation_tokens_bucket')}[{RATE}]))",
        "{{le}}"), kind="heatmap", unit="short", no_value=NO_TRAFFIC,
          description="Generated tokens of the requests finished, by vLLM's 1-2-5 buckets."),
))

EDGE = Row("Edge and gateway", (
    Panel("Error ratio (4xx / 5xx at the edge)",
          _q(s("fleet:edge_errors:ratio"), "{{class}}"), unit="percentunit",
          no_value=NO_TRAFFIC,
          description="Share of responses the edge sent with 4xx or 5xx (from its access "
                      "log: includes nginx's own 502/504 and the gateway's 401/429)."),
    Panel("Edge responses per second", _q(s("fleet:edge_responses:rate"), "{{class}}"),
          unit="reqps", no_value=RULES_NOT_LOADED),
    Panel("Refused busy (every node full)", _q(s("fleet:edge_busy:ratio"), "busy"),
          unit="percentunit", no_value=NO_TRAFFIC,
          description="Share of requests the edge answered 429 busy with Retry-After: every "
                      "node held load_balancing.max_requests_per_node. Alert: "
                      "LLMFleetEdgeBusy."),
    Panel("429s by tier", _q(s("tier:gateway_throttled:ratio"), "{{tier}} ratio"),
          unit="percentunit", needs="gateway", no_value=NO_TRAFFIC,
          description="Share of each tier's requests refused with 429."),
    Panel("Gateway decisions per second", _q(
        f"sum by (decision, reason) (rate({s('llmfleet_gateway_requests_total')}[{RATE}]))",
        "{{decision}} {{reason}}"), unit="reqps", needs="gateway"),
    Panel("Gateway decision time P99", _q(
        "histogram_quantile(0.99, sum by (le) "
        f"(rate({s('llmfleet_gateway_decision_seconds_bucket')}[{RATE}])))", "P99"), unit="s",
          needs="gateway", no_value=NO_TRAFFIC),
    Panel("Edge connections (nginx)", _q(s("nginx_connections_active"), "active"),
          needs="aws", description="nginx exporter reading stub_status on the edge."),
    Panel("Redis clients", _q(s("redis_connected_clients"), "clients"), needs="aws"),
    Panel("Redis reachable from the gateways", _q(f"min({s('llmfleet_gateway_redis_up')})",
                                                  "up"),
          kind="stat", needs="gateway", thresholds=((1, "green"),), base_colour="red"),
))

GPUS = Row("GPUs", (
    Panel("GPU utilisation", (Query(s("DCGM_FI_DEV_GPU_UTIL"), "{{node}} GPU {{gpu}}"),
                              Query(s("fleet:gpu_utilisation:avg"), "stack average")),
          unit="percent", needs="gpu",
          description="DCGM exporter; the default alert fires above 95 %."),
    Panel("GPU memory used", _q(
        f"{s('DCGM_FI_DEV_FB_USED')} / "
        f"(({s('DCGM_FI_DEV_FB_USED')} + {s('DCGM_FI_DEV_FB_FREE')}) > 0)",
        "{{node}} GPU {{gpu}}"), unit="percentunit", needs="gpu"),
    Panel("GPU power", _q(s("DCGM_FI_DEV_POWER_USAGE"), "{{node}} GPU {{gpu}}"), unit="watt",
          needs="gpu", description="Board power draw (DCGM)."),
    Panel("GPU temperature", _q(s("DCGM_FI_DEV_GPU_TEMP"), "{{node}} GPU {{gpu}}"),
          unit="celsius", needs="gpu",
          description="Most data-centre GPUs slow their clocks from about 85 °C."),
    Panel("Hottest GPU", _q(f"max({s('DCGM_FI_DEV_GPU_TEMP')})"), kind="stat",
          unit="celsius", needs="gpu", thresholds=((75, "orange"), (85, "red"))),
))

IDLE_CPU = s("node_cpu_seconds_total", 'mode="idle"')
HOSTS = Row("Hosts", (
    Panel("Scrape targets up", _q(f"sum by (job) ({s('up')})", "{{job}}"),
          description="Targets Prometheus reaches, by job."),
    Panel("Node CPU busy", _q(
        f"1 - avg by (node) (rate({IDLE_CPU}[{RATE}]))",
        "{{node}}"), unit="percentunit", needs="aws"),
    Panel("Node memory available", _q(
        f"{s('node_memory_MemAvailable_bytes')} / ({s('node_memory_MemTotal_bytes')} > 0)",
        "{{node}}"), unit="percentunit", needs="aws"),
))

COST = Row("Cost", (
    Panel("Estimated cost per hour", _q(s("fleet:cost_dollars_per_hour:estimate"), "USD/h"),
          unit="currencyUSD", kind="stat", needs="aws", no_value=RULES_NOT_LOADED,
          thresholds=((0.001, "blue"),), base_colour="text",
          description="GPU nodes × list price (spot estimated as a share of on-demand)."),
    Panel("GPU nodes: spot and on-demand", _q(
        f"sum by (lifecycle) ({s('fleet:gpu_nodes:count')})", "{{lifecycle}}"), needs="aws",
          no_value=RULES_NOT_LOADED),
))

SERVICE = Dashboard(
    "llmfleet-service", "LLMFleet / Service",
    "What clients get: traffic, latency, the engines' queues and caches, the edge and the "
    "gateway.",
    (TRAFFIC, LATENCY, ENGINE, EDGE),
)
FLEET = Dashboard(
    "llmfleet-fleet", "LLMFleet / Fleet and cost",
    "What the fleet is made of: GPUs, hosts, spot versus on-demand, and what it costs.",
    (GPUS, HOSTS, COST),
)
DASHBOARDS: tuple[Dashboard, ...] = (SERVICE, FLEET)


def dashboards_dir() -> Path:
    return repo_root() / "grafana" / "dashboards"


def exporter_metrics_file() -> Path:
    return repo_root() / "grafana" / "exporter-metrics.yaml"


def _label_values(name: str, label: str, of: str, description: str) -> Any:
    """A variable listing the values of `label` on series `of`; All matches any, or none."""
    return (gd.QueryVariable(name).label(name.capitalize()).description(description)
            .datasource(DATASOURCE)
            .query({"query": f"label_values({of}, {label})", "refId": name})
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*"))


def _variables() -> list[Any]:
    return [
        gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        .description("The Prometheus that scrapes the stack (one per stack on AWS)."),
        _label_values("stack", "stack", "up", "The Pulumi stack, <client>-<environment>."),
        _label_values("model", "model_name", 'vllm:num_requests_running{stack=~"$stack"}',
                      "The served model name."),
        _label_values("node", "node", 'up{stack=~"$stack"}',
                      "The instance (on AWS its id; in the sandbox the backend's name)."),
    ]


def _thresholds(panel: Panel) -> Any:
    steps = [model.Threshold(value=None, color=panel.base_colour)]
    steps += [model.Threshold(value=value, color=colour) for value, colour in panel.thresholds]
    return gd.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps)


def _no_traffic() -> list[Any]:
    result = model.ValueMappingResult(text=NO_TRAFFIC)
    return [model.SpecialValueMap(options=model.DashboardSpecialValueMapOptions(
        match=model.SpecialValueMatch.NA_N, result=result))]


def _panel(panel: Panel) -> Any:
    description = panel.description
    if panel.needs:
        description = f"{description} (Needs: {panel.needs}.)".strip()
    if panel.kind == "stat":
        builder: Any = (stat.Panel()
                        .reduce_options(gc.ReduceDataOptions().calcs(["lastNotNull"]))
                        .color_mode(common.BigValueColorMode.BACKGROUND)
                        .graph_mode(common.BigValueGraphMode.AREA)
                        .thresholds(_thresholds(panel)))
    elif panel.kind == "heatmap":
        builder = (heatmap.Panel().calculate(False)
                   .y_axis(heatmap.YAxisConfig().unit(panel.unit))
                   .color(heatmap.HeatmapColorOptions().mode(heatmap_model.HeatmapColorMode.SCHEME)
                          .scheme("Oranges").scale(heatmap_model.HeatmapColorScale.EXPONENTIAL)
                          .exponent(0.5).steps(64).reverse(False))
                   .cell_values(heatmap.CellValues().unit("requests")))
    else:
        builder = (timeseries.Panel()
                   .legend(gc.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                           .placement(common.LegendPlacement.BOTTOM).show_legend(True))
                   .line_width(1).fill_opacity(10))
    builder = builder.title(panel.title).description(description).datasource(DATASOURCE)
    if panel.kind != "heatmap":
        builder = builder.unit(panel.unit)
    if panel.no_value:
        builder = builder.no_value(panel.no_value)
    if panel.kind == "stat" or (panel.no_value == NO_TRAFFIC and panel.kind != "heatmap"):
        builder = builder.mappings(_no_traffic())
    for number, query in enumerate(panel.queries):
        target = (prometheus.Dataquery().ref_id(chr(ord("A") + number)).datasource(DATASOURCE)
                  .expr(query.expr).legend_format(query.legend))
        if panel.kind == "heatmap":
            target = target.format(prom_model.PromQueryFormat.HEATMAP)
        elif panel.kind == "stat":
            target = target.instant()
        builder = builder.with_target(target)
    return builder


def _links(dashboard: Dashboard) -> list[Any]:
    return [gd.DashboardLink(other.title).type(model.DashboardLinkType.LINK)
            .url(f"/d/{other.uid}").icon("dashboard").tooltip(other.description)
            .include_vars(True).keep_time(True)
            for other in DASHBOARDS if other.uid != dashboard.uid]


def builder(dashboard: Dashboard) -> Any:
    """The SDK's builder for one dashboard."""
    built = (gd.Dashboard(dashboard.title).uid(dashboard.uid).description(dashboard.description)
             .tags(["llmfleet"]).editable().refresh("10s").time("now-1h", "now").timezone("")
             .tooltip(model.DashboardCursorSync.CROSSHAIR).links(_links(dashboard))
             .variables(_variables()))
    # Placed here rather than by the SDK, which lets a panel that does not fit run off the
    # grid's 24 columns instead of starting a new line.
    y = 0
    for row in dashboard.rows:
        built = built.with_row(gd.Row(row.title).grid_pos(model.GridPos(h=1, w=24, x=0, y=y)))
        x, y, height = 0, y + 1, 0
        for panel in row.panels:
            w, h = (6, 4) if panel.kind == "stat" else (12, 8)
            if x + w > 24:
                x, y, height = 0, y + height, 0
            built = built.with_panel(_panel(panel).grid_pos(model.GridPos(h=h, w=w, x=x, y=y)))
            x, height = x + w, max(height, h)
        y += height
    return built


def build(dashboard: Dashboard) -> dict[str, Any]:
    """Grafana's JSON model for one dashboard."""
    data: dict[str, Any] = json.loads(json.dumps(builder(dashboard).build(), cls=JSONEncoder))
    for number, panel in enumerate(data["panels"], start=1):
        panel["id"] = number
    return data


def render_all() -> dict[str, str]:
    """File name → JSON text for every dashboard."""
    return {d.filename: json.dumps(build(d), indent=2) + "\n" for d in DASHBOARDS}


def exported_names() -> set[str]:
    """Every metric family a panel may query: vLLM's, the edge exporter's, the exporters' in
    the fixture file, and the recording rules'."""
    fixture = yaml.safe_load(exporter_metrics_file().read_text())
    names = {name for group in fixture.values() for name in group}
    return (names | set(VLLM_METRIC_NAMES) | set(edge_exporter.METRIC_NAMES)
            | recorded_names(FleetConfig()))


_SELECTOR = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")


def unfiltered_selectors(expr: str) -> list[str]:
    """Selectors in `expr` without the variables' matchers their series call for."""
    names = metric_names(expr)
    found = []
    for match in _SELECTOR.finditer(expr):
        name, braces = match.groups()
        if name not in names:
            continue
        missing = [m.strip() for m in filters_for(name).split(", ")
                   if m.strip() not in (braces or "")]
        if missing:
            found.append(f"{name} (without {', '.join(missing)})")
    return found


def for_prometheus(expr: str, rate_interval: str, **variables: str) -> str:
    """`expr` as Grafana sends it: `$__rate_interval` and each variable (`.*`, Grafana's
    value for All, unless given) filled in."""
    expr = expr.replace(RATE, rate_interval)
    for name in VARIABLES:
        expr = expr.replace(f"${name}", variables.get(name, ".*"))
    return expr


def _queries() -> Iterator[tuple[Dashboard, Panel, Query]]:
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            for query in panel.queries:
                yield dashboard, panel, query


def problems(directory: Path | None = None) -> list[str]:
    """Why the checked-in dashboards are wrong; empty when they are current and sound."""
    directory = directory or dashboards_dir()
    found = []
    known = exported_names()
    for dashboard, panel, query in _queries():
        where = f"{dashboard.uid}: panel {panel.title!r}"
        unknown = sorted(n for n in metric_names(query.expr)
                         if n not in known and family(n) not in known)
        if unknown:
            found.append(f"{where} queries {', '.join(unknown)}, which nothing exports")
        for denominator in unguarded_divisions(query.expr):
            found.append(f"{where} divides by {denominator}; write it (b > 0) so idle shows "
                         "no NaN")
        for selector in unfiltered_selectors(query.expr):
            found.append(f"{where} reads {selector}: filter it with s()")
    expected = render_all()
    for name, text in expected.items():
        path = directory / name
        if not path.is_file() or path.read_text() != text:
            found.append(f"{path} is stale; run python -m llmfleet.local.dashboards")
    for path in sorted(directory.glob("*.json")):
        if path.name not in expected:
            found.append(f"{path} is not generated by llmfleet.local.dashboards")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmfleet.local.dashboards",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="fail when the JSON is stale, or a panel queries an unknown metric, "
                             "divides unguarded or leaves out a variable")
    parser.add_argument("--out", type=Path, default=None,
                        help="dashboards folder (default: grafana/dashboards in the checkout)")
    args = parser.parse_args(argv)
    directory = args.out or dashboards_dir()
    if args.check:
        found = problems(directory)
        for problem in found:
            print(problem, file=sys.stderr)
        return 1 if found else 0
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (directory / name).write_text(text)
        print(f"wrote {directory / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
