"""The hub/spoke link: the hub's `observabilityHub` output and a spoke's HubReference.

One region is the observability hub (`observability.role: hub`): it runs JaegerStack and
KialiStack and exports their endpoints as the stack output `observabilityHub`. The other
regions are spokes: `HubReference` reads that output through a `pulumi.StackReference`
to the hub stack (named by its stack name in settings, of the run's own organization and
project: `RunContext.stack_reference_name`), so a spoke's proxies send spans to the hub's
collector without anyone pasting a URL. Spokes run no Jaeger of their own: a request that
crosses regions then lands as one trace in one store, instead of halves in two.
"""

from __future__ import annotations

from typing import Any, Final

import pulumi

from components.istio.tracing import TracingTarget
from components.observability.jaeger import JaegerStack
from components.observability.settings import ObservabilitySettings
from components.run_context import RunContext

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
"""Keys of the `observabilityHub` output (`hub_outputs`); a spoke reads the collector host
and port (`HubReference`)."""


def hub_outputs(jaeger: JaegerStack) -> pulumi.Output[dict[str, Any]]:
    """The hub's `observabilityHub` stack output, built from the JaegerStack's outputs.

    Each value is named by its key, so reordering cannot hand a spoke the wrong endpoint.
    """
    return pulumi.Output.all(
        otlpGrpcHost=jaeger.otlp_grpc_host,
        otlpGrpcPort=jaeger.otlp_grpc_port,
        otlpGrpcEndpoint=jaeger.otlp_grpc_endpoint,
        otlpHttpEndpoint=jaeger.otlp_http_endpoint,
        queryHttpUrl=jaeger.query_http_url,
        queryGrpcUrl=jaeger.query_grpc_url,
        namespace=jaeger.namespace,
    )


class HubReference(pulumi.ComponentResource):
    """A spoke's view of the observability hub, read from the hub stack's outputs.

    Child: the `pulumi.StackReference` to `settings.hub_stack` in the organization and project
    of `context` (the running stack's). Run `pulumi up` on the hub first:
    until the hub has exported `observabilityHub`, a spoke's update fails with the
    missing output named.

    Unlike the other components it takes no mesh: it is created before the IstioMesh,
    because istiod's tracing provider needs the hub's collector address (`tracing_target`).
    """

    otlp_grpc_host: pulumi.Output[str]
    """The hub collector's fully qualified Service host."""
    otlp_grpc_port: pulumi.Output[int]
    """The hub collector's OTLP/gRPC port."""

    def __init__(
        self,
        name: str,
        settings: ObservabilitySettings,
        *,
        context: RunContext,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(HUB_REFERENCE_TOKEN, name, None, opts)
        reference = pulumi.StackReference(
            f"{name}-stack",
            stack_name=context.stack_reference_name(settings.hub_stack),
            opts=pulumi.ResourceOptions(parent=self),
        )
        hub = reference.require_output(HUB_OUTPUT)
        self.otlp_grpc_host = hub.apply(lambda h: str(h["otlpGrpcHost"]))
        self.otlp_grpc_port = hub.apply(lambda h: int(h["otlpGrpcPort"]))
        self.register_outputs(
            {"otlp_grpc_host": self.otlp_grpc_host, "otlp_grpc_port": self.otlp_grpc_port}
        )

    @property
    def tracing_target(self) -> TracingTarget:
        """The hub's OTLP/gRPC target for this region's IstioMesh."""
        return TracingTarget(service=self.otlp_grpc_host, port=self.otlp_grpc_port)
