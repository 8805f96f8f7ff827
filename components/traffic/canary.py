"""CanaryRoute: the VirtualService and DestinationRule of one statically routed service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.naming import MANAGED_BY
from components.traffic import handoff, specs
from components.traffic.policy import ejection_seconds

if TYPE_CHECKING:
    # Types only: the root model imports this package, so importing it (or the mesh's
    # modules, which import it) at runtime would be a cycle.
    from components.istio.component import IstioMesh
    from components.settings import MeshService

TOKEN: Final = "meshstack:traffic:CanaryRoute"
NETWORKING_API: Final = "networking.istio.io/v1"


class CanaryRoute(pulumi.ComponentResource):
    """Routing and resilience of one `delivery: static` service.

    Children: a VirtualService (header or weighted canary, mirroring, endpoint routes,
    timeouts, retries, CORS, a header-scoped chaos drill) and a DestinationRule (subsets per
    version, load balancer, connection pool, outlier detection, ISTIO_MUTUAL), both in the
    service's namespace, created after istiod (whose webhook validates them).
    """

    ejection_detection_seconds: pulumi.Output[float | None]
    """Seconds from a host failing to its ejection (`policy.ejection_seconds`); None
    ("never") when outlier detection is off or cannot eject."""

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        service: MeshService,
        *,
        backends: Mapping[str, MeshService],
        gateway_refs: Sequence[pulumi.Input[str]] = (),
        gateways: Sequence[pulumi.Resource] = (),
        outlier_request_gap: str,
        handing_over: bool = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`handing_over`: the service switches to progressive delivery in this update
        (`components.traffic.handoff`): both objects stay as the last update left them, and
        the VirtualService is retained when a later update stops declaring it, because
        Flagger has taken it over by then."""
        super().__init__(TOKEN, name, None, opts)
        namespace = mesh.workload_namespace(service.namespace).metadata.name
        metadata = {
            "name": service.name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, "app": service.name},
        }
        options = mesh.custom_resource_options(self)
        vs_options = pulumi.ResourceOptions(depends_on=list(gateways))
        dr_options = options
        if handing_over:
            vs_options = pulumi.ResourceOptions.merge(
                vs_options,
                pulumi.ResourceOptions(
                    retain_on_delete=True, ignore_changes=list(handoff.FLAGGER_REWRITES)
                ),
            )
            dr_options = pulumi.ResourceOptions.merge(
                options, pulumi.ResourceOptions(ignore_changes=["spec"])
            )
        vs_spec = pulumi.Output.all(*gateway_refs).apply(
            lambda refs: specs.virtual_service_spec(service, backends, [str(r) for r in refs])
        )
        CustomResource(
            f"{name}-vs",
            api_version=NETWORKING_API,
            kind="VirtualService",
            metadata=metadata,
            spec=vs_spec,
            opts=pulumi.ResourceOptions.merge(options, vs_options),
        )
        CustomResource(
            f"{name}-dr",
            api_version=NETWORKING_API,
            kind="DestinationRule",
            metadata=metadata,
            spec=specs.destination_rule_spec(service),
            opts=dr_options,
        )
        self.ejection_detection_seconds = pulumi.Output.from_input(
            ejection_seconds(service, outlier_request_gap)
        )
        self.register_outputs({"ejection_detection_seconds": self.ejection_detection_seconds})
