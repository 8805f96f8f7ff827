"""How the mesh reports traces and access logs: the typed tracing target and pure builders.

`TracingTarget` is what IstioMesh receives instead of a collector address string: it
carries the OTLP endpoint as Outputs of whatever produced it (the region's `JaegerStack`
on the hub, the hub's stack outputs on a spoke), so the dependency is visible to Pulumi and
the address is written in exactly one place.

The builders turn settings into MeshConfig `extensionProviders` and `telemetry.istio.io/v1`
Telemetry specs. Access logs go through the Telemetry API only (an `envoyFileAccessLog`
provider selected by the mesh-wide Telemetry), never `meshConfig.accessLogFile`: the
Telemetry API can override it per namespace, and two mechanisms would log every request
twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import pulumi

from components.observability.settings import NamespaceTelemetry, TelemetrySettings

TRACING_PROVIDER: Final = "jaeger-otlp"
"""MeshConfig extension provider that exports spans over OTLP/gRPC to Jaeger."""

ACCESS_LOG_PROVIDER: Final = "envoy-json"
"""MeshConfig extension provider writing Envoy access logs to stdout as JSON. Istio's
built-in `envoy` provider writes TEXT; an `envoyFileAccessLog` provider with `labels: {}`
keeps Istio's default JSON fields, as the foundation's `accessLogEncoding: JSON` did."""

METRICS_PROVIDER: Final = "prometheus"
"""Istio's built-in metrics provider; metric overrides are attached to it."""

OTLP_GRPC_PORT: Final = 4317
OTLP_HTTP_PORT: Final = 4318
QUERY_HTTP_PORT: Final = 16686
QUERY_GRPC_PORT: Final = 16685

MESH_TELEMETRY_NAME: Final = "mesh-default"
"""The mesh-wide Telemetry in the root namespace (Istio's documented name)."""

NAMESPACE_TELEMETRY_NAME: Final = "namespace-default"
"""A namespace-wide Telemetry: no selector, so it applies to the whole namespace."""


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


def _metric_overrides(settings: TelemetrySettings) -> list[dict[str, Any]]:
    overrides = []
    for override in settings.metric_overrides:
        tag_overrides: dict[str, Any] = {t: {"operation": "REMOVE"} for t in override.remove_tags}
        tag_overrides |= {
            tag: {"operation": "UPSERT", "value": expression}
            for tag, expression in override.add_tags.items()
        }
        overrides.append(
            {
                "match": {"metric": override.metric, "mode": override.mode},
                "tagOverrides": tag_overrides,
            }
        )
    return overrides


def mesh_telemetry_spec(
    settings: TelemetrySettings, *, tracing: bool, access_logging: bool
) -> dict[str, Any]:
    """Spec of the mesh-wide Telemetry: sampling, access logs and metric tag overrides."""
    spec: dict[str, Any] = {}
    if tracing:
        spec["tracing"] = [
            {
                "providers": [{"name": TRACING_PROVIDER}],
                "randomSamplingPercentage": settings.sampling_percentage,
            }
        ]
    spec["accessLogging"] = [
        {"providers": [{"name": ACCESS_LOG_PROVIDER}], "disabled": not access_logging}
    ]
    overrides = _metric_overrides(settings)
    if overrides:
        spec["metrics"] = [{"providers": [{"name": METRICS_PROVIDER}], "overrides": overrides}]
    return spec


def namespace_telemetry_spec(override: NamespaceTelemetry, *, tracing: bool) -> dict[str, Any]:
    """Spec of a namespace-wide Telemetry that overrides sampling and/or access logging."""
    spec: dict[str, Any] = {}
    if tracing and override.sampling_percentage is not None:
        spec["tracing"] = [
            {
                "providers": [{"name": TRACING_PROVIDER}],
                "randomSamplingPercentage": override.sampling_percentage,
            }
        ]
    if override.access_logging is not None:
        spec["accessLogging"] = [
            {"providers": [{"name": ACCESS_LOG_PROVIDER}], "disabled": not override.access_logging}
        ]
    return spec


def quiet_namespace_spec() -> dict[str, Any]:
    """Telemetry of the observability namespace: its proxies report no spans.

    Jaeger's own sidecar would otherwise trace every span batch it receives and export
    that span to Jaeger again: a self-feeding stream of noise at 100% sampling.
    """
    return {"tracing": [{"providers": [{"name": TRACING_PROVIDER}], "disableSpanReporting": True}]}
