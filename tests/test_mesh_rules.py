"""Rules over every stack file at once (`tools.mesh_rules`): the production stack files and
the fixture mesh keep them, and each mistake is one line naming both files."""

from __future__ import annotations

from typing import Any

from components.settings import StackSettings
from tests.conftest import FIXTURES, STACKS, make_settings, stack_settings
from tools.mesh_rules import policy_conflicts

RULE = [{"serviceAccounts": ["shop/web"], "methods": ["GET"]}]


def _region(region: str, **service: Any) -> StackSettings:
    return make_settings(region=region, services=[{"name": "api", "namespace": "shop", **service}])


def test_every_stack_file_keeps_a_shared_service_s_policies_the_same_or_local() -> None:
    assert policy_conflicts({stack: stack_settings(stack) for stack in STACKS}) == []


def test_the_fixture_mesh_keeps_them_too() -> None:
    assert policy_conflicts({stack: stack_settings(stack) for stack in FIXTURES}) == []


def test_different_authorization_in_two_regions_is_one_line_naming_both_files() -> None:
    # A caller in `a` that fails over to `b` meets b's rules: allowed at home, 403 there.
    stacks = {"a": _region("a", authorization=RULE), "b": _region("b")}
    assert policy_conflicts(stacks) == [
        "Pulumi.b.yaml: meshstack:services[0] (api).authorization differs from Pulumi.a.yaml's: "
        "locality failover sends one region's callers to the other, whose policies then "
        "answer them (403); make them equal, or list api.shop.svc.cluster.local in "
        "clusterLocalHosts of every stack file"
    ]


def test_equal_policies_or_a_cluster_local_host_are_consistent() -> None:
    same = {"a": _region("a", authorization=RULE), "b": _region("b", authorization=RULE)}
    assert policy_conflicts(same) == []
    local = ["*.shop.svc.cluster.local"]
    kept_local = {
        name: make_settings(
            region=name,
            clusterLocalHosts=local,
            services=[{"name": "api", "namespace": "shop", "authorization": rules}],
        )
        for name, rules in (("a", RULE), ("b", []))
    }
    assert policy_conflicts(kept_local) == []
