"""Meshed Flagger and Kiali reach the Prometheus they query (PrometheusAccess).

Prometheus runs with a certificate-writing sidecar that does not intercept port 9090, so
whoever queries it must send plaintext; without a rule, istiod gives meshed clients an mTLS
socket towards it (components/observability/prometheus.py says why).
"""

from __future__ import annotations

import pytest

from components.constants import ISTIO_NAMESPACE
from components.observability.prometheus import RULE_NAME, plaintext_destination_rule
from components.observability.prometheus_url import prometheus_service_host
from components.region import RegionMesh
from components.settings import load_settings
from tests.conftest import (
    RUN_CONTEXT,
    STACKS,
    by_name,
    make_settings,
    run_with_provider,
    settings_error,
)
from tools.render import Render, load_stack_config
from tools.verify import validate_manifest

OPERATED = "http://prometheus-operated.monitoring.svc.cluster.local:9090"


def test_flaggers_sidecar_talks_plaintext_to_prometheus_operated() -> None:
    rule = plaintext_destination_rule(OPERATED)
    assert rule is not None
    # tls.mode DISABLE is user-supplied TLS: istiod builds no transport socket (plaintext)
    # and never replaces it with auto mTLS, headless (ORIGINAL_DST) cluster or not.
    assert rule["spec"]["host"] == "prometheus-operated.monitoring.svc.cluster.local"
    assert rule["spec"]["trafficPolicy"] == {"tls": {"mode": "DISABLE"}}
    # In the root namespace and exported to all: the fallback rule of every client
    # namespace (Flagger's, the observability namespace) for that host.
    assert rule["metadata"]["namespace"] == ISTIO_NAMESPACE
    assert rule["spec"]["exportTo"] == ["*"]
    assert validate_manifest(rule) == []


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://thanos-query.monitoring:9090", "thanos-query.monitoring.svc.cluster.local"),
        ("http://prom.metrics.svc:9090/prometheus", "prom.metrics.svc.cluster.local"),
        (OPERATED, "prometheus-operated.monitoring.svc.cluster.local"),
        ("https://prometheus.example.com", None),
        ("http://10.0.0.7:9090", None),
    ],
)
def test_the_rule_names_the_service_fqdn_whatever_form_the_url_uses(
    url: str, host: str | None
) -> None:
    assert prometheus_service_host(url) == host
    rule = plaintext_destination_rule(url)
    assert (rule["spec"]["host"] if rule else None) == host


def test_prometheus_url_must_name_the_namespace_of_its_service() -> None:
    assert settings_error(prometheusUrl="http://prometheus:9090") == (
        "meshstack:prometheusUrl = \"http://prometheus:9090\": host 'prometheus' must name "
        "the namespace (`<service>.<namespace>.svc.cluster.local`): Flagger and Kiali resolve "
        "it from different namespaces"
    )


def _rules(render: Render) -> list[dict[str, object]]:
    return [
        o
        for o in render.kubernetes_objects()
        if o["kind"] == "DestinationRule" and o["metadata"]["name"] == RULE_NAME
    ]


def test_every_region_creates_the_rule_after_istiod() -> None:
    settings = make_settings(prometheusUrl="http://prom.metrics.svc:9090")
    render = run_with_provider(
        lambda opts: RegionMesh("r", settings, context=RUN_CONTEXT, opts=opts)
    )
    (rule,) = _rules(render)
    assert rule["spec"] == {
        "host": "prom.metrics.svc.cluster.local",
        "exportTo": ["*"],
        "trafficPolicy": {"tls": {"mode": "DISABLE"}},
    }
    regs = by_name(render)
    assert regs["r-istio-istiod"].urn in regs["r-prometheus-plaintext"].dependencies


def test_no_rule_for_a_prometheus_outside_the_cluster() -> None:
    settings = make_settings(prometheusUrl="https://prometheus.example.com")
    assert (
        _rules(
            run_with_provider(
                lambda opts: RegionMesh("r", settings, context=RUN_CONTEXT, opts=opts)
            )
        )
        == []
    )


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_talks_plaintext_to_its_configured_prometheus(
    stack_renders: dict[str, Render], stack: str
) -> None:
    settings = load_settings(load_stack_config(stack)[0])
    host = prometheus_service_host(settings.prometheus_url)
    hosts = [r["spec"]["host"] for r in _rules(stack_renders[stack])]  # type: ignore[index]
    assert hosts == ([host] if host else [])
