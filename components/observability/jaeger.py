"""JaegerStack: Jaeger v2 (the `jaeger` chart 4.x) receiving the mesh's spans.

Jaeger v2 is an OpenTelemetry Collector distribution configured by one YAML file; the
chart's `userconfig` value becomes that file (ConfigMap `user-config`, passed with
`--config`). The v1 world (`allInOne`/`collector`/`query` values, `SPAN_STORAGE_TYPE`
and `BADGER_*` environment variables, the `jaegertracing/all-in-one` image) does not exist
in chart 4.x and is not used.

Storage: Badger on a PersistentVolumeClaim by default. Chart 4.11.1 has no persistence
values, so this component creates the claim and mounts it through the chart's
`jaeger.extraVolumes`/`jaeger.extraVolumeMounts`; the chart's Deployment uses the
`Recreate` strategy, so the old pod releases the ReadWriteOnce volume before the new one
starts. Elasticsearch/OpenSearch are the external options, and only they may run more
than one replica.

The in-cluster endpoints are derived from the chart's own naming helper
(`jaeger.fullname`, mirrored by `jaeger_fullname`): the chart's single Service is named
after it and exposes OTLP 4317/4318 and the query API 16686 (HTTP) / 16685 (gRPC).

Ordering: Jaeger's pods run in the mesh (injected), so its chart must install after
istiod, or a first `pulumi up` races the injection webhook and starts Jaeger without a
sidecar. istiod in turn needs Jaeger's OTLP address for its tracing provider. The address
depends only on settings (namespace and release name), so `JaegerStack.tracing_target_for`
computes it before the stack exists, with the same functions the stack uses for its own
outputs: RegionMesh hands that target to IstioMesh, then creates JaegerStack with the
mesh, and a test holds the two equal.
"""

from __future__ import annotations

from typing import Any, Final, cast

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apiextensions import CustomResource

from components.helm import install_chart
from components.istio.component import IstioMesh
from components.istio.tracing import OTLP_GRPC_PORT, OTLP_HTTP_PORT, TracingTarget
from components.kube import namespace
from components.naming import service_fqdn
from components.observability.jaeger_access import POLICY_NAME, jaeger_access_spec
from components.observability.jaeger_values import (
    QUERY_GRPC_PORT,
    QUERY_HTTP_PORT,
    RELEASE,
    badger_claim_name,
    badger_claim_spec,
    jaeger_fullname,
    jaeger_values,
    pod_labels,
)
from components.observability.settings import JaegerSettings
from components.versions import JAEGER

TOKEN: Final = "meshstack:observability:JaegerStack"


