"""TrafficManagement: every traffic object of a region, composed from the traffic parts.

Static services get a CanaryRoute; progressive services a Flagger Canary (Flagger is only
installed when at least one service is progressive); public hosts get ingress Gateways;
every workload namespace gets a Sidecar.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import pulumi

from components.traffic import handoff, specs
from components.traffic.canary import CanaryRoute
from components.traffic.delivery import ProgressiveDelivery
from components.traffic.gateway import IngressGateways
from components.traffic.settings import TrafficSettings
from components.traffic.sidecar import SidecarScopes, SystemNamespace

if TYPE_CHECKING:
    # Types only: the root model imports this package, so importing it (or the mesh's
    # modules, which import it) at runtime would be a cycle.
    from components.istio.component import IstioMesh
    from components.service_graph import ServiceGraph

TOKEN: Final = "meshstack:traffic:TrafficManagement"


class TrafficManagement(pulumi.ComponentResource):
    """Gateways, CanaryRoutes, Sidecars and progressive delivery for one region."""

    ejection_detection_seconds: pulumi.Output[dict[str, float | None]]
    """Ejection detection time (None: never) per `<namespace>/<name>`, every service."""

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        traffic: TrafficSettings,
        *,
        graph: ServiceGraph,
        namespaces: Sequence[str],
        observability_namespace: str,
        injection_labels: Mapping[str, str],
        prometheus_url: str,
        cluster_name: str,
        injected_observability_namespace: pulumi.Output[str] | None = None,
        route_handovers: Collection[str] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`graph`: the stack's services and who calls whom; `namespaces`: every workload
        namespace (one Sidecar each); `injected_observability_namespace`: the observability
        namespace when this region runs meshed workloads in it (the hub), which gets a
        Sidecar too; `route_handovers`: `<namespace>/<name>` of the progressive services whose
        VirtualService this update hands to Flagger (`components.traffic.handoff`): they keep
        their CanaryRoute for this update; the rest is passed on to `SidecarScopes` and
        `ProgressiveDelivery`."""
        super().__init__(TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        gateways = IngressGateways(f"{name}-gateways", mesh, traffic.gateways, opts=child)
        services = list(graph.services.values())
        backends = graph.by_ref()
        ejection: dict[str, pulumi.Output[float | None]] = {}
        for service in services:
            handing_over = handoff.key(service) in route_handovers
            if service.delivery != "static" and not handing_over:
                continue
            expose = service.traffic.expose
            route = CanaryRoute(
                f"{name}-{service.namespace}-{service.name}",
                mesh,
                service,
                backends=backends,
                gateway_refs=[gateways.reference(expose.gateway)] if expose else [],
                gateways=[gateways.resources[expose.gateway]] if expose else [],
                outlier_request_gap=traffic.outlier_request_gap,
                handing_over=handing_over,
                opts=child,
            )
            if not handing_over:  # Flagger's traffic policy applies: ProgressiveDelivery's
                ejection[handoff.key(service)] = route.ejection_detection_seconds
        progressive = [s for s in services if s.delivery == "progressive"]
        self.delivery: ProgressiveDelivery | None = None
        """Flagger and the Canaries; None when no service is progressive."""
        all_times = pulumi.Output.all(**ejection) if ejection else pulumi.Output.from_input({})
        if progressive:
            self.delivery = ProgressiveDelivery(
                f"{name}-delivery",
                mesh,
                traffic,
                services=progressive,
                gateways=gateways,
                injection_labels=injection_labels,
                prometheus_url=prometheus_url,
                cluster_name=cluster_name,
                route_targets={
                    route.backend
                    for s in services
                    for route in s.traffic.routes
                    if route.backend is not None
                },
                handovers=route_handovers,
                opts=child,
            )
            all_times = pulumi.Output.all(
                all_times, self.delivery.ejection_detection_seconds
            ).apply(lambda parts: {**parts[0], **parts[1]})
        if traffic.sidecar_scoping:
            prometheus = specs.in_cluster_host(prometheus_url)
            reads_metrics = (prometheus,) if prometheus else ()
            system: list[SystemNamespace] = []
            if self.delivery is not None:
                # Flagger queries Prometheus; the loadtester calls each `<name>-canary`.
                canaries = tuple(
                    specs.canary_host(s) for s in progressive if not s.traffic.progressive.retire
                )
                system.append(
                    SystemNamespace("flagger", self.delivery.namespace, reads_metrics + canaries)
                )
            if injected_observability_namespace is not None:
                # Kiali queries Prometheus; Jaeger and Kiali otherwise talk among themselves.
                system.append(
                    SystemNamespace(
                        "observability", injected_observability_namespace, reads_metrics
                    )
                )
            SidecarScopes(
                f"{name}-sidecars",
                mesh,
                namespaces,
                graph=graph,
                observability_namespace=observability_namespace,
                system_namespaces=system,
                opts=child,
            )
        self.ejection_detection_seconds = all_times.apply(lambda t: dict(sorted(t.items())))
        self.register_outputs({"ejection_detection_seconds": self.ejection_detection_seconds})
