"""How istiod learns where spans go and which log/metric providers exist.

`TracingTarget` is what IstioMesh receives instead of a collector address string: it
carries the OTLP endpoint as Outputs of whatever produced it (the region's `JaegerStack`
on the hub, the hub's stack outputs on a spoke), so the dependency is visible to Pulumi and
the address is written in exactly one place. `extension_providers` turns it into
MeshConfig `extensionProviders`; the Telemetry API (observability area) selects them by
the provider names defined here. Access logs go through the Telemetry API only (an
`envoyFileAccessLog` provider), never `meshConfig.accessLogFile`: the Telemetry API can
override it per namespace, and two mechanisms would log every request twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import pulumi

TRACING_PROVIDER: Final = "jaeger-otlp"
"""MeshConfig extension provider that exports spans over OTLP/gRPC to Jaeger."""

ACCESS_LOG_PROVIDER: Final = "envoy-json"
"""MeshConfig extension provider writing Envoy access logs to stdout as JSON. Istio's
built-in `envoy` provider writes TEXT; an `envoyFileAccessLog` provider with `labels: {}`
keeps Istio's default JSON fields, as the foundation's `accessLogEncoding: JSON` did."""

METRICS_PROVIDER: Final = "prometheus"
"""Istio's built-in metrics provider; metric overrides are attached to it."""

OTLP_GRPC_PORT: Final = 4317
"""OTLP/gRPC's standard port."""
OTLP_HTTP_PORT: Final = 4318
"""OTLP/HTTP's standard port."""


@dataclass(frozen=True)
class TracingTarget:
    """Where the mesh's proxies send spans: an OTLP/gRPC service, as Outputs."""

    service: pulumi.Output[str]
    """Fully qualified Service host of the collector (`<svc>.<ns>.svc.cluster.local`)."""
    port: pulumi.Output[int]
    """OTLP/gRPC port of that Service."""


def extension_providers(tracing_service: str | None, tracing_port: int) -> list[dict[str, Any]]:
    """MeshConfig `extensionProviders`: the JSON access log and, if given, the OTLP tracer.

    Without `http`, Istio's `opentelemetry` provider exports OTLP over gRPC.
    """
    providers: list[dict[str, Any]] = [
        {
            "name": ACCESS_LOG_PROVIDER,
            "envoyFileAccessLog": {"path": "/dev/stdout", "logFormat": {"labels": {}}},
        }
    ]
    if tracing_service:
        providers.insert(
            0,
            {
                "name": TRACING_PROVIDER,
                "opentelemetry": {"service": tracing_service, "port": tracing_port},
            },
        )
    return providers
