"""Namespace guard rails: settings rules (room for the sidecar), specs, component, stacks."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.constants import PROXY_RESOURCES
from components.guardrails.component import NamespaceGuardrails
from components.guardrails.settings import GuardrailSettings
from components.guardrails.specs import (
    LIMIT_RANGE_NAME,
    QUOTA_NAME,
    limit_range_spec,
    resource_quota_spec,
)
from components.istio.component import IstioMesh
from components.settings_types import parse_quantity
from tests.conftest import by_name, make_settings, run_with_provider, settings_error
from tools.verify import validate_manifest


def test_quantities() -> None:
    assert parse_quantity("250m") == Decimal("0.25")
    assert parse_quantity("2") == 2
    assert parse_quantity("512Mi") == 512 * 2**20
    assert parse_quantity("1G") == 10**9
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity("lots")


def test_defaults_leave_room_for_the_sidecar_in_every_pod() -> None:
    g = make_settings().guardrails
    assert g.enabled is True
    assert g.pods == 30
    for resource in ("cpu", "memory"):
        for kind, default in (("requests", g.default_request), ("limits", g.default_limit)):
            per_pod = parse_quantity(getattr(default, resource)) + parse_quantity(
                PROXY_RESOURCES[kind][resource]
            )
            assert parse_quantity(getattr(getattr(g, kind), resource)) >= g.pods * per_pod
        assert parse_quantity(getattr(g.max, resource)) >= parse_quantity(
            PROXY_RESOURCES["limits"][resource]
        ), "a max below the sidecar's limit rejects every injected pod"
        assert parse_quantity(getattr(g.default_request, resource)) >= parse_quantity(
            PROXY_RESOURCES["requests"][resource]
        ), "the default request also covers what a sidecar needs"


def test_invalid_quantity() -> None:
    assert settings_error(guardrails={"max": {"cpu": "four", "memory": "4Gi"}}) == (
        'meshstack:guardrails.max.cpu = "four": must be a Kubernetes quantity, e.g. `500m`, '
        "`2`, `512Mi`, `4Gi`"
    )


def test_default_request_above_default_limit() -> None:
    assert settings_error(guardrails={"defaultRequest": {"cpu": "2", "memory": "256Mi"}}) == (
        'meshstack:guardrails.defaultRequest.cpu = "2": must be <= defaultLimit.cpu (1)'
    )


def test_default_limit_above_max() -> None:
    assert settings_error(guardrails={"defaultLimit": {"cpu": "1", "memory": "8Gi"}}) == (
        'meshstack:guardrails.defaultLimit.memory = "8Gi": must be <= max.memory (4Gi)'
    )


def test_max_below_the_sidecar_limit() -> None:
    small = {"cpu": "1", "memory": "512Mi"}
    assert settings_error(guardrails={"max": small, "defaultLimit": small}) == (
        'meshstack:guardrails.max.cpu = "1": must be >= the istio-proxy limit (2) or injected '
        "pods are rejected"
    )


def test_quota_without_room_for_sidecars() -> None:
    assert settings_error(guardrails={"requests": {"cpu": "8", "memory": "12Gi"}}) == (
        'meshstack:guardrails.requests.cpu = "8": must fit 30 pods of one default container '
        "plus the istio-proxy sidecar (30 x 0.35)"
    )
    assert settings_error(guardrails={"limits": {"cpu": "96", "memory": "40Gi"}}) == (
        'meshstack:guardrails.limits.memory = "40Gi": must fit 30 pods of one default '
        "container plus the istio-proxy sidecar (30 x 1536Mi)"
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.integers(100, 2000), st.integers(128, 2048))
def test_quota_sized_from_pods_always_validates(pods: int, cpu_m: int, memory_mi: int) -> None:
    per_pod_cpu = Decimal(cpu_m) / 1000 + parse_quantity(PROXY_RESOURCES["requests"]["cpu"])
    per_pod_memory = memory_mi + 128
    g = GuardrailSettings.model_validate(
        {
            "pods": pods,
            "defaultRequest": {"cpu": f"{cpu_m}m", "memory": f"{memory_mi}Mi"},
            "defaultLimit": {"cpu": "4", "memory": "4Gi"},
            "requests": {"cpu": f"{per_pod_cpu * pods}", "memory": f"{per_pod_memory * pods}Mi"},
            "limits": {"cpu": f"{6 * pods}", "memory": f"{5 * pods}Gi"},
        }
    )
    spec = resource_quota_spec(g)
    assert spec["hard"]["pods"] == str(pods)
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": spec}
    assert validate_manifest(quota) == []


def test_specs() -> None:
    g = GuardrailSettings()
    assert resource_quota_spec(g) == {
        "hard": {
            "pods": "30",
            "requests.cpu": "12",
            "requests.memory": "12Gi",
            "limits.cpu": "96",
            "limits.memory": "48Gi",
        }
    }
    assert limit_range_spec(g) == {
        "limits": [
            {
                "type": "Container",
                "defaultRequest": {"cpu": "250m", "memory": "256Mi"},
                "default": {"cpu": "1", "memory": "512Mi"},
                "max": {"cpu": "4", "memory": "4Gi"},
            }
        ]
    }


SETTINGS = make_settings(
    services=[{"name": "a", "namespace": "shop"}, {"name": "b", "namespace": "bank"}]
)


@pytest.fixture(scope="module")
def render():  # type: ignore[no-untyped-def]
    def build(opts: Any) -> None:
        mesh = IstioMesh("m", SETTINGS.istio, opts=opts)
        NamespaceGuardrails(
            "g", mesh, SETTINGS.guardrails, namespaces=SETTINGS.namespaces, opts=opts
        )

    return run_with_provider(build)


def test_component_children(render) -> None:  # type: ignore[no-untyped-def]
    names = by_name(render)
    assert names["g"].type == "meshstack:guardrails:NamespaceGuardrails"
    children = {r.name: r for r in render.registrations if r.parent == names["g"].urn}
    assert set(children) == {"g-bank-quota", "g-bank-limits", "g-shop-quota", "g-shop-limits"}
    for child in children.values():
        assert child.provider == names["test-kubernetes"].urn
    assert names["m-ns-shop"].urn in children["g-shop-quota"].dependencies
    assert children["g-shop-quota"].inputs["metadata"] == {"name": QUOTA_NAME, "namespace": "shop"}
    assert children["g-bank-limits"].inputs["metadata"]["name"] == LIMIT_RANGE_NAME


def test_every_stack_guards_every_workload_namespace(stack_renders: Any) -> None:
    for stack, render in stack_renders.items():
        objects = render.kubernetes_objects()
        for kind in ("ResourceQuota", "LimitRange"):
            guarded = {o["metadata"]["namespace"] for o in objects if o["kind"] == kind}
            assert guarded == set(render.outputs["workloadNamespaces"]), (stack, kind)
            for obj in objects:
                if obj["kind"] == kind:
                    assert validate_manifest(obj) == []


def test_guardrails_can_be_switched_off() -> None:
    settings_off = make_settings(
        services=[{"name": "a", "namespace": "shop"}], guardrails={"enabled": False}
    )

    def build(opts: Any) -> None:
        mesh = IstioMesh("m", settings_off.istio, opts=opts)
        NamespaceGuardrails(
            "g", mesh, settings_off.guardrails, namespaces=settings_off.namespaces, opts=opts
        )

    kinds = {o["kind"] for o in run_with_provider(build).kubernetes_objects()}
    assert not kinds & {"ResourceQuota", "LimitRange"}
