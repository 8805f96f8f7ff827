"""Deploy order of each region: how many resources a first `pulumi up` must create one after
another (the longest dependency chain of `resources.json`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tests.conftest import STACKS, default_istiod, waits_for
from tools.render import Render

MAX_CRITICAL_PATH: int = 5
"""namespace → base (CRDs) → istiod → Flagger's chart → Canary: nothing more must wait in line."""


NOT_AWAITED: frozenset[str] = frozenset(
    {"kubernetes:admissionregistration.k8s.io/v1:MutatingWebhookConfiguration"}
)
"""Kinds the provider creates without waiting for readiness (pulumi-kubernetes awaits only the
kinds in `provider/pkg/await`; a webhook configuration is ready when the API server stores
it): on a chain they order the resources around them but add no wait of their own. A
revision tag's webhook sits between istiod and what waits for the control plane."""


def _is_component(resource: Mapping[str, Any]) -> bool:
    return str(resource["type"]).startswith(("meshstack:", "pulumi:"))


def _waits(resource: Mapping[str, Any]) -> bool:
    return str(resource["type"]) not in NOT_AWAITED


def longest_chain(resources: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names along the longest chain of resources that wait for each other (resources the
    provider does not await, `NOT_AWAITED`, order the chain but are not counted).

    A dependency on a component waits for every resource under it (Pulumi expands it to its
    children), so component dependencies are expanded to their descendants; components
    themselves create nothing and are not counted.
    """
    by_urn = {str(r["urn"]): r for r in resources}
    children: dict[str, list[str]] = {}
    for resource in resources:
        if resource.get("parent"):
            children.setdefault(str(resource["parent"]), []).append(str(resource["urn"]))

    def real(urn: str) -> list[str]:
        if urn not in by_urn:
            return []
        if not _is_component(by_urn[urn]):
            return [urn]
        return [leaf for child in children.get(urn, []) for leaf in real(child)]

    @functools.cache
    def chain(urn: str) -> tuple[str, ...]:
        longest: tuple[str, ...] = ()
        for dependency in by_urn[urn]["dependencies"]:
            for leaf in real(str(dependency)):
                candidate = chain(leaf)
                if len(candidate) > len(longest):
                    longest = candidate
        own = (str(by_urn[urn]["name"]),) if _waits(by_urn[urn]) else ()
        return (*longest, *own)

    longest: tuple[str, ...] = ()
    for urn, resource in by_urn.items():
        if not _is_component(resource) and len(chain(urn)) > len(longest):
            longest = chain(urn)
    return list(longest)


def test_longest_chain_follows_component_dependencies() -> None:
    resources = [
        {"urn": "ns", "name": "ns", "type": "kubernetes:core/v1:Namespace", "dependencies": []},
        {"urn": "c", "name": "c", "type": "meshstack:x:C", "dependencies": []},
        {"urn": "a", "name": "a", "type": "k:A", "parent": "c", "dependencies": ["ns"]},
        {"urn": "b", "name": "b", "type": "k:B", "dependencies": ["c"]},
    ]
    assert longest_chain(resources) == ["ns", "a", "b"]


def test_a_webhook_configuration_orders_the_chain_without_a_wait_of_its_own() -> None:
    webhook = "kubernetes:admissionregistration.k8s.io/v1:MutatingWebhookConfiguration"
    resources = [
        {"urn": "istiod", "name": "istiod", "type": "k:Chart", "dependencies": []},
        {"urn": "tag", "name": "tag", "type": webhook, "dependencies": ["istiod"]},
        {"urn": "app", "name": "app", "type": "k:Chart", "dependencies": ["tag"]},
    ]
    assert longest_chain(resources) == ["istiod", "app"]


@pytest.mark.parametrize("stack", STACKS)
def test_gateways_install_in_parallel_after_istiod(
    stack_renders: dict[str, Render], stack: str
) -> None:
    # Gateway pods get their proxy image from istiod's injector, and from nothing else: the
    # ingress, egress and east-west gateways each wait for the `default` tag's istiod (with
    # revisions, through the tag's webhook, which waits for it) and for no other gateway.
    render = stack_renders[stack]
    istiod = default_istiod(render)
    gateways = [
        r
        for r in render.registrations
        if r.type == "kubernetes:helm.sh/v4:Chart" and r.name.endswith("-gateway")
    ]
    assert gateways
    gateway_urns = {g.urn for g in gateways}
    for gateway in gateways:
        assert istiod.urn in waits_for(render, gateway.urn), gateway.name
        assert not gateway_urns & waits_for(render, gateway.urn), gateway.name


@pytest.mark.parametrize("stack", STACKS)
def test_first_deploy_critical_path_is_at_most_five_resources(
    stack_renders: dict[str, Render], stack: str
) -> None:
    chain = longest_chain(stack_renders[stack].resources())
    assert len(chain) <= MAX_CRITICAL_PATH, " -> ".join(chain)
