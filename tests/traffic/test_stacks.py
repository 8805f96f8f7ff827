"""The three region stacks between them exercise every traffic option the issue names."""

from __future__ import annotations

from typing import Any

from components.settings import StackSettings, load_settings
from tests.conftest import STACKS
from tools.render import Render, load_stack_config


def load_stack_settings(stack: str) -> StackSettings:
    config, _ = load_stack_config(stack)
    return load_settings(config)


def objects(render: Render, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in render.kubernetes_objects()
        if o["kind"] == kind
    }


def test_fingerprint_api_header_canary_with_hashing_on_the_user(
    stack_renders: dict[str, Render],
) -> None:
    for stack in STACKS:
        vs = objects(stack_renders[stack], "VirtualService")["identity", "fingerprint-api"]
        canary = next(r for r in vs["spec"]["http"] if r["name"] == "default-canary")
        assert canary["match"][-1]["headers"]["x-user-id"] == {"regex": "^canary-.*"}
        assert {d["destination"]["subset"]: d["weight"] for d in canary["route"]} == {
            "canary": 5,
            "stable": 95,
        }
        dr = objects(stack_renders[stack], "DestinationRule")["identity", "fingerprint-api"]
        assert dr["spec"]["trafficPolicy"]["loadBalancer"] == {
            "consistentHash": {"httpHeaderName": "x-user-id"}
        }


def test_revenue_engine_split_mirror_circuit_breaking_and_admin_route(
    stack_renders: dict[str, Render],
) -> None:
    render = stack_renders["us-east-1"]
    vs = objects(render, "VirtualService")["revenue", "revenue-engine"]["spec"]
    default = next(r for r in vs["http"] if r["name"] == "default")
    assert {d["destination"]["subset"]: d["weight"] for d in default["route"]} == {
        "v1": 80,
        "v2": 20,
    }
    # The mirror goes to a shadow without live weight, so no request is processed twice.
    assert default["mirror"]["subset"] == "v3"
    assert default["mirrorPercentage"] == {"value": 25}
    admin = next(r for r in vs["http"] if r["name"] == "admin")
    assert admin["match"] == [{"uri": {"prefix": "/api/v1/admin"}}]
    assert admin["route"][0]["destination"]["host"] == "admin-service.revenue.svc.cluster.local"
    policy = objects(render, "DestinationRule")["revenue", "revenue-engine"]["spec"]
    assert set(policy["trafficPolicy"]["connectionPool"]) == {"tcp", "http"}
    assert policy["trafficPolicy"]["outlierDetection"]["consecutiveLocalOriginFailures"] == 3


def test_a_progressive_service_and_flagger_in_some_stacks(
    stack_renders: dict[str, Render],
) -> None:
    with_canaries = [s for s in STACKS if objects(stack_renders[s], "Canary")]
    assert with_canaries
    for stack in with_canaries:
        charts = {c["chart"] for c in stack_renders[stack].helm_charts()}
        assert {"flagger", "loadtester"} <= charts
        for key in objects(stack_renders[stack], "Canary"):
            assert key not in objects(stack_renders[stack], "VirtualService")
            assert key not in objects(stack_renders[stack], "DestinationRule")
    # market-data's app metrics port must reach Flagger's generated Services.
    canary = objects(stack_renders["us-east-1"], "Canary")["markets", "market-data"]
    assert canary["spec"]["service"]["portDiscovery"] is True


def test_chaos_drills_only_hit_requests_with_the_drill_header(
    stack_renders: dict[str, Render],
) -> None:
    for stack in STACKS:
        for vs in objects(stack_renders[stack], "VirtualService").values():
            for route in vs["spec"]["http"]:
                if "fault" in route:
                    assert route["match"], f"{stack}: {route['name']} injects faults into all"
                    assert all(m.get("headers") for m in route["match"]), (stack, route["name"])


def test_a_public_host_on_the_gateway(stack_renders: dict[str, Render]) -> None:
    for stack in ("us-east-1", "eu-west-1"):
        gateways = objects(stack_renders[stack], "Gateway")
        assert ("istio-ingress", "public") in gateways
        vs = objects(stack_renders[stack], "VirtualService")["identity", "fingerprint-api"]
        assert vs["spec"]["gateways"] == ["istio-ingress/public", "mesh"]


def test_every_stack_exports_ejection_detection_times(stack_renders: dict[str, Render]) -> None:
    for stack in STACKS:
        times = stack_renders[stack].outputs["ejectionDetectionSeconds"]
        assert times, stack
        for service, seconds in times.items():
            assert seconds is None or 0 < seconds <= 60, (stack, service)
    for stack in STACKS:
        # Every service of the stack is reported; "never" (None) only where outlier
        # detection is off, since the settings reject caps that can never eject.
        times = stack_renders[stack].outputs["ejectionDetectionSeconds"]
        settings = load_stack_settings(stack)
        off = {
            f"{s.namespace}/{s.name}"
            for s in settings.services
            if s.traffic.policy.outlier_detection is None
        }
        assert {k for k, v in times.items() if v is None} == off, stack


def test_progressive_hosts_that_routes_target_fail_over(stack_renders: dict[str, Render]) -> None:
    # Istio applies locality failover only to a cluster with outlier detection, and the
    # route reaches the apex host directly, not through Flagger's -primary/-canary rules.
    checked = 0
    for stack in STACKS:
        services = load_stack_settings(stack).services
        progressive = {f"{s.namespace}/{s.name}" for s in services if s.delivery == "progressive"}
        rules = objects(stack_renders[stack], "DestinationRule")
        for service in services:
            for route in service.traffic.routes:
                if route.backend in progressive:
                    namespace, name = route.backend.split("/")
                    spec = rules[namespace, f"{name}-apex"]["spec"]
                    assert spec["host"] == f"{name}.{namespace}.svc.cluster.local"
                    assert "outlierDetection" in spec["trafficPolicy"], (stack, route.backend)
                    checked += 1
    assert checked, "some stack routes an endpoint to a progressive service"
