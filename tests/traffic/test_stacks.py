"""Traffic in whole stacks: literal expectations on the fixture stacks, which between them
exercise every traffic option the issue names, and invariants over every production stack
(whatever its services, weights and hosts)."""

from __future__ import annotations

from typing import Any

import pytest

from components.settings import load_settings
from components.settings_types import duration_ms
from tests.conftest import FIXTURES, STACKS, stack_settings
from tests.traffic.test_specs import istio_duplicated_egress_hosts
from tools.charts import published_chart
from tools.render import Render, load_stack_config


def objects(render: Render, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in render.kubernetes_objects()
        if o["kind"] == kind
    }


# --- the fixture stacks -----------------------------------------------------------------------


def test_fingerprint_api_header_canary_with_hashing_on_the_user(
    fixture_renders: dict[str, Render],
) -> None:
    for stack in ("fixture-hub", "fixture-spoke", "fixture-small-spoke"):
        vs = objects(fixture_renders[stack], "VirtualService")["identity", "fingerprint-api"]
        canary = next(r for r in vs["spec"]["http"] if r["name"] == "default-canary")
        assert canary["match"][-1]["headers"]["x-user-id"] == {"regex": "^canary-.*"}
        assert {d["destination"]["subset"]: d["weight"] for d in canary["route"]} == {
            "canary": 5,
            "stable": 95,
        }
        dr = objects(fixture_renders[stack], "DestinationRule")["identity", "fingerprint-api"]
        assert dr["spec"]["trafficPolicy"]["loadBalancer"] == {
            "consistentHash": {"httpHeaderName": "x-user-id"}
        }


def test_revenue_engine_split_mirror_circuit_breaking_and_admin_route(
    fixture_renders: dict[str, Render],
) -> None:
    render = fixture_renders["fixture-hub"]
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


def test_a_progressive_service_and_flagger_in_a_fixture(
    fixture_renders: dict[str, Render],
) -> None:
    # market-data's app metrics port must reach Flagger's generated Services.
    canary = objects(fixture_renders["fixture-hub"], "Canary")["markets", "market-data"]
    assert canary["spec"]["service"]["portDiscovery"] is True


def test_a_public_host_on_the_gateway(fixture_renders: dict[str, Render]) -> None:
    for stack in ("fixture-hub", "fixture-spoke"):
        gateways = objects(fixture_renders[stack], "Gateway")
        assert ("istio-ingress", "public") in gateways
        vs = objects(fixture_renders[stack], "VirtualService")["identity", "fingerprint-api"]
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
        settings = stack_settings(stack)
        off = {
            f"{s.namespace}/{s.name}"
            for s in settings.services
            if s.traffic.policy.outlier_detection is None
        }
        assert {k for k, v in times.items() if v is None} == off, stack


def test_progressive_hosts_that_routes_target_fail_over(every_render: dict[str, Render]) -> None:
    # Istio applies locality failover only to a cluster with outlier detection, and the
    # route reaches the apex host directly, not through Flagger's -primary/-canary rules.
    checked = 0
    for stack, render in every_render.items():
        services = stack_settings(stack).services
        progressive = {f"{s.namespace}/{s.name}" for s in services if s.delivery == "progressive"}
        rules = objects(render, "DestinationRule")
        for service in services:
            for route in service.traffic.routes:
                if route.backend in progressive:
                    namespace, name = route.backend.split("/")
                    spec = rules[namespace, f"{name}-apex"]["spec"]
                    assert spec["host"] == f"{name}.{namespace}.svc.cluster.local"
                    assert "outlierDetection" in spec["trafficPolicy"], (stack, route.backend)
                    checked += 1
    assert checked, "a fixture routes an endpoint to a progressive service"


