"""ProgressiveDelivery: Flagger, its loadtester, and a Canary per progressive service.

Flagger owns the routing of a `delivery: progressive` service: it generates the
`<name>`, `<name>-primary` and `<name>-canary` Services, the DestinationRules and the
VirtualService, and overwrites anyone else's edits (fluxcd/flagger#1715). So the program
creates no VirtualService or DestinationRule for such a service and puts hosts, gateways,
retries, timeout, CORS and traffic policy in `Canary.spec.service` instead. It never sets
the Deployment's replicas either: Flagger and the HPA scale it.

Flagger and the loadtester run in one namespace with sidecar injection, so under STRICT
mTLS Flagger's webhook calls reach the loadtester, and the loadtester's smoke and load
tests reach `<name>-canary`, over mTLS the sidecars add: no PeerAuthentication exception
and no DISABLE DestinationRule is needed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.helm import install_chart
from components.kube import namespace
from components.naming import MANAGED_BY
from components.traffic import delivery_specs, specs
from components.traffic.gateway import IngressGateways
from components.traffic.policy import ejection_seconds
from components.traffic.settings import TrafficSettings
from components.versions import FLAGGER, FLAGGER_LOADTESTER

if TYPE_CHECKING:
    # Types only: the root model imports this package, so importing it (or the mesh's
    # modules, which import it) at runtime would be a cycle.
    from components.istio.component import IstioMesh
    from components.settings import MeshService

TOKEN: Final = "meshstack:traffic:ProgressiveDelivery"
FLAGGER_RELEASE: Final = "flagger"


def _canary(service: MeshService, names: list[Any]) -> dict[str, Any]:
    """Canary spec from the resolved loadtester namespace and gateway references."""
    return delivery_specs.canary_spec(service, [str(r) for r in names[1:]], str(names[0]))


class ProgressiveDelivery(pulumi.ComponentResource):
    """Flagger 1.44 (Istio provider) and its loadtester, and one Canary per service given.

    Children: the Flagger namespace (injected, retained), the two Helm charts (after istiod,
    whose webhook injects their sidecars), the `grpc-success-rate` MetricTemplate when a
    service is gRPC, the Canaries (after Flagger's chart, which ships the Canary CRD, and
    after istiod), and a DestinationRule for the apex host of each service that another
    service's endpoint route targets (`route_targets`). A service with
    `progressive.retire` gets no Canary: Pulumi deletes it and Flagger reverts the
    Deployment, while Flagger itself stays installed to run that finalizer.
    """

    namespace: pulumi.Output[str]
    """Flagger's namespace (`metadata.name`), where MeshSecurity puts its policies."""
    loadtester_url: pulumi.Output[str]
    """URL Flagger's webhooks call."""
    ejection_detection_seconds: pulumi.Output[dict[str, float | None]]
    """Ejection detection time (None: never) per `<namespace>/<name>` (Canary trafficPolicy)."""

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        traffic: TrafficSettings,
        *,
        services: Sequence[MeshService],
        gateways: IngressGateways,
        injection_labels: Mapping[str, str],
        prometheus_url: str,
        cluster_name: str,
        route_targets: Collection[str] = (),
        handovers: Collection[str] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`injection_labels`: the namespace labels that turn on injection for the mesh's
        control plane; `prometheus_url` and `cluster_name` are Flagger's metrics server and
        the cluster name it reports; `route_targets`: `<namespace>/<name>` of the services
        other services' endpoint routes send to; `handovers`: `<namespace>/<name>` of the
        services switching from static delivery in this update, whose Canary the update
        waits for until Flagger has taken their VirtualService over
        (`components.traffic.handoff`)."""
        super().__init__(TOKEN, name, None, opts)
        ns = namespace(f"{name}-ns", traffic.flagger_namespace, injection_labels, parent=self)
        flagger = install_chart(
            f"{name}-flagger",
            FLAGGER,
            release=FLAGGER_RELEASE,
            namespace=ns.metadata.name,
            values=delivery_specs.flagger_values(prometheus_url, cluster_name),
            parent=self,
            source=mesh.chart_source,
            depends_on=[mesh.control_plane],
        )
        install_chart(
            f"{name}-loadtester",
            FLAGGER_LOADTESTER,
            release=delivery_specs.LOADTESTER_RELEASE,
            namespace=ns.metadata.name,
            values=delivery_specs.loadtester_values(),
            parent=self,
            source=mesh.chart_source,
            depends_on=[mesh.control_plane],
        )
        active = [s for s in services if not s.traffic.progressive.retire]
        if any(s.protocol == "grpc" for s in active):
            CustomResource(
                f"{name}-grpc-success-rate",
                api_version="flagger.app/v1beta1",
                kind="MetricTemplate",
                metadata={
                    "name": delivery_specs.GRPC_SUCCESS_RATE,
                    "namespace": ns.metadata.name,
                    "labels": dict(MANAGED_BY),
                },
                spec=delivery_specs.metric_template_spec(prometheus_url),
                opts=pulumi.ResourceOptions.merge(
                    mesh.custom_resource_options(self),
                    pulumi.ResourceOptions(depends_on=[flagger]),
                ),
            )
        # Canaries do not wait for the MetricTemplate: Flagger reads it only at the first
        # analysis, after initializing the canary (creating `-primary` and waiting for it to
        # be ready), and the template is created beside the Canaries in the same update.
        # Waiting would put a sixth step on the first deploy's critical path.
        canary_options = pulumi.ResourceOptions.merge(
            mesh.custom_resource_options(self),
            pulumi.ResourceOptions(depends_on=[flagger, *gateways.resources.values()]),
        )
        for service in active:
            if f"{service.namespace}/{service.name}" in route_targets:
                # Another VirtualService routes to the apex host directly (not through
                # Flagger's VirtualService), and Flagger's DestinationRules cover only
                # `-primary` and `-canary`: without this one the apex cluster has no outlier
                # detection, so Istio applies no locality failover priority to it.
                CustomResource(
                    f"{name}-{service.namespace}-{service.name}-apex-dr",
                    api_version="networking.istio.io/v1",
                    kind="DestinationRule",
                    metadata={
                        # Not `<name>`: a static service's DestinationRule has that name, and
                        # on a switch to progressive delivery both exist for one update.
                        "name": f"{service.name}-apex",
                        "namespace": mesh.workload_namespace(service.namespace).metadata.name,
                        "labels": {**MANAGED_BY, "app": service.name},
                    },
                    spec=specs.apex_destination_rule_spec(service),
                    opts=mesh.custom_resource_options(self),
                )
        for service in active:
            expose = service.traffic.expose
            refs = [gateways.reference(expose.gateway)] if expose else []
            CustomResource(
                f"{name}-{service.namespace}-{service.name}",
                api_version="flagger.app/v1beta1",
                kind="Canary",
                metadata={
                    "name": service.name,
                    "namespace": mesh.workload_namespace(service.namespace).metadata.name,
                    "labels": {**MANAGED_BY, "app": service.name},
                    "annotations": delivery_specs.canary_annotations(
                        handing_over=f"{service.namespace}/{service.name}" in handovers
                    ),
                },
                spec=pulumi.Output.all(ns.metadata.name, *refs).apply(partial(_canary, service)),
                opts=canary_options,
            )
        self.namespace = ns.metadata.name.apply(str)
        self.loadtester_url = self.namespace.apply(delivery_specs.loadtester_url)
        self.ejection_detection_seconds = pulumi.Output.from_input(
            {
                f"{s.namespace}/{s.name}": ejection_seconds(s, traffic.outlier_request_gap)
                for s in active
            }
        )
        self.register_outputs(
            {
                "namespace": self.namespace,
                "loadtester_url": self.loadtester_url,
                "ejection_detection_seconds": self.ejection_detection_seconds,
            }
        )
