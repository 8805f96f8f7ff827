"""Jaeger answers only its intended callers: Istio's decision for each caller x port.

Every hub render (production and fixture stacks) is judged with `tools.verify.authorization`
(Istio's PeerAuthentication + AuthorizationPolicy semantics) over the objects the program
applies; who may call what is derived from the settings, never from the render.
"""

from __future__ import annotations

import ipaddress

import pytest

from components.constants import ingress_gateway_principal, workload_principal
from components.istio.tracing import OTLP_GRPC_PORT, OTLP_HTTP_PORT
from components.observability import jaeger_access as access
from components.observability.jaeger_values import (
    HEALTH_PORT,
    METRICS_PORT,
    QUERY_GRPC_PORT,
    QUERY_HTTP_PORT,
    pod_labels,
)
from components.settings import StackSettings
from tests.conftest import make_settings, stack_settings
from tools.render import Render
from tools.verify.authorization import Request, Workload, decide

OTHER_JAEGER_PORTS = (9411, 14268, 5778, HEALTH_PORT, METRICS_PORT)
"""Ports the chart's Service or container also opens (zipkin, v1 collector, sampling
config, health, metrics): no caller reaches them through the sidecar."""
MESH_ADDRESS = "10.244.7.7"
"""A pod address outside every stack's Ingress controller blocks (checked below)."""


def _hubs(renders: dict[str, Render]) -> list[tuple[str, Render, StackSettings]]:
    hubs = []
    for stack, render in renders.items():
        settings = stack_settings(stack)
        if settings.observability.is_hub:
            hubs.append((stack, render, settings))
    return hubs


def _inside(blocks: tuple[str, ...]) -> str:
    return str(next(ipaddress.ip_network(blocks[0]).hosts()))


def _outside_checked(settings: StackSettings) -> str:
    blocks = settings.observability.jaeger.ingress_source_ip_blocks
    ip = ipaddress.ip_address(MESH_ADDRESS)
    assert not any(ip in ipaddress.ip_network(b) for b in blocks)
    return MESH_ADDRESS


def test_the_fixture_hub_exercises_an_ingress_and_own_query_readers(
    fixture_renders: dict[str, Render],
) -> None:
    # Without these, the checks below would not see the plaintext and reader rules.
    hubs = _hubs(fixture_renders)
    assert hubs
    assert any(
        s.observability.jaeger.ingress_host
        and s.observability.jaeger.query_service_accounts
        != ("monitoring/kube-prometheus-stack-grafana",)
        for _, _, s in hubs
    )


def test_every_caller_gets_exactly_its_ports(every_render: dict[str, Render]) -> None:
    for stack, render, settings in _hubs(every_render):
        jaeger = settings.observability.jaeger
        namespace = settings.observability_namespace
        objects = render.kubernetes_objects()
        pod = Workload(namespace, {**pod_labels(), "app.kubernetes.io/component": "all-in-one"})
        kiali = workload_principal(namespace, "kiali")
        readers = [workload_principal(*a.split("/", 1)) for a in jaeger.query_service_accounts]
        # A workload of this region, a spoke's proxy (same trust domain, through the
        # east-west gateway's mTLS passthrough), the ingress gateway: OTLP only.
        others = [workload_principal(s.namespace, s.name) for s in settings.services] + [
            workload_principal("revenue", "spoke-workload"),
            ingress_gateway_principal(),
        ]
        outside = _outside_checked(settings)

        def verdict(
            port: int,
            principal: str | None,
            *,
            ip: str = outside,
            method: str = "GET",
            objects: list[dict[str, object]] = objects,
            pod: Workload = pod,
        ) -> str:
            return decide(objects, pod, Request(port, ip, principal, method, "/api/traces"))

        for caller in [*others, kiali, *readers]:
            for port in (OTLP_GRPC_PORT, OTLP_HTTP_PORT):
                assert verdict(port, caller, method="POST") == "allowed", (stack, caller, port)
            for port in OTHER_JAEGER_PORTS:
                assert verdict(port, caller) == "denied", (stack, caller, port)
        for caller in others:
            for port in (QUERY_HTTP_PORT, QUERY_GRPC_PORT):
                assert verdict(port, caller) == "denied", (stack, caller, port)
        assert verdict(QUERY_GRPC_PORT, kiali, method="POST") == "allowed", stack
        # Kiali reads over gRPC only (use_grpc: true); the HTTP API is not its port.
        assert verdict(QUERY_HTTP_PORT, kiali) == ("allowed" if kiali in readers else "denied")
        for reader in readers:
            assert verdict(QUERY_HTTP_PORT, reader) == "allowed", (stack, reader)
            assert verdict(QUERY_HTTP_PORT, reader, method="POST") == "denied", (stack, reader)
            if reader != kiali:
                assert verdict(QUERY_GRPC_PORT, reader, method="POST") == "denied", stack

        # Plaintext: only the Ingress controller's addresses, only on the UI port, and only
        # when there is an Ingress (otherwise 16686 is STRICT and plaintext never arrives).
        blocks = jaeger.ingress_source_ip_blocks
        if jaeger.ingress_host:
            controller = _inside(blocks)
            assert verdict(QUERY_HTTP_PORT, None, ip=controller) == "allowed", stack
            assert verdict(QUERY_HTTP_PORT, None, ip=controller, method="POST") == "allowed"
            assert verdict(QUERY_HTTP_PORT, None, ip=outside) == "denied", stack
            # A meshed workload that happens to sit in the controller's blocks is no reader.
            assert verdict(QUERY_HTTP_PORT, others[0], ip=controller) == "denied", stack
            for port in (QUERY_GRPC_PORT, OTLP_GRPC_PORT, OTLP_HTTP_PORT):
                assert verdict(port, None, ip=controller) == "refused-plaintext", (stack, port)
        else:
            assert verdict(QUERY_HTTP_PORT, None) == "refused-plaintext", stack


def test_the_policy_selects_the_jaeger_pod_only_and_allows_nothing_by_default() -> None:
    settings = make_settings().observability.jaeger
    spec = access.jaeger_access_spec(settings, namespace_name="observability")
    assert spec["selector"] == {"matchLabels": pod_labels()}
    assert spec["action"] == "ALLOW"
    # Default settings: no Ingress, so no rule without an identity.
    assert all(
        "principals" in source["source"] for rule in spec["rules"] for source in rule["from"]
    )
    assert access.query_principals(settings) == [
        "cluster.local/ns/monitoring/sa/kube-prometheus-stack-grafana"
    ]


@pytest.mark.parametrize("readers", [[], ["monitoring/grafana", "tools/trace-export"]])
def test_query_readers_come_from_the_settings(readers: list[str]) -> None:
    settings = make_settings(observability={"jaeger": {"queryServiceAccounts": readers}})
    spec = access.jaeger_access_spec(settings.observability.jaeger, namespace_name="obs")
    http_rules = [
        r for r in spec["rules"] if r["to"][0]["operation"]["ports"] == [str(QUERY_HTTP_PORT)]
    ]
    assert [r["from"][0]["source"]["principals"] for r in http_rules] == (
        [sorted(workload_principal(*a.split("/")) for a in readers)] if readers else []
    )
    kiali_rule = spec["rules"][1]
    assert kiali_rule["from"][0]["source"]["principals"] == ["cluster.local/ns/obs/sa/kiali"]
