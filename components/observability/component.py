"""Observability across regions: mesh Telemetry, and the hub/spoke link.

One region is the observability hub (`observability.role: hub`): it runs JaegerStack and
KialiStack and exports their endpoints as the stack output `observabilityHub`. The other
regions are spokes: `HubReference` reads that output through a `pulumi.StackReference`
to the hub stack (named in settings), so a spoke's proxies send spans to the hub's
collector without anyone pasting a URL. Spokes run no Jaeger of their own: a request that
crosses regions then lands as one trace in one store, instead of halves in two.

`MeshTelemetry` holds the `telemetry.istio.io/v1` Telemetry objects: the mesh-wide
`mesh-default` in the root namespace (sampling, access logs, metric tag overrides), the
per-namespace overrides from settings, and a quiet Telemetry for the observability
namespace (its proxies report no spans, or Jaeger would trace its own ingestion).
"""

from __future__ import annotations

from typing import Any, Final

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.observability.component import tracing
from components.istio.component import IstioMesh
from components.observability.jaeger import JaegerStack
from components.observability.settings import ObservabilitySettings
from components.settings import StackSettings

TELEMETRY_TOKEN: Final = "meshstack:observability:MeshTelemetry"
HUB_REFERENCE_TOKEN: Final = "meshstack:observability:HubReference"

HUB_OUTPUT: Final = "observabilityHub"
"""Stack output of the hub that spokes read (a map, keys below)."""

HUB_KEYS: Final = (
    "otlpGrpcHost",
    "otlpGrpcPort",
    "otlpGrpcEndpoint",
    "otlpHttpEndpoint",
    "queryHttpUrl",
    "queryGrpcUrl",
    "namespace",
)
"""Keys of the `observabilityHub` output; a spoke reads the collector host and port and the
gRPC query URL (`HubReference`)."""

TELEMETRY_API: Final = "telemetry.istio.io/v1"


def hub_outputs(jaeger: JaegerStack) -> pulumi.Output[dict[str, Any]]:
    """The hub's `observabilityHub` stack output, built from the JaegerStack's outputs."""
    return pulumi.Output.all(
        jaeger.otlp_grpc_host,
        jaeger.otlp_grpc_port,
        jaeger.otlp_grpc_endpoint,
        jaeger.otlp_http_endpoint,
        jaeger.query_http_url,
        jaeger.query_grpc_url,
        jaeger.namespace,
    ).apply(lambda values: dict(zip(HUB_KEYS, values, strict=True)))


class HubReference(pulumi.ComponentResource):
    """A spoke's view of the observability hub, read from the hub stack's outputs.

    Child: the `pulumi.StackReference` to `settings.hub_stack`. Run `pulumi up` on the hub first:
    until the hub has exported `observabilityHub`, a spoke's update fails with the
    missing output named.
    """

    stack: pulumi.Output[str]
    """Fully qualified name of the hub stack."""
    otlp_grpc_host: pulumi.Output[str]
    """The hub collector's fully qualified Service host."""
    otlp_grpc_port: pulumi.Output[int]
    """The hub collector's OTLP/gRPC port."""
    query_grpc_url: pulumi.Output[str]
    """The hub's Jaeger gRPC query URL."""

    def __init__(
        self,
        name: str,
        settings: ObservabilitySettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(HUB_REFERENCE_TOKEN, name, None, opts)
        hub_stack = settings.hub_stack
        reference = pulumi.StackReference(
            f"{name}-stack", stack_name=hub_stack, opts=pulumi.ResourceOptions(parent=self)
        )
        hub = reference.require_output(HUB_OUTPUT)
        self.stack = pulumi.Output.from_input(hub_stack)
        self.otlp_grpc_host = hub.apply(lambda h: str(h["otlpGrpcHost"]))
        self.otlp_grpc_port = hub.apply(lambda h: int(h["otlpGrpcPort"]))
        self.query_grpc_url = hub.apply(lambda h: str(h["queryGrpcUrl"]))
        self.register_outputs(
            {
                "stack": self.stack,
                "otlp_grpc_host": self.otlp_grpc_host,
                "otlp_grpc_port": self.otlp_grpc_port,
                "query_grpc_url": self.query_grpc_url,
            }
        )

    @property
    def tracing_target(self) -> tracing.TracingTarget:
        """The hub's OTLP/gRPC target for this region's IstioMesh."""
        return tracing.TracingTarget(service=self.otlp_grpc_host, port=self.otlp_grpc_port)


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
        super().__init__(TELEMETRY_TOKEN, name, None, opts)
        telemetry = settings.observability.telemetry
        has_tracing = mesh.tracing_target is not None
        self._telemetry(
            f"{name}-mesh-default",
            tracing.MESH_TELEMETRY_NAME,
            mesh.namespace,
            tracing.mesh_telemetry_spec(
                telemetry, tracing=has_tracing, access_logging=settings.access_logging
            ),
            mesh,
        )
        for override in telemetry.namespaces:
            self._telemetry(
                f"{name}-{override.namespace}",
                tracing.NAMESPACE_TELEMETRY_NAME,
                mesh.workload_namespace(override.namespace).metadata.name,
                tracing.namespace_telemetry_spec(override, tracing=has_tracing),
                mesh,
            )
        if quiet_namespace is not None and has_tracing:
            self._telemetry(
                f"{name}-observability",
                tracing.NAMESPACE_TELEMETRY_NAME,
                quiet_namespace,
                tracing.quiet_namespace_spec(),
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
