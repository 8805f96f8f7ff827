"""Cluster-local hosts are a mesh-wide property (`clusterLocalHosts`).

`meshConfig.serviceSettings[].settings.clusterLocal` is read by each istiod from its own mesh
config and only filters the endpoints that istiod sends to its own proxies (pilot
`cluster_local.go`, `endpoint_builder.go`). A host listed in one region only is therefore
kept local for that region's callers alone: the others still load-balance to it across
regions. Every region's istiod must get the same list.
"""

from __future__ import annotations

import pytest

from components.settings import StackSettings, load_settings
from tests.conftest import STACKS
from tools.charts import published_chart
from tools.render import Render, load_stack_config


def _stack_settings(stack: str) -> StackSettings:
    return load_settings(load_stack_config(stack)[0])


def _istiod_cluster_local_hosts(render: Render) -> list[set[str]]:
    """Per istiod of the region (several during a control-plane upgrade), its local hosts."""
    istiods = [c for c in render.helm_charts() if published_chart(c) == "istiod"]
    assert istiods
    return [
        {
            host
            for entry in istiod["values"]["meshConfig"]["serviceSettings"]
            if entry["settings"].get("clusterLocal")
            for host in entry["hosts"]
        }
        for istiod in istiods
    ]


def test_every_stack_file_keeps_the_same_hosts_local() -> None:
    declared = {stack: set(_stack_settings(stack).cluster_local_hosts) for stack in STACKS}
    first = declared[STACKS[0]]
    assert all(hosts == first for hosts in declared.values()), declared


@pytest.mark.parametrize("stack", STACKS)
def test_each_regions_istiod_keeps_every_mesh_wide_host_local(
    stack_renders: dict[str, Render], stack: str
) -> None:
    # eu-west-1 traffic to a host another region lists as cluster-local stays in eu-west-1
    # only if eu-west-1's own istiod has the host too.
    mesh_wide = set().union(*(_stack_settings(s).cluster_local_hosts for s in STACKS))
    for hosts in _istiod_cluster_local_hosts(stack_renders[stack]):
        assert mesh_wide <= hosts, "every istiod of the region, each revision's proxies too"
