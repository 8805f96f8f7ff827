"""Pure builder of the Grafana mesh dashboard, with grafana-foundation-sdk.

The dashboard is built with the SDK's typed builders (no hand-written JSON) and serialised
with the SDK's encoder; `MeshAlerts` ships the JSON in a ConfigMap for Grafana's dashboard
sidecar. Queries use Istio's standard metrics and the Envoy cluster stats IstioMesh exports
(the same ones the alerts read), filtered by the `cluster` and `service` variables.
"""

from __future__ import annotations

import json
from typing import Final

from grafana_foundation_sdk.builders import dashboard as builder
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

from components.alerts.rules import EJECTIONS, PENDING_OVERFLOW
from components.alerts.traffic import GRPC_SERVER_FAILURES, RATE_LIMITED_FLAG

DASHBOARD_UID: Final = "meshstack-mesh"
DASHBOARD_TITLE: Final = "Meshstack / Mesh traffic"
DASHBOARD_FILE: Final = "meshstack-mesh.json"
"""Key of the dashboard in the ConfigMap; the sidecar writes it under this file name."""

GRAFANA_DASHBOARD_LABEL: Final = {"grafana_dashboard": "1"}
"""The label Grafana's dashboard sidecar looks for (kube-prometheus-stack's default)."""

RATE: Final = "$__rate_interval"
"""Grafana's rate window: at least four scrape intervals, whatever the zoom."""

DATASOURCE: Final = DataSourceRef(type_val="prometheus", uid="${datasource}")

_SERVER: Final = (
    'reporter="destination", destination_cluster=~"$cluster", destination_service_name=~"$service"'
)
_CLIENT: Final = (
    'reporter="source", destination_cluster=~"$cluster", destination_service_name=~"$service"'
)
_UPSTREAM: Final = r'cluster_name=~"outbound\\|[0-9]+\\|[^|]*\\|($service)\\..*"'
"""Envoy stats carry the upstream in `cluster_name` (`outbound|8080||svc.ns.svc.cluster.local`)
and no mesh-cluster label; the service variable filters on the host part."""

FLAGGER_TRACKS: Final = ("primary", "canary")
"""Suffixes of the Services Flagger routes a canary's traffic to (`<svc>-primary`,
`<svc>-canary`); both run the same `destination_version`."""

TRACK_LABEL: Final = "track"
"""Label the split query moves the Flagger suffix into (empty for subset canaries)."""

_FLAGGER_NAME: Final = f"(.+)-({'|'.join(FLAGGER_TRACKS)})"
_SPLIT: Final = (
    'reporter="source", destination_cluster=~"$cluster", '
    f'destination_service_name=~"($service)(-({"|".join(FLAGGER_TRACKS)}))?"'
)
"""The callers' view: a mirrored request is reported by the destination sidecar under the
mirror's version, but the calling proxy reports only the request it routed."""


_GRPC_FAILED: Final = (
    f'request_protocol="grpc", grpc_response_status=~"{"|".join(GRPC_SERVER_FAILURES)}", '
    f'response_flags!~"{RATE_LIMITED_FLAG}"'
)
"""A gRPC call the server failed: HTTP 200 with a server-side grpc-status in the trailer (the
alerts' `GRPC_SERVER_FAILURES`), not one the local rate limiter refused."""

_GRPC_RATE_LIMITED: Final = f'request_protocol="grpc", response_flags=~"{RATE_LIMITED_FLAG}"'
"""A gRPC call the server's local rate limiter refused: HTTP 200 with grpc-status
UNAVAILABLE or RESOURCE_EXHAUSTED and flag `RL` at the server sidecar, never a 429."""


def _failed(selector: str) -> str:
    """Failed requests per service: a 5xx, or a gRPC call the server failed. The selectors
    are joined with `or` before the `sum`, so a series both match counts once."""
    return (
        "sum by (destination_service_name) (\n"
        f'  rate(istio_requests_total{{{selector}, response_code=~"5.."}}[{RATE}])\n  or\n'
        f"  rate(istio_requests_total{{{selector}, {_GRPC_FAILED}}}[{RATE}])\n)"
    )


def _split_requests() -> str:
    """Request rate per service and version, Flagger's `-primary`/`-canary` folded into the
    service's name with the suffix in `TRACK_LABEL`."""
    by_name = (
        "sum by (destination_service_name, destination_version) "
        f"(rate(istio_requests_total{{{_SPLIT}}}[{RATE}]))"
    )
    with_track = (
        f'label_replace({by_name}, "{TRACK_LABEL}", "$2", '
        f'"destination_service_name", "{_FLAGGER_NAME}")'
    )
    return (
        f'label_replace({with_track}, "destination_service_name", "$1", '
        f'"destination_service_name", "{_FLAGGER_NAME}")'
    )


