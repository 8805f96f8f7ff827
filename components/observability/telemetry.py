"""MeshTelemetry: the mesh's `telemetry.istio.io/v1` Telemetry objects and their builders.

The mesh-wide `mesh-default` in the root namespace (sampling, access logs, metric tag
overrides), the per-namespace overrides from settings, and a quiet Telemetry for the
observability namespace (its proxies report no spans, or Jaeger would trace its own
ingestion). The providers they select are defined in istiod's meshConfig
(`components.istio.tracing`).
"""

from __future__ import annotations

from typing import Any, Final

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.istio.component import IstioMesh
from components.istio.tracing import ACCESS_LOG_PROVIDER, METRICS_PROVIDER, TRACING_PROVIDER
from components.observability.settings import NamespaceTelemetry, TelemetrySettings

TOKEN: Final = "meshstack:observability:MeshTelemetry"

TELEMETRY_API: Final = "telemetry.istio.io/v1"

MESH_TELEMETRY_NAME: Final = "mesh-default"
"""The mesh-wide Telemetry in the root namespace (Istio's documented name)."""

NAMESPACE_TELEMETRY_NAME: Final = "namespace-default"
"""A namespace-wide Telemetry: no selector, so it applies to the whole namespace."""


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


class MeshTelemetry(pulumi.ComponentResource):
    """The mesh's Telemetry objects: mesh-wide defaults and per-namespace overrides.

    Children: `mesh-default` in the root namespace, one `namespace-default` per override
    in settings, and (on the hub) a span-quiet one in the observability namespace. All
    wait for istiod (the Telemetry CRD and its validation webhook).
    """

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        telemetry: TelemetrySettings,
        *,
        access_logging: bool,
        quiet_namespace: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        has_tracing = mesh.tracing_target is not None
        self._telemetry(
            f"{name}-mesh-default",
            MESH_TELEMETRY_NAME,
            mesh.namespace,
            mesh_telemetry_spec(telemetry, tracing=has_tracing, access_logging=access_logging),
            mesh,
        )
        for override in telemetry.namespaces:
            self._telemetry(
                f"{name}-{override.namespace}",
                NAMESPACE_TELEMETRY_NAME,
                mesh.workload_namespace(override.namespace).metadata.name,
                namespace_telemetry_spec(override, tracing=has_tracing),
                mesh,
            )
        if quiet_namespace is not None and has_tracing:
            self._telemetry(
                f"{name}-observability",
                NAMESPACE_TELEMETRY_NAME,
                quiet_namespace,
                quiet_namespace_spec(),
                mesh,
            )
        # No outputs: nothing reads one (the sampling rate is a setting, the root namespace
        # the mesh's).
        self.register_outputs({})

    def _telemetry(
        self,
        resource_name: str,
        name: str,
        namespace: pulumi.Input[str],
        spec: dict[str, Any],
        mesh: IstioMesh,
    ) -> None:
        CustomResource(
            resource_name,
            api_version=TELEMETRY_API,
            kind="Telemetry",
            metadata={"name": name, "namespace": namespace},
            spec=spec,
            opts=mesh.custom_resource_options(self),
        )
