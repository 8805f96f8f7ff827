"""RegionMesh: everything one region runs, composed from the area components.

The only place that knows how the parts fit together: which component receives which,
in what order they are created. `__main__.py` builds the settings, the provider and the
`RunContext` (organization, project, runbook base URL) and hands them here.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import pulumi

from components.alerts.component import MeshAlerts
from components.guardrails.component import NamespaceGuardrails
from components.istio.component import IstioMesh
from components.observability.hub import HubReference, hub_outputs
from components.observability.jaeger import JaegerStack
from components.observability.kiali import KialiRemoteAccess, KialiStack
from components.observability.prometheus import PrometheusAccess
from components.observability.telemetry import MeshTelemetry
from components.ratelimit.component import RateLimiter
from components.ratelimit.gateway import TokenIssuer
from components.run_context import RunContext
from components.security.component import FlaggerNamespace, MeshSecurity
from components.service_graph import ServiceGraph
from components.settings import StackSettings
from components.traffic.component import TrafficManagement

TOKEN: Final = "meshstack:region:RegionMesh"


class RegionMesh(pulumi.ComponentResource):
    """One region of the mesh: Istio, and the components later issues add on top of it."""

    istio_namespace: pulumi.Output[str]
    """Control-plane namespace."""
    workload_namespaces: pulumi.Output[list[str]]
    """Workload namespaces with injection enabled."""
    istio_version: pulumi.Output[str]
    """Istio version of the default revision."""
    istio_revisions: pulumi.Output[dict[str, dict[str, Any]]]
    """istiod revisions → version and tags (docs/upgrades.md)."""
    mesh_id: pulumi.Output[str]
    """Mesh id shared by all regions."""
    ingress_address: pulumi.Output[str]
    """Where public traffic enters this region; known after deploy."""
    observability_hub: pulumi.Output[dict[str, Any]] | None
    """The hub's tracing endpoints for spokes (`observabilityHub`); None on a spoke."""
    ejection_detection_seconds: pulumi.Output[dict[str, float | None]]
    """Time to eject a failing host per service (None: never; docs/traffic.md)."""

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        *,
        context: RunContext,
        route_handovers: Collection[str] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`route_handovers`: `<namespace>/<name>` of the services whose VirtualService this
        update hands to Flagger (`components.traffic.handoff`, from the last deployment)."""
        super().__init__(TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # istiod gets Jaeger's address first; Jaeger installs after istiod so its pods are
        # injected (components/observability/jaeger.py). A spoke reads the hub's address instead.
        observability = settings.observability
        obs_ns = settings.observability_namespace
        tracing = (
            JaegerStack.tracing_target_for(obs_ns)
            if observability.is_hub
            else HubReference(
                f"{name}-hub", observability, context=context, opts=child
            ).tracing_target
        )
        self.mesh = IstioMesh(
            f"{name}-istio",
            settings.istio,
            tracing=tracing,
            applied=not settings.render_yaml_to_directory,
            opts=child,
        )
        self.jaeger = (
            JaegerStack(
                f"{name}-jaeger", self.mesh, observability.jaeger, namespace_name=obs_ns, opts=child
            )
            if observability.is_hub
            else None
        )
        MeshTelemetry(
            f"{name}-telemetry",
            self.mesh,
            observability.telemetry,
            access_logging=settings.access_logging,
            quiet_namespace=self.jaeger.namespace if self.jaeger else None,
            opts=child,
        )
        if self.jaeger:
            KialiStack(
                f"{name}-kiali",
                self.mesh,
                observability,
                jaeger=self.jaeger,
                prometheus_url=settings.prometheus_url,
                opts=child,
            )
        elif observability.kiali.enabled:
            # The hub's Kiali reads this cluster only through these; without them (a spoke's
            # `kiali.enabled: false`) it cannot (docs/observability.md).
            KialiRemoteAccess(
                f"{name}-kiali-remote", obs_ns, chart_source=self.mesh.chart_source, opts=child
            )
        # Flagger (every region) and Kiali (the hub) query Prometheus from meshed pods.
        PrometheusAccess(f"{name}-prometheus", self.mesh, settings.prometheus_url, opts=child)
        self.observability_hub = hub_outputs(self.jaeger) if self.jaeger else None
        graph = ServiceGraph(settings.services)
        self.traffic = TrafficManagement(
            f"{name}-traffic",
            self.mesh,
            settings.traffic,
            graph=graph,
            namespaces=settings.namespaces,
            observability_namespace=settings.observability_namespace,
            injection_labels=self.mesh.injection_labels,
            prometheus_url=settings.prometheus_url,
            cluster_name=settings.effective_cluster_name,
            injected_observability_namespace=self.jaeger.namespace if self.jaeger else None,
            route_handovers=route_handovers,
            opts=child,
        )
        self.rate_limiter = RateLimiter(
            f"{name}-ratelimit",
            self.mesh,
            settings.rate_limit,
            services=settings.services,
            token_issuers=_token_issuers(settings),
            opts=child,
        )
        delivery = self.traffic.delivery
        self.security = MeshSecurity(
            f"{name}-security",
            self.mesh,
            settings.security,
            graph=graph,
            namespaces=settings.namespaces,
            identity_providers=settings.identity_providers,
            # Only a region that runs Flagger (has progressive services) admits its identities.
            flagger=(
                FlaggerNamespace(settings.traffic.flagger_namespace, delivery.namespace)
                if delivery is not None
                else None
            ),
            metrics_endpoints=[e for e in (self.rate_limiter.metrics_endpoint,) if e is not None],
            opts=child,
        )
        self.alerts = MeshAlerts(
            f"{name}-alerts",
            self.mesh,
            settings.alerts,
            services=settings.services,
            dashboard=settings.dashboard,
            ratelimit_metrics=self.rate_limiter.metrics_endpoint,
            runbook_base_url=context.runbook_base_url,
            opts=child,
        )
        self.guardrails = NamespaceGuardrails(
            f"{name}-guardrails",
            self.mesh,
            settings.guardrails,
            namespaces=settings.namespaces,
            opts=child,
        )

        self.istio_namespace = self.mesh.namespace
        self.workload_namespaces = self.mesh.workload_namespaces
        self.istio_version = self.mesh.version
        self.istio_revisions = self.mesh.revisions
        self.mesh_id = self.mesh.mesh_id
        self.ingress_address = self.mesh.ingress_address
        self.ejection_detection_seconds = self.traffic.ejection_detection_seconds
        self.register_outputs(
            {
                "istio_namespace": self.istio_namespace,
                "workload_namespaces": self.workload_namespaces,
                "istio_version": self.istio_version,
                "istio_revisions": self.istio_revisions,
                "mesh_id": self.mesh_id,
                "ingress_address": self.ingress_address,
                "observability_hub": self.observability_hub,
                "ejection_detection_seconds": self.ejection_detection_seconds,
            }
        )


def _token_issuers(settings: StackSettings) -> tuple[TokenIssuer, ...]:
    """The identity providers the region's services accept tokens of, once each, in
    settings order: the gateway verifies their tokens to identify quota clients."""
    providers = dict.fromkeys(s.jwt.provider for s in settings.services if s.jwt is not None)
    return tuple(
        TokenIssuer(
            settings.identity_providers[name].issuer, settings.identity_providers[name].jwks_uri
        )
        for name in providers
    )
