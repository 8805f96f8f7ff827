"""IstioSettings: the slice of the stack settings that IstioMesh and its values builders read.

The config keys stay flat at the root of the stack settings (`meshstack:meshId`,
`meshstack:istiodReplicas`, …); `StackSettings.istio` gathers them, with the defaults of
`clusterName` and `network` already applied, so the mesh and `components.istio.values`
never see the rest of the stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from components.settings_types import ChartSource


@dataclass(frozen=True)
class IstioSettings:
    """What the Istio control plane and gateways of one region are built from."""

    mesh_id: str
    """`global.meshID`, the same in every region."""
    cluster_name: str
    """`global.multiCluster.clusterName` (the setting, else the region)."""
    network: str
    """`global.network` of this cluster (the setting, else `network-<region>`)."""
    revision: str
    """Control-plane revision; empty for the default revision."""
    workload_namespaces: tuple[str, ...]
    """Workload namespaces the mesh creates with injection enabled, sorted."""
    proxy_stats_inclusion_regexps: tuple[str, ...]
    """Envoy stats exported beyond Istio's standard metrics."""
    cluster_local_hosts: tuple[str, ...]
    """Hosts kept in this region (`meshConfig.serviceSettings` clusterLocal), sorted."""
    istiod_replicas: int
    istiod_max_replicas: int
    gateway_replicas: int
    gateway_max_replicas: int
    egress_gateway: bool
    """Install the egress gateway."""
    east_west_gateway: bool
    """Install the east-west gateway and the cross-network Gateway."""
    east_west_gateway_service_annotations: Mapping[str, str]
    """Annotations of the east-west gateway's LoadBalancer Service."""
    chart_source: ChartSource
    """Where every Helm chart of the region comes from (`meshstack:chartSource`)."""
