"""The Grafana dashboard: produced by grafana-foundation-sdk, with the panels issue 4 lists."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from components.alerts import dashboard
from components.alerts.rules import EJECTIONS, PENDING_OVERFLOW

PARSED: dict[str, Any] = json.loads(dashboard.dashboard_json())

REQUIRED_PANELS = {
    "Request rate": "istio_requests_total",
    "Error rate %": 'grpc_response_status=~"2|4|12|13|14|15"',
    "P99 latency": "histogram_quantile(0.99,",
    "Canary traffic split %": "destination_version",
    "Outlier ejections / circuit breaker": EJECTIONS,
    "Rate-limited requests (429)": 'request_protocol="grpc", response_flags=~"(.+,)?RL(,.+)?"',
}


def _panels() -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in PARSED["panels"]}


def _as_grafana_would_query(expr: str) -> str:
    """Interpolate Grafana's variables the way Grafana does before sending the query."""
    expr = expr.replace("$__rate_interval", "1m")
    return re.sub(r"\$(cluster|service)\b", "(a|b)", expr)


def test_the_json_is_what_the_sdk_builder_serialises() -> None:
    built = dashboard.mesh_dashboard().build()
    assert isinstance(built, Dashboard)
    assert json.loads(json.dumps(built, cls=JSONEncoder)) == PARSED


def _grpc_series(
    reporter: str, code: str, status: str, flags: str, per_scrape: float
) -> dict[str, str]:
    labels = (
        f'reporter="{reporter}", destination_cluster="a", destination_service_name="b", '
        f'request_protocol="grpc", response_code="{code}", grpc_response_status="{status}", '
        f'response_flags="{flags}"'
    )
    return {"series": f"istio_requests_total{{{labels}}}", "values": f"0+{per_scrape:g}x40"}


def test_error_and_rate_limit_panels_count_grpc(promtool: str, tmp_path: Path) -> None:
    # A gRPC service: 70 OK, 10 UNAVAILABLE from the server, 5 NOT_FOUND (the caller's
    # fault), 15 refused by its local rate limiter (HTTP 200, RESOURCE_EXHAUSTED, flag RL),
    # per scrape at its sidecar; the caller sees the refusals as plain gRPC errors.
    series = [
        _grpc_series("destination", "200", "0", "-", 70),
        _grpc_series("destination", "200", "14", "-", 10),
        _grpc_series("destination", "200", "5", "-", 5),
        _grpc_series("destination", "200", "8", "RL", 15),
        _grpc_series("source", "200", "0", "-", 70),
        _grpc_series("source", "200", "14", "-", 10),
        _grpc_series("source", "200", "5", "-", 5),
        _grpc_series("source", "200", "8", "-", 15),
    ]
    checks = [
        ("Error rate %", [{"labels": '{destination_service_name="b"}', "value": 10}]),
        ("Rate-limited requests (429)", [{"labels": '{destination_service_name="b"}', "value": 1}]),
    ]
    test = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [
                    {
                        # Rounded: two separately summed rates divide to 9.999999999999998.
                        "expr": (
                            f"round({_as_grafana_would_query(dashboard.PANEL_QUERIES[title])}, "
                            "0.001)"
                        ),
                        "eval_time": "5m",
                        "exp_samples": samples,
                    }
                    for title, samples in checks
                ],
            }
        ],
    }
    path = tmp_path / "grpc.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", path.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("title", REQUIRED_PANELS)
def test_required_panel_exists_with_its_query(title: str) -> None:
    panel = _panels()[title]
    assert panel["type"] == "timeseries"
    assert panel["targets"][0]["expr"] == dashboard.PANEL_QUERIES[title]
    assert REQUIRED_PANELS[title] in panel["targets"][0]["expr"]
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_circuit_breaker_panel_also_shows_pending_overflows() -> None:
    targets = _panels()["Outlier ejections / circuit breaker"]["targets"]
    assert [t["refId"] for t in targets] == ["A", "B"]
    assert PENDING_OVERFLOW in targets[1]["expr"]


