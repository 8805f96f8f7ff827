"""RegionMesh: everything one region runs, composed from the area components.

The only place that knows how the parts fit together: which component receives which,
in what order they are created. `__main__.py` builds the settings and the provider and
hands both here.
"""

from __future__ import annotations

from typing import Any, Final

import pulumi

from components.alerts.component import MeshAlerts
from components.guardrails.component import NamespaceGuardrails
from components.istio.component import IstioMesh
from components.observability.hub import HubReference, hub_outputs
from components.observability.jaeger import JaegerStack
from components.observability.kiali import KialiRemoteAccess, KialiStack
from components.observability.telemetry import MeshTelemetry
from components.ratelimit.component import RateLimiter
from components.security.component import MeshSecurity
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
    """Worst-case outlier ejection detection time per service (docs/traffic.md)."""

    def __init__(
        self, name: str, settings: StackSettings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # istiod gets Jaeger's address first; Jaeger installs after istiod so its pods are
        # injected (components/observability/jaeger.py). A spoke reads the hub's address instead.
        observability = settings.observability
        obs_ns = settings.observability_namespace
        tracing = (
            JaegerStack.tracing_target_for(obs_ns)
            if observability.is_hub
            else HubReference(f"{name}-hub", observability, opts=child).tracing_target
        )
        self.mesh = IstioMesh(f"{name}-istio", settings.istio, tracing=tracing, opts=child)
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
        else:
            KialiRemoteAccess(f"{name}-kiali-remote", obs_ns, opts=child)
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
            opts=child,
        )
        self.security = MeshSecurity(
            f"{name}-security",
            self.mesh,
            settings.security,
            graph=graph,
            namespaces=settings.namespaces,
            observability_namespace=settings.observability_namespace,
            flagger_namespace=settings.traffic.flagger_namespace,
            opts=child,
        )
        self.rate_limiter = RateLimiter(
            f"{name}-ratelimit",
            self.mesh,
            settings.rate_limit,
            services=settings.services,
            opts=child,
        )
        self.alerts = MeshAlerts(
            f"{name}-alerts",
            self.mesh,
            settings.alerts,
            services=settings.services,
            dashboard=settings.dashboard,
            ratelimit_metrics=self.rate_limiter.metrics_endpoint,
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
