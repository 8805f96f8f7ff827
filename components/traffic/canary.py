"""CanaryRoute: the VirtualService and DestinationRule of one statically routed service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.istio.component import IstioMesh
from components.naming import MANAGED_BY
from components.settings import MeshService
from components.traffic import specs
from components.traffic.settings import effective_policies, ejection_detection_ms

TOKEN: Final = "meshstack:traffic:CanaryRoute"
NETWORKING_API: Final = "networking.istio.io/v1"


def worst_ejection_seconds(service: MeshService, request_gap: str) -> float | None:
    """Slowest worst-case ejection detection over the service's policies.

    None when outlier detection is off: such a service never ejects a failing host.
    """
    times = [
        ejection_detection_ms(policy.outlier_detection, request_gap)
        for _, policy in effective_policies(service.traffic)
        if policy.outlier_detection is not None
    ]
    return specs.ejection_seconds(max(times)) if times else None


class CanaryRoute(pulumi.ComponentResource):
    """Routing and resilience of one `delivery: static` service.

    Children: a VirtualService (header or weighted canary, mirroring, endpoint routes,
    timeouts, retries, CORS, a header-scoped chaos drill) and a DestinationRule (subsets per
    version, load balancer, connection pool, outlier detection, ISTIO_MUTUAL), both in the
    service's namespace, created after istiod (whose webhook validates them).
    """

    hosts: pulumi.Output[list[str]]
    """Hosts the VirtualService routes: the cluster-local FQDN, then public hosts."""
    ejection_detection_seconds: pulumi.Output[float | None]
    """Worst-case seconds from a host failing to its ejection (`traffic_settings`); None
    when outlier detection is off."""

    def __init__(
        self,
        name: str,
        service: MeshService,
        mesh: IstioMesh,
        *,
        backends: Mapping[str, MeshService],
        gateway_refs: Sequence[pulumi.Input[str]] = (),
        gateways: Sequence[pulumi.Resource] = (),
        outlier_request_gap: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        namespace = mesh.workload_namespace(service.namespace).metadata.name
        metadata = {
            "name": service.name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, "app": service.name},
        }
        options = mesh.custom_resource_options(self)
        vs_spec = pulumi.Output.all(*gateway_refs).apply(
            lambda refs: specs.virtual_service_spec(service, backends, [str(r) for r in refs])
        )
        CustomResource(
            f"{name}-vs",
            api_version=NETWORKING_API,
            kind="VirtualService",
            metadata=metadata,
            spec=vs_spec,
            opts=pulumi.ResourceOptions.merge(
                options, pulumi.ResourceOptions(depends_on=list(gateways))
            ),
        )
        CustomResource(
            f"{name}-dr",
            api_version=NETWORKING_API,
            kind="DestinationRule",
            metadata=metadata,
            spec=specs.destination_rule_spec(service),
            opts=options,
        )
        self.hosts = vs_spec.apply(lambda spec: list(spec["hosts"]))
        self.ejection_detection_seconds = pulumi.Output.from_input(
            worst_ejection_seconds(service, outlier_request_gap)
        )
        self.register_outputs(
            {"hosts": self.hosts, "ejection_detection_seconds": self.ejection_detection_seconds}
        )
