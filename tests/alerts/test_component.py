"""MeshAlerts under the mock runtime: children, parents, provider, dependencies, specs."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pulumi
import pytest
import yaml

from components.alerts import monitors, rules
from components.alerts.component import MeshAlerts
from components.alerts.dashboard import dashboard_json
from components.alerts.settings import AlertsSettings
from components.constants import PROMETHEUS_IGNORE_LABEL
from components.istio.component import IstioMesh
from components.kube import MetricsEndpoint
from components.observability import kiali_values as kiali
from components.ratelimit.component import RateLimiter
from components.ratelimit.specs import RATELIMIT_NAME
from components.security.component import MeshSecurity
from components.service_graph import ServiceGraph
from components.settings import StackSettings
from tests.conftest import STACKS, by_name, make_settings, run_with_provider
from tools.render import Render
from tools.verify import validate_helm_values, validate_manifest
from tools.verify.reference import reference_dir

SETTINGS = make_settings(
    services=[
        {"name": "a", "namespace": "shop", "metrics": {"port": "http-prom", "path": "/m"}},
        {"name": "b", "namespace": "bank"},
    ],
    alerts={"canaryErrorRate": {"threshold": 0.02}},
)
RUNBOOKS = "https://git.example.org/team/mesh/blob/abc1234/docs/alerts.md"


def _mesh_alerts(
    mesh: IstioMesh,
    settings: StackSettings,
    opts: pulumi.ResourceOptions,
    ratelimit_metrics: MetricsEndpoint | None = None,
) -> MeshAlerts:
    """MeshAlerts given its slice of `settings`, as region.py does."""
    return MeshAlerts(
        "al",
        mesh,
        settings.alerts,
        services=settings.services,
        dashboard=settings.dashboard,
        ratelimit_metrics=ratelimit_metrics,
        runbook_base_url=RUNBOOKS,
        opts=opts,
    )


def _build(settings: StackSettings) -> Render:
    def build(opts: pulumi.ResourceOptions) -> None:
        _mesh_alerts(IstioMesh("m", settings.istio, opts=opts), settings, opts)

    return run_with_provider(build)


@pytest.fixture(scope="module")
def render() -> Render:
    return _build(SETTINGS)


def _objects(render: Render) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in render.kubernetes_objects()}


def test_children_are_parented_to_the_component(render: Render) -> None:
    names = by_name(render)
    children = {n for n, r in names.items() if r.parent == names["al"].urn}
    assert children == {
        "al-sidecars",
        "al-istiod",
        "al-shop-a-metrics",
        "al-rules",
        "al-dashboard",
    }
    assert names["al"].type == "meshstack:alerts:MeshAlerts"


def test_custom_resources_wait_for_the_control_plane(render: Render) -> None:
    names = by_name(render)
    for child in ("al-sidecars", "al-istiod", "al-shop-a-metrics", "al-rules"):
        assert names["m-istiod"].urn in names[child].dependencies, child


def test_app_monitor_lives_in_the_service_namespace_and_depends_on_it(render: Render) -> None:
    names = by_name(render)
    assert names["m-ns-shop"].urn in names["al-shop-a-metrics"].dependencies
    monitor = _objects(render)[("ServiceMonitor", "a")]
    assert monitor["metadata"]["namespace"] == "shop"
    assert monitor["spec"] == {
        "selector": {"matchLabels": {"app": "a"}},
        "namespaceSelector": {"matchNames": ["shop"]},
        "endpoints": [
            {
                "port": "http-prom",
                "path": "/m",
                "interval": "30s",
                "scheme": "https",
                "tlsConfig": {
                    "caFile": "/etc/prom-certs/root-cert.pem",
                    "certFile": "/etc/prom-certs/cert-chain.pem",
                    "keyFile": "/etc/prom-certs/key.pem",
                    "insecureSkipVerify": True,
                },
            }
        ],
    }
    assert ("ServiceMonitor", "b") not in _objects(render)


def test_app_monitor_scrapes_over_mesh_mtls_because_peer_authentication_is_strict() -> None:
    # MeshSecurity makes the mesh STRICT: a plaintext scrape of the app port is rejected by
    # its sidecar, so the monitor must present the mesh certificate Prometheus' sidecar wrote.
    settings = make_settings(
        services=[{"name": "a", "namespace": "shop", "metrics": {}}],
        alerts={"meshCertificatesDir": "/var/run/istio-certs"},
    )

    def build(opts: pulumi.ResourceOptions) -> None:
        mesh = IstioMesh("m", settings.istio, opts=opts)
        MeshSecurity(
            "sec",
            mesh,
            settings.security,
            graph=ServiceGraph(settings.services),
            namespaces=settings.namespaces,
            identity_providers=settings.identity_providers,
            flagger=None,
            opts=opts,
        )
        _mesh_alerts(mesh, settings, opts)

    objects = _objects(run_with_provider(build))
    assert objects[("PeerAuthentication", "default")]["spec"]["mtls"] == {"mode": "STRICT"}
    (endpoint,) = objects[("ServiceMonitor", "a")]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {
        "caFile": "/var/run/istio-certs/root-cert.pem",
        "certFile": "/var/run/istio-certs/cert-chain.pem",
        "keyFile": "/var/run/istio-certs/key.pem",
        "insecureSkipVerify": True,
    }
    assert validate_manifest(objects[("ServiceMonitor", "a")]) == []


def test_monitors_and_rule_carry_the_prometheus_selector_labels(render: Render) -> None:
    objects = _objects(render)
    for key in [
        ("PodMonitor", "meshstack-envoy-stats"),
        ("ServiceMonitor", "meshstack-istiod"),
        ("ServiceMonitor", "a"),
        ("PrometheusRule", "meshstack-mesh-alerts"),
    ]:
        obj = objects[key]
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack", key


def test_sidecar_pod_monitor_scrapes_envoy_on_every_proxy(render: Render) -> None:
    monitor = _objects(render)[("PodMonitor", "meshstack-envoy-stats")]
    assert monitor["metadata"]["namespace"] == "istio-system"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http-envoy-prom", "/stats/prometheus")
    assert endpoint["relabelings"][0] == {
        "action": "keep",
        "sourceLabels": ["__meta_kubernetes_pod_container_name"],
        "regex": "istio-proxy",
    }


def test_istiod_service_monitor_reads_http_monitoring(render: Render) -> None:
    monitor = _objects(render)[("ServiceMonitor", "meshstack-istiod")]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["istio-system"]}
    assert monitor["spec"]["selector"] == {"matchLabels": {"istio": "pilot"}}
    assert monitor["spec"]["endpoints"][0]["port"] == "http-monitoring"


def test_rule_spec_is_the_builders_with_the_settings_thresholds(render: Render) -> None:
    rule = _objects(render)[("PrometheusRule", "meshstack-mesh-alerts")]
    assert rule["spec"] == rules.prometheus_rule_spec(SETTINGS.alerts, runbook_base_url=RUNBOOKS)
    assert ") > 0.02\nand on (" in rule["spec"]["groups"][0]["rules"][0]["expr"]


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(render: Render) -> None:
    configmap = _objects(render)[("ConfigMap", "meshstack-mesh-dashboard")]
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"meshstack-mesh.json": dashboard_json()}
    assert json.loads(configmap["data"]["meshstack-mesh.json"])["uid"] == "meshstack-mesh"


def test_the_rule_the_monitors_and_the_dashboard_are_where_operators_look(
    render: Render,
) -> None:
    # The component has no outputs; what an operator looks up is in the objects themselves.
    objects = render.kubernetes_objects()
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert (rule["metadata"]["namespace"], rule["metadata"]["name"]) == (
        "istio-system",
        "meshstack-mesh-alerts",
    )
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    # Some alerts have more than one rule (e.g. per-service and per-domain rate limits).
    assert list(dict.fromkeys(alerts)) == list(rules.ALERT_NAMES)
    monitors = {
        f"{o['metadata']['namespace']}/{o['metadata']['name']}"
        for o in objects
        if o["kind"] == "ServiceMonitor" and o["metadata"]["namespace"] != "istio-system"
    }
    assert monitors == {"shop/a"}, "one per service with metrics, in its namespace"
    (dashboard,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert (dashboard["metadata"]["namespace"], dashboard["metadata"]["name"]) == (
        "monitoring",
        "meshstack-mesh-dashboard",
    )


def test_dashboard_can_be_disabled_or_moved() -> None:
    off = _build(make_settings(dashboard={"enabled": False}))
    assert "al-dashboard" not in by_name(off)
    moved = _build(make_settings(dashboard={"namespace": "grafana"}))
    configmap = _objects(moved)[("ConfigMap", "meshstack-mesh-dashboard")]
    assert configmap["metadata"]["namespace"] == "grafana"


def test_two_services_with_the_same_name_in_two_namespaces_do_not_collide() -> None:
    settings = make_settings(
        services=[
            {"name": "api", "namespace": "one", "metrics": {}},
            {"name": "api", "namespace": "two", "metrics": {}},
        ]
    )
    names = by_name(_build(settings))
    assert {"al-one-api-metrics", "al-two-api-metrics"} <= set(names)


# --- whole stacks: invariants over every stack, literals on the fixtures ---------------------


def _stack_objects(stack_renders: dict[str, Render], stack: str) -> dict[tuple[str, str], Any]:
    return _objects(stack_renders[stack])


def test_every_stack_renders_the_monitors_and_the_rule(stack_renders: dict[str, Render]) -> None:
    for stack in stack_renders:
        objects = _stack_objects(stack_renders, stack)
        assert ("PodMonitor", "meshstack-envoy-stats") in objects, stack
        assert ("ServiceMonitor", "meshstack-istiod") in objects, stack
        assert ("PrometheusRule", "meshstack-mesh-alerts") in objects, stack


def test_fixture_stacks_tune_their_alerts(fixture_renders: dict[str, Render]) -> None:
    def rule_of(stack: str, alert: str) -> dict[str, Any]:
        rule = _stack_objects(fixture_renders, stack)[("PrometheusRule", "meshstack-mesh-alerts")]
        return next(r for r in rule["spec"]["groups"][0]["rules"] if r["alert"] == alert)

    assert ") > 0.02\nand on (" in rule_of("fixture-spoke", "CanaryErrorRateHigh")["expr"]
    assert ") > 0.05\nand on" in rule_of("fixture-hub", "CanaryErrorRateHigh")["expr"]
    assert ") > 750\nand on" in rule_of("fixture-hub", "CanaryLatencyHigh")["expr"]
    assert "[2m]" in rule_of("fixture-small-spoke", "CanaryErrorRateHigh")["expr"]
    assert ") >= 0.5)\nunless on (" in rule_of("fixture-spoke", "CanaryLatencyHigh")["expr"]
    quota = rule_of("fixture-spoke", "QuotaServiceFailing")
    assert quota["expr"].endswith(") > 0.005") and quota["for"] == "30s"
    eu_rule = _stack_objects(fixture_renders, "fixture-spoke")[
        ("PrometheusRule", "meshstack-mesh-alerts")
    ]
    assert eu_rule["metadata"]["labels"]["release"] == "prometheus"


def test_fixture_stacks_choose_app_metrics_and_dashboard(
    fixture_renders: dict[str, Render],
) -> None:
    east = _stack_objects(fixture_renders, "fixture-hub")
    assert ("ServiceMonitor", "fingerprint-api") in east
    assert east[("ServiceMonitor", "market-data")]["spec"]["endpoints"] == [
        {
            "port": "http-prom",
            "path": "/prometheus",
            "interval": "15s",
            **monitors.mesh_tls_endpoint(AlertsSettings()),
            # market-data is progressive: primary and canary Services, one job.
            "relabelings": [
                {"action": "replace", "targetLabel": "job", "replacement": "market-data"}
            ],
        }
    ]
    eu_ratelimit = _stack_objects(fixture_renders, "fixture-spoke")[
        ("ServiceMonitor", "meshstack-ratelimit")
    ]
    assert eu_ratelimit["spec"]["endpoints"][0]["tlsConfig"]["caFile"] == (
        "/etc/istio-certs/root-cert.pem"
    )
    eu = _stack_objects(fixture_renders, "fixture-spoke")
    assert eu[("ConfigMap", "meshstack-mesh-dashboard")]["metadata"]["namespace"] == "grafana"
    assert ("ConfigMap", "meshstack-mesh-dashboard") not in _stack_objects(
        fixture_renders, "fixture-small-spoke"
    )


# --- strict CRD + CEL validation -------------------------------------------------------------

OWN_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule", "ConfigMap"}


@pytest.mark.parametrize("stack", STACKS)
def test_every_object_of_mesh_alerts_validates(
    stack_renders: dict[str, Render], stack: str
) -> None:
    own = [o for o in stack_renders[stack].kubernetes_objects() if o["kind"] in OWN_KINDS]
    assert {o["kind"] for o in own} >= {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
    for obj in own:
        assert validate_manifest(obj) == [], (obj["kind"], obj["metadata"]["name"])


def test_validation_sees_a_wrongly_spelt_relabel_field(render: Render) -> None:
    # The check above is strict: snake_case `source_labels` is not a PodMonitor field.
    monitor = copy.deepcopy(_objects(render)[("PodMonitor", "meshstack-envoy-stats")])
    relabel = monitor["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
    relabel["source_labels"] = relabel.pop("sourceLabels")
    assert validate_manifest(monitor) != []


# --- the ratelimit service's own counters ------------------------------------------------


def _ratelimit_render(settings: Any) -> Render:
    def build(opts: pulumi.ResourceOptions) -> None:
        mesh = IstioMesh("m", settings.istio, opts=opts)
        limiter = RateLimiter(
            "rl", mesh, settings.rate_limit, services=settings.services, opts=opts
        )
        _mesh_alerts(mesh, settings, opts, ratelimit_metrics=limiter.metrics_endpoint)

    return run_with_provider(build)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels is evaluated here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_quota_adds_a_monitor_that_really_scrapes_the_ratelimit_service() -> None:
    settings = make_settings(
        services=[{"name": "a", "namespace": "shop"}],
        rateLimit={"quota": {"enabled": True, "namespace": "quota"}},
    )
    render = _ratelimit_render(settings)
    names = by_name(render)
    assert names["m-ns-quota"].urn in names["al-ratelimit"].dependencies
    assert names["m-istiod"].urn in names["al-ratelimit"].dependencies
    objects = _objects(render)
    monitor = objects[("ServiceMonitor", "meshstack-ratelimit")]
    service = objects[("Service", RATELIMIT_NAME)]
    deployment = objects[("Deployment", RATELIMIT_NAME)]
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "quota"
    spec = monitor["spec"]
    # Prometheus' Kubernetes discovery: the selector picks the Service by its labels, the
    # relabeling keeps it by name, the endpoint names one of its ports.
    assert spec["namespaceSelector"] == {"matchNames": ["quota"]}
    assert _selects(spec["selector"], service["metadata"].get("labels", {}))
    (endpoint,) = spec["endpoints"]
    keep = endpoint["relabelings"][0]
    assert keep["sourceLabels"] == ["__meta_kubernetes_service_name"]
    assert re.fullmatch(keep["regex"], service["metadata"]["name"])
    assert not re.fullmatch(keep["regex"], "redis")
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    # ... and that port is where the ratelimit container serves its Prometheus counters.
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["USE_PROMETHEUS"] == "true"
    assert env["PROMETHEUS_ADDR"] == f":{port['targetPort']}"
    assert env["PROMETHEUS_PATH"] == endpoint.get("path", "/metrics")
    # Meshed under STRICT mTLS: scraped like the applications.
    assert {k: endpoint[k] for k in ("scheme", "tlsConfig")} == monitors.mesh_tls_endpoint(
        settings.alerts
    )
    # Only the service's own counters: the alert's metric passes, Go and Envoy series do not.
    (metric_keep,) = endpoint["metricRelabelings"]
    assert (metric_keep["action"], metric_keep["sourceLabels"]) == ("keep", ["__name__"])
    assert re.fullmatch(metric_keep["regex"], rules.RATELIMIT_OVER_LIMIT)
    for other in ("go_goroutines", "envoy_cluster_upstream_rq_total", "istio_requests_total"):
        assert not re.fullmatch(metric_keep["regex"], other), other
    assert rules.RATELIMIT_OVER_LIMIT in rules.over_limit_expr("1m")
    assert validate_manifest(monitor) == []


def test_without_quotas_there_is_no_ratelimit_monitor(render: Render) -> None:
    assert "al-ratelimit" not in by_name(render)
    assert ("ServiceMonitor", "meshstack-ratelimit") not in _objects(render)


def test_quota_stacks_scrape_the_ratelimit_service(stack_renders: dict[str, Render]) -> None:
    for stack, render in stack_renders.items():
        quota = ("Deployment", RATELIMIT_NAME) in _objects(render)
        assert (("ServiceMonitor", "meshstack-ratelimit") in _objects(render)) == quota, stack


# --- Kiali's pod and the sidecar PodMonitor -----------------------------------------------


def test_kiali_pod_opts_out_of_the_sidecar_pod_monitor_and_keeps_its_network_policy() -> None:
    # The kiali-server chart's NetworkPolicy admits 20001 and 9090 only, so a scrape of
    # Kiali's 15090 would be a target that is always down; the label the PodMonitor excludes
    # takes Kiali's pod out of it, and the NetworkPolicy stays as the chart ships it.
    values = kiali.kiali_values(
        make_settings().observability.kiali,
        prometheus_url="http://prometheus:9090",
        tracing_internal_url="http://jaeger:16685",
        tracing_external_url="",
        signing_key="not-a-real-key",
    )
    deployment = values["deployment"]
    assert deployment["pod_labels"] == {PROMETHEUS_IGNORE_LABEL: "true"}
    assert "network_policy" not in deployment
    excluded = monitors.sidecar_pod_monitor_spec(AlertsSettings())["selector"]["matchExpressions"]
    assert {"key": PROMETHEUS_IGNORE_LABEL, "operator": "DoesNotExist"} in excluded
    chart = yaml.safe_load(
        (reference_dir() / "charts" / "kiali-server" / "values.yaml").read_text()
    )["deployment"]
    assert chart["network_policy"]["enabled"] is True
    assert chart["pod_labels"] == {}, "the chart key the label goes into"
    assert validate_helm_values("kiali-server", values) == []
