"""Property tests of traffic management: any valid weight set renders routes whose
weights sum to 100; no two resources collide on URN or Kubernetes identity for N services;
the resource count grows linearly with the services."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.traffic import specs
from tests.conftest import make_settings
from tools.render import run_program
from tools.verify import validate_manifest

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def weight_sets(draw: st.DrawFn) -> list[int]:
    """1-5 weights in 0..100 summing to 100 (cut points on [0, 100])."""
    count = draw(st.integers(min_value=1, max_value=5))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=count - 1, max_size=count - 1)))
    bounds = [0, *cuts, 100]
    return [b - a for a, b in itertools.pairwise(bounds)]


@FAST
@given(weight_sets(), st.booleans(), st.booleans(), st.booleans())
def test_any_valid_weight_set_renders_routes_summing_to_100(
    weights: list[int], header: bool, endpoint: bool, drill: bool
) -> None:
    versions = [{"name": f"v{i}"} for i in range(len(weights))]
    canary: dict[str, Any] = {
        "weights": [{"subset": f"v{i}", "weight": w} for i, w in enumerate(weights)]
    }
    if header:
        canary["match"] = {"header": "x-user-id", "regex": "^canary-.*"}
    traffic: dict[str, Any] = {"canary": canary}
    if endpoint:
        traffic["routes"] = [{"name": "status", "exact": "/status"}]
    if drill:
        traffic["fault"] = {"abort": {"httpStatus": 503}}
    service = make_settings(
        services=[{"name": "a", "namespace": "shop", "versions": versions, "traffic": traffic}]
    ).services[0]
    spec = specs.virtual_service_spec(service, {})
    for route in spec["http"]:
        destinations = route["route"]
        if len(destinations) > 1 or "weight" in destinations[0]:
            assert sum(d["weight"] for d in destinations) == 100, route["name"]
    obj = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "a", "namespace": "shop"},
        "spec": spec,
    }
    assert validate_manifest(obj) == []


def generated_services(count: int, namespaces: int, progressive_every: int) -> list[dict[str, Any]]:
    """`count` services over `namespaces` namespaces with canaries, routes, policies and
    calls; every `progressive_every`-th is progressive."""
    services = []
    for index in range(count):
        namespace = f"team-{index % namespaces}"
        service: dict[str, Any] = {
            "name": f"svc-{index}",
            "namespace": namespace,
            "versions": [{"name": "stable"}, {"name": "canary"}],
        }
        if index:
            previous = index - 1
            service["calls"] = [f"team-{previous % namespaces}/svc-{previous}"]
        if progressive_every and index % progressive_every == 0:
            service["delivery"] = "progressive"
        else:
            service["traffic"] = {
                "canary": {
                    "weights": [
                        {"subset": "stable", "weight": 90},
                        {"subset": "canary", "weight": 10},
                    ]
                },
                "routes": [{"name": "status", "exact": "/status"}],
                "policy": {"connectionPool": {"maxConnections": 100}},
            }
        services.append(service)
    return services


def render_services(services: list[dict[str, Any]]) -> Any:
    config = {"meshstack:region": "prop-1", "meshstack:services": json.dumps(services)}
    return run_program("prop-1", config)


@SLOW
@given(
    st.integers(min_value=1, max_value=25),
    st.integers(min_value=1, max_value=4),
    st.sampled_from([0, 2, 5]),
)
def test_no_two_resources_collide_for_n_services(
    count: int, namespaces: int, progressive_every: int
) -> None:
    render = render_services(generated_services(count, namespaces, progressive_every))
    urns = Counter(r.urn for r in render.registrations)
    assert [u for u, n in urns.items() if n > 1] == []
    identities = Counter(
        (
            o["apiVersion"].split("/")[0],
            o["kind"],
            o["metadata"].get("namespace", ""),
            o["metadata"]["name"],
        )
        for o in render.kubernetes_objects()
    )
    assert [i for i, n in identities.items() if n > 1] == []
    assert [e for o in render.kubernetes_objects() for e in validate_manifest(o)] == []


def test_resources_grow_linearly_with_services() -> None:
    # Per static service: CanaryRoute + VS + DR; per progressive: a Canary. Per namespace:
    # the namespace and its Sidecar. Counting, not timing: nothing per pair of services.
    # Security adds per service the local rate limit EnvoyFilter and (every generated
    # service is called) an allow-callers policy; per namespace two
    # AuthorizationPolicies (default-deny, public paths: none is scraped, so Prometheus
    # gets nothing), a ResourceQuota and a LimitRange.
    counts = {}
    for size in (20, 40):
        services = generated_services(size, namespaces=size // 10, progressive_every=0)
        counts[size] = len(render_services(services).registrations)
    assert counts[40] - counts[20] == 20 * (3 + 2) + 2 * (2 + 4)
