"""tools.summary: what a stack deploys, per area and per service."""

from __future__ import annotations

from typing import Any

from tests.conftest import FIXTURES
from tools.render import Render
from tools.summary import ChartRelease, app_of, area_lines, render_summary, service_lines

Obj = dict[str, Any]


def obj(kind: str, name: str, namespace: str = "shop", **fields: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        **fields,
    }


def test_app_of_reads_labels_and_selectors_and_folds_the_primary_into_its_service() -> None:
    assert app_of({"metadata": {"labels": {"app": "cart"}}}) == "cart"
    assert (
        app_of({"metadata": {}, "spec": {"selector": {"matchLabels": {"app": "cart-primary"}}}})
        == "cart"
    )
    assert app_of({"metadata": {}, "spec": {"workloadSelector": {"labels": {"app": "x"}}}}) == "x"
    assert app_of({"metadata": {}, "spec": {}}) is None


def test_areas_list_kinds_and_charts_in_architecture_order() -> None:
    program = [
        ("security", obj("AuthorizationPolicy", "a")),
        ("security", obj("AuthorizationPolicy", "b")),
    ]
    program.append(("traffic", obj("VirtualService", "v")))
    release = ChartRelease(
        "istiod", "istiod", "1.30.4", "istio-system", "istio", [obj("Service", "istiod")]
    )
    assert area_lines(program, [release]) == [
        "- istio: 0 objects",
        "  - chart istiod 1.30.4 as `istiod` in istio-system: 1 objects (1 Service)",
        "- traffic: 1 objects: 1 VirtualService",
        "- security: 2 objects: 2 AuthorizationPolicy",
    ]


def test_a_service_line_says_how_its_traffic_is_split_mirrored_and_guarded() -> None:
    labels = {"labels": {"app": "cart"}, "name": "cart", "namespace": "shop"}
    vs = {
        "kind": "VirtualService",
        "metadata": labels,
        "spec": {
            "hosts": ["cart.shop.svc.cluster.local", "cart.example.com"],
            "http": [
                {
                    "name": "default",
                    "route": [
                        {"destination": {"host": "cart", "subset": "v1"}, "weight": 90},
                        {"destination": {"host": "cart", "subset": "v2"}, "weight": 10},
                    ],
                    "mirror": {"host": "cart", "subset": "v3"},
                    "mirrorPercentage": {"value": 25},
                }
            ],
        },
    }
    dr = {
        "kind": "DestinationRule",
        "metadata": labels,
        "spec": {
            "trafficPolicy": {
                "outlierDetection": {
                    "consecutive5xxErrors": 3,
                    "interval": "10s",
                    "baseEjectionTime": "30s",
                }
            }
        },
    }
    deny = {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "d", "namespace": "shop"},
        "spec": {"action": "DENY", "selector": {"matchLabels": {"app": "cart"}}},
    }
    other = {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "o", "namespace": "other"},
        "spec": {"selector": {"matchLabels": {"app": "cart"}}},
    }
    assert service_lines(["shop/cart"], [vs, dr, deny, other], {"shop/cart": 3}) == [
        "- shop/cart: 3 objects (1 AuthorizationPolicy, 1 DestinationRule, 1 VirtualService)",
        "  - route default: v1 90 %, v2 10 %; mirror to v3 25 %",
        "  - exposed as cart.example.com",
        "  - outlier detection: 3 consecutive 5xx per 10s, out for 30s"
        " (ejects a failing host in 3 s)",
        "  - security: authorization policies 1 DENY",
    ]


def test_every_render_summary_covers_every_area_object_and_service(
    fixture_renders: dict[str, Render],
) -> None:
    """Whatever the stack: the headline counts every program object, every area that
    registered an object is listed, and every service of the outputs has its entry."""
    for stack in FIXTURES:
        render = fixture_renders[stack]
        program = render.objects_by_area()
        text = render_summary(stack, program, [], render.outputs, hub=render.hub_stack())
        assert f"{len(program)} from the program" in text, stack
        for area in {area for area, _ in program}:
            assert f"\n- {area}: " in text, (stack, area)
        for service in render.outputs["ejectionDetectionSeconds"]:
            assert f"\n- {service}: " in text, (stack, service)
        assert ("spoke of" in text) == (render.hub_stack() is not None), stack


def test_a_progressive_service_shows_its_canary_steps(fixture_renders: dict[str, Render]) -> None:
    render = fixture_renders["fixture-hub"]
    text = render_summary("fixture-hub", render.objects_by_area(), [], render.outputs)
    assert (
        "progressive (Flagger Canary): +5 % every 30s up to 40 %, rolled back after 3 failed checks"
        in text
    )
