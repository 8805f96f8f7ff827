"""Mock-runtime tests of the traffic components: children, parents, provider, dependencies
on the IstioMesh control plane and on Flagger, rendered specs, outputs."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.istio.component import IstioMesh
from components.service_graph import ServiceGraph
from components.settings import StackSettings
from components.traffic.component import TrafficManagement
from tests.conftest import by_name, make_settings, run_with_provider
from tools.render import Render, run_program
from tools.verify import validate_helm_values, validate_manifest
from tools.verify.helm_values import REFERENCE_CHART_DIRS

SETTINGS = make_settings(
    traffic={
        "gateways": [{"name": "public", "hosts": ["*.example.com"], "credentialName": "public-tls"}]
    },
    services=[
        {
            "name": "web",
            "namespace": "shop",
            "versions": [{"name": "stable"}, {"name": "canary"}],
            "calls": ["bank/pay", "shop/cart"],
            "traffic": {
                "canary": {
                    "match": {"header": "x-user-id", "regex": "^canary-.*"},
                    "weights": [
                        {"subset": "canary", "weight": 5},
                        {"subset": "stable", "weight": 95},
                    ],
                },
                "routes": [{"name": "cart", "prefix": "/cart", "backend": "shop/cart"}],
                "expose": {"gateway": "public", "hosts": ["www.example.com"]},
            },
        },
        {"name": "cart", "namespace": "shop"},
        {
            "name": "pay",
            "namespace": "bank",
            "delivery": "progressive",
            "traffic": {"expose": {"gateway": "public", "hosts": ["pay.example.com"]}},
        },
    ],
)


def traffic_management(
    settings: StackSettings,
    opts: pulumi.ResourceOptions,
    injected_observability_namespace: pulumi.Output[str] | None = None,
) -> TrafficManagement:
    """TrafficManagement `t` on IstioMesh `m`, wired as region.py wires it (with an injected
    observability namespace as on a hub, if given)."""
    mesh = IstioMesh("m", settings.istio, opts=opts)
    return TrafficManagement(
        "t",
        mesh,
        settings.traffic,
        graph=ServiceGraph(settings.services),
        namespaces=settings.namespaces,
        observability_namespace=settings.observability_namespace,
        injection_labels=mesh.injection_labels,
        prometheus_url=settings.prometheus_url,
        cluster_name=settings.effective_cluster_name,
        injected_observability_namespace=injected_observability_namespace,
        opts=opts,
    )


def build(opts: pulumi.ResourceOptions) -> None:
    traffic = traffic_management(SETTINGS, opts)
    pulumi.export("ejection", traffic.ejection_detection_seconds)
    assert traffic.delivery is not None
    pulumi.export("loadtester", traffic.delivery.loadtester_url)


@pytest.fixture(scope="module")
def render() -> Render:
    return run_with_provider(build)


def objects_of(render: Render, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in render.kubernetes_objects()
        if o["kind"] == kind
    }


def test_children_and_parents(render: Render) -> None:
    names = by_name(render)
    expected_parent = {
        "t-gateways": "t",
        "t-gateways-public": "t-gateways",
        "t-shop-web": "t",
        "t-shop-web-vs": "t-shop-web",
        "t-shop-web-dr": "t-shop-web",
        "t-shop-cart": "t",
        "t-shop-cart-vs": "t-shop-cart",
        "t-shop-cart-dr": "t-shop-cart",
        "t-delivery": "t",
        "t-delivery-ns": "t-delivery",
        "t-delivery-flagger": "t-delivery",
        "t-delivery-loadtester": "t-delivery",
        "t-delivery-bank-pay": "t-delivery",
        "t-sidecars": "t",
        "t-sidecars-shop": "t-sidecars",
        "t-sidecars-bank": "t-sidecars",
        "t-sidecars-flagger": "t-sidecars",
    }
    for child, parent in expected_parent.items():
        assert names[child].parent == names[parent].urn, child
    traffic_children = {n for n, r in names.items() if n.startswith("t-") or n == "t"}
    assert traffic_children == set(expected_parent) | {"t"}


def test_istio_objects_wait_for_istiod(render: Render) -> None:
    names = by_name(render)
    istiod = names["m-istiod"].urn
    for child in (
        "t-gateways-public",
        "t-shop-web-vs",
        "t-shop-web-dr",
        "t-sidecars-shop",
        "t-delivery-bank-pay",
        "t-delivery-flagger",
        "t-delivery-loadtester",
    ):
        assert istiod in names[child].dependencies, child


def test_canary_waits_for_flagger_and_public_routes_for_their_gateway(render: Render) -> None:
    names = by_name(render)
    assert names["t-delivery-flagger"].urn in names["t-delivery-bank-pay"].dependencies
    assert names["t-gateways-public"].urn in names["t-shop-web-vs"].dependencies
    assert names["t-gateways-public"].urn in names["t-delivery-bank-pay"].dependencies
    assert names["t-gateways-public"].urn not in names["t-shop-cart-vs"].dependencies


def test_flagger_owns_progressive_routing(render: Render) -> None:
    routed = set(objects_of(render, "VirtualService")) | set(objects_of(render, "DestinationRule"))
    assert routed == {("shop", "web"), ("shop", "cart")}, "no VS/DR for the progressive service"
    canaries = objects_of(render, "Canary")
    assert set(canaries) == {("bank", "pay")}
    spec = canaries["bank", "pay"]["spec"]
    assert spec["service"]["gateways"] == ["istio-ingress/public", "mesh"]
    assert spec["analysis"]["webhooks"][0]["url"] == "http://flagger-loadtester.flagger-system/"


def test_flagger_namespace_is_in_the_mesh_and_retained(render: Render) -> None:
    namespace = by_name(render)["t-delivery-ns"]
    assert namespace.retain_on_delete
    assert namespace.inputs["metadata"]["name"] == "flagger-system"
    assert namespace.inputs["metadata"]["labels"]["istio-injection"] == "enabled"


def test_flagger_charts_are_pinned_and_configured(render: Render) -> None:
    charts = {c["name"]: c for c in render.helm_charts()}
    flagger, loadtester = charts["flagger"], charts["flagger-loadtester"]
    assert (flagger["chart"], flagger["version"]) == ("flagger", "1.44.0")
    assert (loadtester["chart"], loadtester["version"]) == ("loadtester", "0.38.0")
    assert flagger["namespace"] == loadtester["namespace"] == "flagger-system"
    assert flagger["values"]["meshProvider"] == "istio"
    assert flagger["values"]["metricsServer"] == SETTINGS.prometheus_url
    for chart in (flagger, loadtester):
        key = (chart["repository"], chart["chart"])
        assert validate_helm_values(REFERENCE_CHART_DIRS[key], chart["values"]) == []


def test_gateway_lives_with_the_ingress_gateway_and_selects_it(render: Render) -> None:
    gateway = objects_of(render, "Gateway")["istio-ingress", "public"]
    assert gateway["spec"]["selector"] == {"istio": "ingressgateway"}


def test_public_and_internal_routes_bind_the_right_gateways(render: Render) -> None:
    services = objects_of(render, "VirtualService")
    assert services["shop", "web"]["spec"]["gateways"] == ["istio-ingress/public", "mesh"]
    assert services["shop", "web"]["spec"]["hosts"][1] == "www.example.com"
    assert services["shop", "cart"]["spec"]["gateways"] == ["mesh"]


def test_sidecars_scope_egress_to_declared_calls(render: Render) -> None:
    sidecars = objects_of(render, "Sidecar")
    assert set(sidecars) == {
        ("shop", "default"),
        ("bank", "default"),
        ("flagger-system", "default"),
    }
    assert sidecars["shop", "default"]["spec"]["egress"][0]["hosts"] == [
        "./*",
        "bank/pay.bank.svc.cluster.local",
        "istio-system/*",
        "observability/*",
    ]


def test_every_object_passes_its_schema(render: Render) -> None:
    errors = [e for obj in render.kubernetes_objects() for e in validate_manifest(obj)]
    assert errors == []


def test_ejection_detection_output_covers_every_service(render: Render) -> None:
    # Default 5 consecutive errors x 1s outlierRequestGap: Envoy ejects on the 5th error.
    assert render.outputs["ejection"] == {"bank/pay": 5, "shop/cart": 5, "shop/web": 5}
    assert render.outputs["loadtester"] == "http://flagger-loadtester.flagger-system/"


def test_no_flagger_without_progressive_services() -> None:
    settings = make_settings(services=[{"name": "a", "namespace": "shop"}])

    def build_static(opts: pulumi.ResourceOptions) -> None:
        traffic_management(settings, opts)

    names = by_name(run_with_provider(build_static))
    assert not [n for n in names if n.startswith("t-delivery")]


def test_sidecar_scoping_can_be_turned_off() -> None:
    settings = make_settings(
        services=[{"name": "a", "namespace": "shop"}], traffic={"sidecarScoping": False}
    )

    def build_unscoped(opts: pulumi.ResourceOptions) -> None:
        traffic_management(settings, opts)

    names = by_name(run_with_provider(build_unscoped))
    assert "t-sidecars" not in names


def test_region_labels_the_flagger_namespace_to_follow_the_default_tag() -> None:
    # The Flagger namespace's injection labels come from region.py, not from the traffic
    # settings: under revisions it is untagged, injected wherever the `default` tag points,
    # even when the service's own namespace has moved to another tag.
    services = [{"name": "pay", "namespace": "bank", "delivery": "progressive"}]
    revisions = [
        {"name": "1-30-4", "version": "1.30.4", "tags": ["default"]},
        {"name": "1-31-0", "version": "1.31.0", "tags": ["canary"]},
    ]
    config = {
        "meshstack:region": "rev-1",
        "meshstack:istioRevisions": json.dumps(revisions),
        "meshstack:namespaceRevisions": json.dumps({"bank": "canary"}),
        "meshstack:services": json.dumps(services),
    }
    labels = {
        o["metadata"]["name"]: o["metadata"].get("labels", {})
        for o in run_program("rev-1", config).kubernetes_objects()
        if o["kind"] == "Namespace"
    }
    assert labels["flagger-system"]["istio-injection"] == "enabled"
    assert "istio.io/rev" not in labels["flagger-system"]
    assert labels["bank"]["istio.io/rev"] == "canary"
