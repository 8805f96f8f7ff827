"""Deploy order of each region: how many resources a first `pulumi up` must create one after
another (the longest dependency chain of `resources.json`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tests.conftest import STACKS
from tools.render import Render

MAX_CRITICAL_PATH: int = 5
"""namespace → base (CRDs) → istiod → Flagger's chart → Canary: nothing more must wait in line."""


def _is_component(resource: Mapping[str, Any]) -> bool:
    return str(resource["type"]).startswith(("meshstack:", "pulumi:"))


def longest_chain(resources: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names along the longest chain of resources that wait for each other.

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
        return (*longest, str(by_urn[urn]["name"]))

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


@pytest.mark.parametrize("stack", STACKS)
def test_gateways_install_in_parallel_after_istiod(
    stack_renders: dict[str, Render], stack: str
) -> None:
    # Gateway pods get their proxy image from istiod's injector, and from nothing else: the
    # ingress, egress and east-west gateways each wait for istiod and for no other gateway.
    resources = stack_renders[stack].resources()
    charts = {str(r["name"]): r for r in resources if r["type"] == "kubernetes:helm.sh/v4:Chart"}
    istiod = next(r for name, r in charts.items() if name.endswith("-istiod"))
    gateways = [r for name, r in charts.items() if name.endswith("-gateway")]
    assert gateways
    gateway_urns = {g["urn"] for g in gateways}
    for gateway in gateways:
        assert istiod["urn"] in gateway["dependencies"], gateway["name"]
        assert not gateway_urns & set(gateway["dependencies"]), gateway["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_first_deploy_critical_path_is_at_most_five_resources(
    stack_renders: dict[str, Render], stack: str
) -> None:
    chain = longest_chain(stack_renders[stack].resources())
    assert len(chain) <= MAX_CRITICAL_PATH, " -> ".join(chain)
