"""Traffic behaviour at run time, stated in upstream's terms (Envoy, Istio, Flagger): what
the rendered objects make the data plane and Flagger do, not only that they are well-formed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components.settings import MeshService, StackSettings
from components.traffic import delivery_specs, specs
from components.traffic.policy import can_eject, ejection_seconds
from components.traffic.settings import CanarySettings
from tests.conftest import STACKS, make_settings, run_with_provider, settings_error
from tests.traffic.test_components import traffic_management
from tools.charts import published_chart
from tools.render import Render

# --- Flagger: gRPC canaries, metric windows, load test, deletion ------------------------------

ISTIO_TAGS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
    "response_code",
    "grpc_response_status",
)
"""The 25 tags Istio's stats filter puts on `istio_requests_total`."""


def _grpc_call_series(grpc_status: str, per_scrape: int) -> dict[str, str]:
    """gRPC calls to the canary workload `api` (Flagger's target) as its sidecar reports
    them: HTTP 200 with the gRPC status in `grpc_response_status`."""
    labels = dict.fromkeys(ISTIO_TAGS, "unknown")
    labels.update(
        {
            "reporter": "destination",
            "source_workload": "web",
            "source_workload_namespace": "shop",
            "destination_workload": "api",
            "destination_workload_namespace": "shop",
            "destination_app": "",
            "destination_version": "",
            "destination_service": "api-canary.shop.svc.cluster.local",
            "destination_service_name": "api-canary",
            "destination_service_namespace": "shop",
            "destination_cluster": "test-region",
            "source_cluster": "test-region",
            "request_protocol": "grpc",
            "response_flags": "-",
            "connection_security_policy": "mutual_tls",
            "response_code": "200",
            "grpc_response_status": grpc_status,
        }
    )
    selector = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"istio_requests_total{{{selector}}}", "values": f"0+{per_scrape}x20"}


def _flagger_rendered(query: str) -> str:
    """The query as Flagger renders a MetricTemplate for Canary `api` in `shop`."""
    for variable, value in (("namespace", "shop"), ("target", "api"), ("interval", "1m")):
        query = query.replace("{{ " + variable + " }}", value)
    assert "{{" not in query
    return query


FLAGGER_BUILTIN_SUCCESS_RATE = (
    'sum(rate(istio_requests_total{reporter="destination", '
    'destination_workload_namespace="shop", destination_workload=~"api", '
    'response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="destination", '
    'destination_workload_namespace="shop", destination_workload=~"api"}[1m])) * 100'
)
"""fluxcd/flagger@v1.44.0 pkg/metrics/observers/istio.go `request-success-rate`, rendered."""