def test_canary_split_is_a_share_per_version_and_flagger_track_as_the_callers_see_it() -> None:
    expr = dashboard.PANEL_QUERIES["Canary traffic split %"]
    assert "sum by (destination_service_name, destination_version, track)" in expr
    assert "group_left" in expr
    assert 'reporter="source"' in expr and 'reporter="destination"' not in expr
    assert "label_replace(" in expr


def _split_series(reporter: str, service: str, version: str, per_scrape: float) -> dict[str, str]:
    labels = (
        f'reporter="{reporter}", destination_cluster="a", '
        f'destination_service_name="{service}", destination_version="{version}"'
    )
    return {"series": f"istio_requests_total{{{labels}}}", "values": f"0+{per_scrape:g}x40"}


def test_canary_split_evaluates_to_the_real_shares(promtool: str, tmp_path: Path) -> None:
    series = [
        # Flagger: 75/25 between b-primary and b-canary, one version (the same image tag).
        _split_series("source", "b-primary", "v1", 45),
        _split_series("source", "b-canary", "v1", 15),
        _split_series("destination", "b-primary", "v1", 45),
        _split_series("destination", "b-canary", "v1", 15),
        # Subsets: 80/20 between v1 and v2, plus 100% mirrored to v3. Only the destination
        # sidecar of v3 reports the mirrored copies; the caller reports what it routed.
        _split_series("source", "a", "v1", 80),
        _split_series("source", "a", "v2", 20),
        _split_series("destination", "a", "v1", 80),
        _split_series("destination", "a", "v2", 20),
        _split_series("destination", "a", "v3", 100),
    ]

    def share(service: str, version: str, track: str, value: float) -> dict[str, Any]:
        labels = {"destination_service_name": service, "destination_version": version}
        if track:
            labels["track"] = track
        return {
            "labels": "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
            "value": value,
        }

    test = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": _as_grafana_would_query(
                            dashboard.PANEL_QUERIES["Canary traffic split %"]
                        ),
                        "eval_time": "5m",
                        "exp_samples": [
                            share("a", "v1", "", 80),
                            share("a", "v2", "", 20),
                            share("b", "v1", "primary", 75),
                            share("b", "v1", "canary", 25),
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "split.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", path.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "expr",
    [t["expr"] for p in PARSED["panels"] for t in p["targets"]],
)
def test_every_panel_query_parses(expr: str) -> None:
    promql_parser.parse(_as_grafana_would_query(expr))


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in PARSED["panels"]]
    assert len(ids) == len(set(ids))


def test_cluster_and_service_variables_exist_and_filter_the_queries() -> None:
    variables = {v["name"]: v for v in PARSED["templating"]["list"]}
    assert set(variables) == {"datasource", "cluster", "service"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["cluster"]["query"] == (
        "label_values(istio_requests_total, destination_cluster)"
    )
    assert "destination_service_name)" in variables["service"]["query"]
    for name in ("cluster", "service"):
        assert variables[name]["multi"] and variables[name]["includeAll"]
    for title in ("Request rate", "Error rate %", "P99 latency", "Rate-limited requests (429)"):
        expr = dashboard.PANEL_QUERIES[title]
        assert 'destination_cluster=~"$cluster"' in expr
        assert 'destination_service_name=~"$service"' in expr


def test_variable_queries_parse() -> None:
    for variable in PARSED["templating"]["list"]:
        query = variable.get("query", "")
        if query.startswith("label_values("):
            selector = query.removeprefix("label_values(").rsplit(",", 1)[0]
            promql_parser.parse(_as_grafana_would_query(selector))


def test_the_json_is_stable() -> None:
    # The ConfigMap's content must not change between runs, or every `pulumi up` diffs.
    assert dashboard.dashboard_json() == dashboard.dashboard_json()
    assert PARSED["uid"] == "meshstack-mesh"