class JaegerStack(pulumi.ComponentResource):
    """Jaeger v2 in the observability namespace, receiving OTLP from every proxy.

    Children: the observability namespace (retained on delete, sidecar injection on so
    spokes reach the collector over mTLS through the east-west gateway), the Badger
    PersistentVolumeClaim (Badger storage only), the jaeger chart, the AuthorizationPolicy
    `jaeger-allow-callers` (`jaeger_access`: OTLP from any mesh identity, the query API
    from Kiali, the query readers and the Ingress controller only), and with an Ingress
    the PeerAuthentication letting the controller's plaintext reach 16686. Secure defaults:
    one replica unless the store is external, persistent storage, non-root read-only
    container without an API token, requests and limits, no Ingress unless a host is set.
    """

    namespace: pulumi.Output[str]
    """The observability namespace Jaeger (and Kiali) run in."""
    otlp_grpc_host: pulumi.Output[str]
    """Fully qualified host of the OTLP receiver."""
    otlp_grpc_port: pulumi.Output[int]
    """OTLP/gRPC port (4317)."""
    otlp_grpc_endpoint: pulumi.Output[str]
    """`host:port` of the OTLP/gRPC receiver."""
    otlp_http_endpoint: pulumi.Output[str]
    """URL of the OTLP/HTTP receiver (4318)."""
    query_http_url: pulumi.Output[str]
    """In-cluster URL of the query UI / HTTP API (16686)."""
    query_grpc_url: pulumi.Output[str]
    """In-cluster URL of the gRPC query API (16685), what Kiali reads traces from."""

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        jaeger: JaegerSettings,
        *,
        namespace_name: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        ns = namespace(f"{name}-ns", namespace_name, mesh.injection_labels, parent=self)
        # After istiod: the pods must be injected (module docstring).
        depends_on: list[pulumi.Resource] = [mesh.control_plane]
        if jaeger.storage.type == "badger":
            depends_on.append(
                k8s.core.v1.PersistentVolumeClaim(
                    f"{name}-badger",
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=badger_claim_name(), namespace=ns.metadata.name
                    ),
                    spec=cast(Any, badger_claim_spec(jaeger)),
                    # Spans outlive a `pulumi destroy` of the chart by mistake.
                    opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
                )
            )
        self.chart: pulumi.Resource = install_chart(
            f"{name}-chart",
            JAEGER,
            release=RELEASE,
            namespace=ns.metadata.name,
            values=jaeger_values(jaeger),
            parent=self,
            source=mesh.chart_source,
            depends_on=depends_on,
        )
        """The jaeger chart."""

        # The query API has no login: only Kiali, the query readers and the Ingress
        # controller reach it; OTLP stays open to every mesh identity (jaeger_access.py).
        CustomResource(
            f"{name}-access",
            api_version="security.istio.io/v1",
            kind="AuthorizationPolicy",
            metadata={"name": POLICY_NAME, "namespace": ns.metadata.name},
            spec=jaeger_access_spec(jaeger, namespace_name=namespace_name),
            opts=mesh.custom_resource_options(self),
        )
        if jaeger.ingress_host:
            mesh.admit_ingress_controller(
                f"{name}-ingress-mtls",
                parent=self,
                namespace=ns.metadata.name,
                name=f"{RELEASE}-ingress",
                pod_labels=pod_labels(),
                port=QUERY_HTTP_PORT,
            )

        fullname = jaeger_fullname(RELEASE)
        self.namespace = ns.metadata.name.apply(str)
        self.otlp_grpc_host = self.namespace.apply(lambda n: service_fqdn(fullname, n))
        self.otlp_grpc_port = pulumi.Output.from_input(OTLP_GRPC_PORT)
        self.otlp_grpc_endpoint = self.otlp_grpc_host.apply(lambda h: f"{h}:{OTLP_GRPC_PORT}")
        self.otlp_http_endpoint = self.otlp_grpc_host.apply(
            lambda h: f"http://{h}:{OTLP_HTTP_PORT}"
        )
        self.query_http_url = self.otlp_grpc_host.apply(lambda h: f"http://{h}:{QUERY_HTTP_PORT}")
        self.query_grpc_url = self.otlp_grpc_host.apply(lambda h: f"http://{h}:{QUERY_GRPC_PORT}")
        self.register_outputs(
            {
                "namespace": self.namespace,
                "otlp_grpc_host": self.otlp_grpc_host,
                "otlp_grpc_port": self.otlp_grpc_port,
                "otlp_grpc_endpoint": self.otlp_grpc_endpoint,
                "otlp_http_endpoint": self.otlp_http_endpoint,
                "query_http_url": self.query_http_url,
                "query_grpc_url": self.query_grpc_url,
            }
        )

    @property
    def tracing_target(self) -> TracingTarget:
        """The OTLP/gRPC target of this stack, as its outputs."""
        return TracingTarget(service=self.otlp_grpc_host, port=self.otlp_grpc_port)

    @staticmethod
    def tracing_target_for(namespace_name: str) -> TracingTarget:
        """The OTLP/gRPC target a JaegerStack in `namespace_name` will have, before it exists.

        For IstioMesh's tracing provider, which istiod needs before Jaeger may install.
        """
        host = service_fqdn(jaeger_fullname(RELEASE), namespace_name)
        return TracingTarget(
            service=pulumi.Output.from_input(host),
            port=pulumi.Output.from_input(OTLP_GRPC_PORT),
        )