def _evaluate(tmp_path: Path, expressions: dict[str, float]) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian's `prometheus` package)"
    series = [
        _grpc_call_series("0", 6),  # OK
        _grpc_call_series("5", 2),  # NOT_FOUND: the caller's error, not the canary's
        _grpc_call_series("14", 1),  # UNAVAILABLE
        _grpc_call_series("13", 1),  # INTERNAL
    ]
    (tmp_path / "none.rules.yaml").write_text("groups: []\n")
    test = {
        "rule_files": ["none.rules.yaml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "4m", "exp_samples": [{"labels": "{}", "value": v}]}
                    for expr, v in expressions.items()
                ],
            }
        ],
    }
    path = tmp_path / "flagger.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return subprocess.run(
        [promtool, "test", "rules", path.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


GRPC = {
    "name": "api",
    "namespace": "shop",
    "port": 9090,
    "protocol": "grpc",
    "delivery": "progressive",
}


def only(settings: StackSettings) -> MeshService:
    return settings.services[0]


def test_a_grpc_canary_failing_server_side_fails_flaggers_check(tmp_path: Path) -> None:
    # 6 OK + 2 NOT_FOUND + 1 UNAVAILABLE + 1 INTERNAL per scrape, all HTTP 200: the built-in
    # sees 100%, the template 80% (NOT_FOUND is the caller's error and counts as served).
    spec = delivery_specs.canary_spec(only(make_settings(services=[GRPC])), [], "flagger-system")
    success = spec["analysis"]["metrics"][0]
    assert success["templateRef"] == {"name": "grpc-success-rate", "namespace": "flagger-system"}
    template = delivery_specs.metric_template_spec("http://prometheus.monitoring:9090")
    assert template["provider"] == {
        "type": "prometheus",
        "address": "http://prometheus.monitoring:9090",
    }
    query = _flagger_rendered(template["query"])
    result = _evaluate(tmp_path, {FLAGGER_BUILTIN_SUCCESS_RATE: 100, query: 80})
    assert result.returncode == 0, result.stdout + result.stderr
    assert success["thresholdRange"]["min"] > 80, "the default 99% threshold fails the check"


def test_an_http_canary_keeps_flaggers_builtin_success_rate() -> None:
    http = {**GRPC, "protocol": "http", "port": 8080}
    spec = delivery_specs.canary_spec(only(make_settings(services=[http])), [], "f")
    assert spec["analysis"]["metrics"][0]["name"] == "request-success-rate"
    assert "templateRef" not in spec["analysis"]["metrics"][0]


def test_flagger_metric_windows_span_a_minute_even_with_a_short_analysis_interval() -> None:
    fast = {**GRPC, "traffic": {"progressive": {"interval": "30s"}}}
    spec = delivery_specs.canary_spec(only(make_settings(services=[fast])), [], "f")
    assert spec["analysis"]["interval"] == "30s"
    assert [m["interval"] for m in spec["analysis"]["metrics"]] == ["1m", "1m"]


@pytest.mark.parametrize("qps", [1, 2, 3, 7, 10, 20, 999, 1000])
def test_the_http_load_test_sends_the_configured_total_rate(qps: int) -> None:
    # hey's -q limits each of the -c workers: the load is c x q requests/s.
    http = {**GRPC, "protocol": "http", "traffic": {"progressive": {"loadTestQps": qps}}}
    command = delivery_specs.load_test_command(only(make_settings(services=[http])))
    found = re.search(r"-q (\d+) -c (\d+)", command)
    assert found is not None, command
    per_worker, workers = int(found.group(1)), int(found.group(2))
    assert per_worker * workers == qps


def test_the_grpc_load_test_rate_is_ghz_total() -> None:
    # ghz's -q is the total rate over its workers, so it is the setting as is.
    busy = {**GRPC, "traffic": {"progressive": {"loadTestQps": 20}}}
    command = delivery_specs.load_test_command(only(make_settings(services=[busy])))
    assert " -q 20 -c 2 " in command


def test_deleting_a_canary_reverts_the_deployment_instead_of_leaving_it_at_zero() -> None:
    spec = delivery_specs.canary_spec(only(make_settings(services=[GRPC])), [], "f")
    assert spec["revertOnDeletion"] is True


# --- outlier detection: Envoy's ejection cap ------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "hosts", "ejects"),
    [(50, 1, False), (100, 1, True), (50, 2, True), (30, 3, False), (30, 4, True), (0, 9, False)],
)
def test_envoy_ejects_only_while_the_cap_leaves_room_for_one_more(
    percent: int, hosts: int, ejects: bool
) -> None:
    # Envoy: eject while 100 x (ejected + 1) / hosts <= max_ejection_percent; Istio never
    # sets always_eject_one_host.
    assert can_eject(percent, hosts) is ejects


def header_canary(canary_pods: int, **traffic: Any) -> dict[str, Any]:
    return {
        "name": "api",
        "namespace": "shop",
        "versions": [{"name": "stable"}, {"name": "canary", "minReplicas": canary_pods}],
        "traffic": {
            "canary": {
                "match": {"header": "x-user-id", "regex": "^canary-.*"},
                "weights": [{"subset": "canary", "weight": 5}, {"subset": "stable", "weight": 95}],
            },
            **traffic,
        },
    }


