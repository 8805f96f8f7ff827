"""TrafficManagement: every traffic object of a region, composed from the traffic parts.

Static services get a CanaryRoute; progressive services a Flagger Canary (Flagger is only
installed when at least one service is progressive); public hosts get ingress Gateways;
every workload namespace gets a Sidecar.
"""

from __future__ import annotations

from typing import Final

import pulumi

from components.istio.component import IstioMesh
from components.service_graph import ServiceGraph
from components.settings import StackSettings
from components.traffic.canary import CanaryRoute
from components.traffic.delivery import ProgressiveDelivery
from components.traffic.gateway import IngressGateways
from components.traffic.sidecar import SidecarScopes

TOKEN: Final = "meshstack:traffic:TrafficManagement"


class TrafficManagement(pulumi.ComponentResource):
    """Gateways, CanaryRoutes, Sidecars and progressive delivery for one region."""

    ejection_detection_seconds: pulumi.Output[dict[str, float | None]]
    """Worst-case ejection detection time per `<namespace>/<name>`, every service."""

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        mesh: IstioMesh,
        *,
        graph: ServiceGraph,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        traffic = settings.traffic
        self.gateways = IngressGateways(f"{name}-gateways", traffic.gateways, mesh, opts=child)
        """The ingress Gateways."""
        backends = graph.by_ref()
        ejection: dict[str, pulumi.Output[float | None]] = {}
        self.routes: dict[str, CanaryRoute] = {}
        """CanaryRoute per static service, keyed `<namespace>/<name>`."""
        for service in settings.services:
            if service.delivery != "static":
                continue
            ref = f"{service.namespace}/{service.name}"
            expose = service.traffic.expose
            route = CanaryRoute(
                f"{name}-{service.namespace}-{service.name}",
                service,
                mesh,
                backends=backends,
                gateway_refs=[self.gateways.reference(expose.gateway)] if expose else [],
                gateways=[self.gateways.resources[expose.gateway]] if expose else [],
                outlier_request_gap=traffic.outlier_request_gap,
                opts=child,
            )
            self.routes[ref] = route
            ejection[ref] = route.ejection_detection_seconds
        progressive = [s for s in settings.services if s.delivery == "progressive"]
        self.delivery: ProgressiveDelivery | None = None
        """Flagger and the Canaries; None when no service is progressive."""
        all_times = pulumi.Output.all(**ejection) if ejection else pulumi.Output.from_input({})
        if progressive:
            self.delivery = ProgressiveDelivery(
                f"{name}-delivery",
                settings,
                mesh,
                services=progressive,
                gateways=self.gateways,
                opts=child,
            )
            all_times = pulumi.Output.all(
                all_times, self.delivery.ejection_detection_seconds
            ).apply(lambda parts: {**parts[0], **parts[1]})
        if traffic.sidecar_scoping:
            SidecarScopes(f"{name}-sidecars", settings, mesh, graph=graph, opts=child)
        self.ejection_detection_seconds = all_times.apply(lambda t: dict(sorted(t.items())))
        self.register_outputs({"ejection_detection_seconds": self.ejection_detection_seconds})