PANEL_QUERIES: Final = {
    "Request rate": (
        f"sum by (destination_service_name) (rate(istio_requests_total{{{_SERVER}}}[{RATE}]))"
    ),
    "Error rate %": (
        f"100 * {_failed(_SERVER)}\n/\n"
        f"sum by (destination_service_name) (rate(istio_requests_total{{{_SERVER}}}[{RATE}]))"
    ),
    "P99 latency": (
        "histogram_quantile(0.99, sum by (destination_service_name, le) "
        f"(rate(istio_request_duration_milliseconds_bucket{{{_SERVER}}}[{RATE}])))"
    ),
    "Canary traffic split %": (
        f"100 * sum by (destination_service_name, destination_version, {TRACK_LABEL}) "
        f"({_split_requests()})\n"
        f"/ ignoring (destination_version, {TRACK_LABEL}) group_left\n"
        f"sum by (destination_service_name) ({_split_requests()})"
    ),
    "Outlier ejections / circuit breaker": (
        f"sum by (cluster_name) (rate({EJECTIONS}{{{_UPSTREAM}}}[{RATE}]))"
    ),
    "Rate-limited requests (429)": (
        # HTTP: the 429 as the caller (or the gateway that refused it) reports it. gRPC: the
        # refusing server sidecar's `RL`; the caller sees only an ordinary gRPC error.
        "sum by (destination_service_name) (\n"
        f'  rate(istio_requests_total{{{_CLIENT}, response_code="429"}}[{RATE}])\n  or\n'
        f"  rate(istio_requests_total{{{_SERVER}, {_GRPC_RATE_LIMITED}}}[{RATE}])\n)"
    ),
}
"""First query of each panel, by panel title."""

PENDING_OVERFLOW_QUERY: Final = (
    f"sum by (cluster_name) (rate({PENDING_OVERFLOW}{{{_UPSTREAM}}}[{RATE}]))"
)
"""Second query of the circuit-breaker panel: requests shed by the pending-request limit."""

_LEGENDS: Final = {
    "Canary traffic split %": (
        "{{destination_service_name}} {{destination_version}} {{" + TRACK_LABEL + "}}"
    ),
    "Outlier ejections / circuit breaker": "ejections {{cluster_name}}",
}
_UNITS: Final = {
    "Request rate": "reqps",
    "Error rate %": "percent",
    "P99 latency": "ms",
    "Canary traffic split %": "percent",
    "Outlier ejections / circuit breaker": "ops",
    "Rate-limited requests (429)": "reqps",
}


def _query(expr: str, ref_id: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).ref_id(ref_id).legend_format(legend).range()


def _panel(panel_id: int, title: str) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .datasource(DATASOURCE)
        .unit(_UNITS[title])
        .span(12)
        .height(8)
        .with_target(
            _query(PANEL_QUERIES[title], "A", _LEGENDS.get(title, "{{destination_service_name}}"))
        )
    )
    if title == "Outlier ejections / circuit breaker":
        panel = panel.with_target(
            _query(PENDING_OVERFLOW_QUERY, "B", "pending overflow {{cluster_name}}")
        )
    return panel


def _success_stat(panel_id: int) -> stat.Panel:
    expr = (
        f"100 * (1 - (sum({_failed(_SERVER)}) or vector(0))\n/\n"
        f"sum(rate(istio_requests_total{{{_SERVER}}}[{RATE}])))"
    )
    return (
        stat.Panel()
        .id(panel_id)
        .title("Success rate")
        .datasource(DATASOURCE)
        .unit("percent")
        .span(24)
        .height(4)
        .with_target(_query(expr, "A", "success"))
    )


def _variables() -> list[builder.DatasourceVariable | builder.QueryVariable]:
    return [
        builder.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        builder.QueryVariable("cluster")
        .label("Cluster (region)")
        .datasource(DATASOURCE)
        .query("label_values(istio_requests_total, destination_cluster)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True),
        builder.QueryVariable("service")
        .label("Service")
        .datasource(DATASOURCE)
        .query(
            'label_values(istio_requests_total{destination_cluster=~"$cluster"}, '
            "destination_service_name)"
        )
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True),
    ]


def mesh_dashboard() -> builder.Dashboard:
    """The dashboard builder: success stat, then one time series per `PANEL_QUERIES` entry."""
    dashboard = (
        builder.Dashboard(DASHBOARD_TITLE)
        .uid(DASHBOARD_UID)
        .description("Traffic, errors, latency, canary split, circuit breakers and rate limits.")
        .tags(["meshstack", "istio"])
        .readonly()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
    )
    for variable in _variables():
        dashboard = dashboard.with_variable(variable)
    dashboard = dashboard.with_panel(_success_stat(1))
    for panel_id, title in enumerate(PANEL_QUERIES, start=2):
        dashboard = dashboard.with_panel(_panel(panel_id, title))
    return dashboard


def dashboard_json() -> str:
    """The dashboard as Grafana JSON, serialised by the SDK's encoder."""
    return json.dumps(mesh_dashboard().build(), cls=JSONEncoder, indent=2, sort_keys=True)