def test_a_one_pod_canary_subset_at_50_percent_never_ejects() -> None:
    message = settings_error(services=[header_canary(1)])
    assert message.startswith(
        "meshstack:services[0] (api).traffic.policy.outlierDetection.maxEjectionPercent = "
        "default 50: "
        "can never eject from 'canary' (1 pods"
    )
    # Unchecked (the stack rule is what rejects it), the output says "never", not a time.
    assert ejection_seconds(MeshService.model_validate(header_canary(1)), "1s") is None


def test_a_one_pod_canary_subset_ejects_with_its_own_100_percent_cap() -> None:
    full = {"canary": {"outlierDetection": {"maxEjectionPercent": 100}}}
    settings = make_settings(services=[header_canary(1, subsetPolicies=full)])
    # 5 consecutive 5xx, at most 1s apart: ejected inline on the 5th, after 5s.
    assert ejection_seconds(only(settings), "1s") == 5


def test_at_30_percent_every_routed_subset_needs_four_pods() -> None:
    capped = {"policy": {"outlierDetection": {"maxEjectionPercent": 30}}}
    message = settings_error(services=[header_canary(4, **capped)])
    # The stable subset (default minReplicas 2) is routed too.
    assert "can never eject from 'stable' (2 pods" in message
    assert "needs maxEjectionPercent >= 50 or minReplicas >= 4" in message
    four = header_canary(4, **capped)
    four["versions"][0]["minReplicas"] = 4
    assert ejection_seconds(only(make_settings(services=[four])), "1s") == 5


def test_a_progressive_service_is_checked_on_flaggers_primary_and_canary_hosts() -> None:
    single = {**GRPC, "versions": [{"name": "stable", "minReplicas": 1}]}
    message = settings_error(services=[single])
    assert "can never eject from 'api-primary' (1 pods" in message


# --- header canary: per request -----------------------------------------------------------


def test_a_header_canary_split_is_per_request_and_documented_so() -> None:
    # Envoy picks a weighted cluster for every request; consistent hashing only applies
    # inside the chosen subset, so one user's requests land on both subsets.
    service = only(make_settings(services=[header_canary(2)]))
    first = specs.http_routes(service, {})[0]
    assert [d["weight"] for d in first["route"]] == [5, 95]
    described = " ".join(
        str(CanarySettings.model_fields[f].description) for f in ("match", "weights")
    )
    assert "per request" in described


def test_a_header_bucket_with_the_whole_weight_pins_each_matching_user() -> None:
    # The sticky form: the regex picks the users (e.g. ids ending 00-04, 5% of uniform ids)
    # and every request of theirs goes to the canary subset.
    sticky = header_canary(2)
    sticky["traffic"]["canary"] = {
        "match": {"header": "x-user-id", "regex": ".*0[0-4]"},
        "weights": [{"subset": "canary", "weight": 100}, {"subset": "stable", "weight": 0}],
    }
    first, rest = specs.http_routes(only(make_settings(services=[sticky])), {})
    assert [d["weight"] for d in first["route"]] == [100, 0]
    assert rest["route"] == [
        {
            "destination": {
                "host": "api.shop.svc.cluster.local",
                "port": {"number": 8080},
                "subset": "stable",
            }
        }
    ]


# --- components: retiring a Canary, apex DestinationRules, Sidecars -------------------------

PROGRESSIVE_TARGET = {
    "name": "pay",
    "namespace": "bank",
    "delivery": "progressive",
}
CALLER = {
    "name": "web",
    "namespace": "shop",
    "calls": ["bank/pay"],
    "traffic": {"routes": [{"name": "pay", "prefix": "/pay", "backend": "bank/pay"}]},
}


def _render(*services: dict[str, Any], observability: bool = False) -> Render:
    settings = make_settings(services=list(services))

    def build(opts: pulumi.ResourceOptions) -> None:
        observability_ns = pulumi.Output.from_input("observability") if observability else None
        traffic_management(settings, opts, observability_ns)

    return run_with_provider(build)


def _objects(render: Render, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in render.kubernetes_objects()
        if o["kind"] == kind
    }


