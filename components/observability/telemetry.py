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
from components.settings import StackSettings

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

    root_namespace: pulumi.Output[str]
    """Namespace of the mesh-wide Telemetry (Istio's root namespace)."""
    sampling_percentage: pulumi.Output[float]
    """Mesh-wide trace sampling percentage."""

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        mesh: IstioMesh,
        *,
        quiet_namespace: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        telemetry = settings.observability.telemetry
        has_tracing = mesh.tracing_target is not None
        self._telemetry(
            f"{name}-mesh-default",
            MESH_TELEMETRY_NAME,
            mesh.namespace,
            mesh_telemetry_spec(
                telemetry, tracing=has_tracing, access_logging=settings.access_logging
            ),
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
        self.root_namespace = mesh.namespace
        self.sampling_percentage = pulumi.Output.from_input(telemetry.sampling_percentage)
        self.register_outputs(
            {"root_namespace": self.root_namespace, "sampling_percentage": self.sampling_percentage}
        )

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