def test_ejection_detection_times_of_the_hub_fixture(fixture_renders: dict[str, Render]) -> None:
    # Envoy ejects inline on the N-th consecutive error: N x outlierRequestGap (500ms here),
    # never waiting for the interval sweep.
    assert fixture_renders["fixture-hub"].outputs["ejectionDetectionSeconds"] == {
        "identity/fingerprint-api": 2.5,  # 5 consecutive 5xx
        "markets/market-data": 2.5,
        # Outlier detection off: it never ejects.
        "revenue/admin-service": None,
        # max(5 x 5xx, 3 local-origin) = 5 errors; the v2 subset's own policy (3 errors,
        # 1.5s) is faster, so the service's counts.
        "revenue/revenue-engine": 2.5,
    }


# --- invariants over every stack, production and fixture -------------------------------------


@pytest.mark.parametrize("stack", STACKS + FIXTURES)
def test_every_weighted_route_splits_all_traffic_between_declared_subsets(
    every_render: dict[str, Render], stack: str
) -> None:
    render = every_render[stack]
    rules = objects(render, "DestinationRule")
    for key, vs in objects(render, "VirtualService").items():
        subsets = {s["name"] for s in rules.get(key, {}).get("spec", {}).get("subsets", [])}
        for route in vs["spec"]["http"]:
            weighted = [d for d in route["route"] if "weight" in d]
            if not weighted:
                continue
            where = f"{stack}: VirtualService {key[0]}/{key[1]} route {route.get('name')}"
            assert sum(d["weight"] for d in weighted) == 100, f"{where}: weights must sum to 100"
            for destination in weighted:
                subset = destination["destination"].get("subset")
                if subset is not None and destination["destination"]["host"].startswith(
                    f"{key[1]}.{key[0]}."
                ):
                    assert subset in subsets, f"{where}: subset {subset} is not declared"


@pytest.mark.parametrize("stack", STACKS + FIXTURES)
def test_progressive_services_get_flagger_and_no_static_routing(
    every_render: dict[str, Render], stack: str
) -> None:
    render = every_render[stack]
    if not objects(render, "Canary"):
        return
    charts = {published_chart(c) for c in render.helm_charts()}
    assert {"flagger", "loadtester"} <= charts, f"{stack}: progressive delivery needs Flagger"
    for key in objects(render, "Canary"):
        assert key not in objects(render, "VirtualService"), (stack, key)
        assert key not in objects(render, "DestinationRule"), (stack, key)


def test_some_fixture_delivers_progressively(fixture_renders: dict[str, Render]) -> None:
    assert [s for s in FIXTURES if objects(fixture_renders[s], "Canary")]


@pytest.mark.parametrize("stack", STACKS + FIXTURES)
def test_chaos_drills_only_hit_requests_with_the_drill_header(
    every_render: dict[str, Render], stack: str
) -> None:
    for vs in objects(every_render[stack], "VirtualService").values():
        for route in vs["spec"]["http"]:
            if "fault" in route:
                assert route["match"], f"{stack}: {route['name']} injects faults into all"
                assert all(m.get("headers") for m in route["match"]), (stack, route["name"])


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_exports_an_ejection_detection_time_per_service(
    stack_renders: dict[str, Render], stack: str
) -> None:
    settings = load_settings(load_stack_config(stack)[0])
    services = {f"{s.namespace}/{s.name}" for s in settings.services}
    times = stack_renders[stack].outputs["ejectionDetectionSeconds"]
    assert set(times) == services, f"{stack}: ejectionDetectionSeconds must name every service"
    bound = duration_ms(settings.traffic.ejection_detection_bound) / 1000
    for service, seconds in times.items():
        assert seconds is None or 0 < seconds <= bound, (
            f"{stack}: {service} detects an ejection in {seconds}s, above "
            f"traffic.ejectionDetectionBound"
        )


def test_no_sidecar_lists_an_egress_host_istio_counts_twice(
    every_render: dict[str, Render],
) -> None:
    """Istio's Sidecar validation warns on overlapping egress hosts (make e2e's `istioctl
    validate` found one); every Sidecar of every stack lists each host once."""
    for stack, render in every_render.items():
        for (ns, name), sidecar in objects(render, "Sidecar").items():
            for listener in sidecar["spec"]["egress"]:
                duplicated = istio_duplicated_egress_hosts(ns, listener["hosts"])
                assert duplicated == [], f"{stack} Sidecar {ns}/{name}: {duplicated}"