def test_a_retiring_service_loses_its_canary_while_flagger_stays_to_revert_it() -> None:
    retiring = {**PROGRESSIVE_TARGET, "traffic": {"progressive": {"retire": True}}}
    render = _render(retiring)
    assert _objects(render, "Canary") == {}
    # No static routing yet: Flagger's VirtualService `pay` must be gone first.
    assert _objects(render, "VirtualService") == {}
    assert _objects(render, "DestinationRule") == {}
    charts = {published_chart(c) for c in render.helm_charts()}
    assert "flagger" in charts, "Flagger runs the Canary's finalizer"


def test_a_deleted_canary_keeps_its_primary_until_flagger_has_reverted_the_target() -> None:
    # Foreground deletion (Pulumi's default) garbage-collects `-primary` while Flagger's
    # finalizer is still scaling the target up; background waits for the finalizer.
    [canary] = _objects(_render(PROGRESSIVE_TARGET), "Canary").values()
    annotations = canary["metadata"]["annotations"]
    assert annotations["pulumi.com/deletionPropagationPolicy"] == "background"
    assert canary["spec"]["revertOnDeletion"] is True


def test_a_routed_progressive_apex_host_gets_outlier_detection_for_locality_failover() -> None:
    render = _render(PROGRESSIVE_TARGET, CALLER, {**PROGRESSIVE_TARGET, "name": "ledger"})
    rules = _objects(render, "DestinationRule")
    apex = rules["bank", "pay-apex"]["spec"]
    assert apex["host"] == "pay.bank.svc.cluster.local"
    assert "outlierDetection" in apex["trafficPolicy"]
    assert apex["trafficPolicy"]["tls"] == {"mode": "ISTIO_MUTUAL"}
    assert "subsets" not in apex
    assert ("bank", "ledger-apex") not in rules, "no route targets ledger's apex host"


def test_a_route_to_a_progressive_service_without_outlier_detection_is_rejected() -> None:
    off = {**PROGRESSIVE_TARGET, "traffic": {"policy": {"outlierDetection": None}}}
    assert settings_error(services=[off, CALLER]) == (
        'meshstack:services[1] (web).traffic.routes[0].backend = "bank/pay": targets a progressive '
        "service with outlierDetection: null; its apex host needs outlier detection for "
        "locality failover"
    )


def test_flagger_and_observability_namespaces_get_scoped_sidecars() -> None:
    render = _render(PROGRESSIVE_TARGET, CALLER, observability=True)
    sidecars = _objects(render, "Sidecar")
    flagger = sidecars["flagger-system", "default"]["spec"]["egress"][0]["hosts"]
    # Flagger reads Prometheus; the loadtester calls the canary.
    assert "monitoring/*" in flagger
    assert "bank/pay-canary.bank.svc.cluster.local" in flagger
    assert "bank/*" not in flagger
    observability = sidecars["observability", "default"]["spec"]["egress"][0]["hosts"]
    assert "monitoring/*" in observability


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("http://prometheus-operated.monitoring.svc.cluster.local:9090", "monitoring/*"),
        ("http://prometheus.obs:9090", "obs/*"),
        ("https://prometheus.example.com", None),
    ],
)
def test_prometheus_egress_entry(url: str, entry: str | None) -> None:
    assert specs.in_cluster_host(url) == entry


@pytest.mark.parametrize("stack", STACKS)
def test_every_injected_namespace_but_the_gateways_has_a_sidecar(
    stack: str, stack_renders: dict[str, Render]
) -> None:
    render = stack_renders[stack]
    objects = render.kubernetes_objects()
    injected = {
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "Namespace"
        and (
            o["metadata"].get("labels", {}).get("istio-injection") == "enabled"
            or "istio.io/rev" in o["metadata"].get("labels", {})
        )
    }
    gateways = {c["namespace"] for c in render.helm_charts() if published_chart(c) == "gateway"}
    scoped = {o["metadata"]["namespace"] for o in objects if o["kind"] == "Sidecar"}
    assert injected - gateways <= scoped
    assert not scoped & gateways, "a gateway must see every host it routes to"
