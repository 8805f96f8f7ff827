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

from components.helm import install_chart
from components.istio import IstioMesh
from components.istio_values import injection_labels
from components.kube import namespace
from components.naming import service_fqdn
from components.observability_settings import JaegerSettings
from components.settings import StackSettings
from components.tracing import (
    OTLP_GRPC_PORT,
    OTLP_HTTP_PORT,
    QUERY_GRPC_PORT,
    QUERY_HTTP_PORT,
    TracingTarget,
)
from components.versions import JAEGER

TOKEN: Final = "meshstack:observability:JaegerStack"

RELEASE: Final = "jaeger"
"""Helm release name; the Service name follows from it (`jaeger_fullname`)."""

CHART_NAME: Final = "jaeger"
"""`.Chart.Name` of the jaeger chart, used by its naming helper."""

STORE: Final = "primary"
"""Name of the span store in `extensions.jaeger_storage.backends`."""

BADGER_MOUNT: Final = "/badger"
BADGER_VOLUME: Final = "badger-data"
HEALTH_PORT: Final = 13133
"""healthcheckv2 port: the chart's liveness/readiness probes call `/status` here."""
METRICS_PORT: Final = 8888
"""Jaeger's own Prometheus metrics; the chart annotates the pod for scraping on it."""
CREDENTIAL_ENV: Final = ("ES_USERNAME", "ES_PASSWORD")


def jaeger_fullname(release: str, name_override: str = "", fullname_override: str = "") -> str:
    """The chart's `jaeger.fullname` helper: the name of its Service and Deployment.

    `fullnameOverride` wins; else the release name if it contains the chart name (or
    `nameOverride`); else `<release>-<name>`; truncated to 63 characters, without a
    trailing '-'.
    """
    if fullname_override:
        return fullname_override[:63].rstrip("-")
    name = name_override or CHART_NAME
    full = release if name in release else f"{release}-{name}"
    return full[:63].rstrip("-")


def _storage_backend(settings: JaegerSettings) -> dict[str, Any]:
    storage = settings.storage
    if storage.type == "badger":
        return {
            "badger": {
                "directories": {
                    "keys": f"{BADGER_MOUNT}/keys",
                    "values": f"{BADGER_MOUNT}/values",
                },
                "ephemeral": False,
                "ttl": {"spans": storage.retention},
            }
        }
    if storage.type == "memory":
        return {"memory": {"max_traces": storage.max_traces}}
    backend: dict[str, Any] = {
        "server_urls": list(storage.server_urls),
        "indices": {"index_prefix": storage.index_prefix},
    }
    if storage.credentials_secret:
        # Expanded by the collector from the pod environment, filled from the Secret.
        user, password = CREDENTIAL_ENV
        backend["auth"] = {
            "basic": {"username": f"${{env:{user}}}", "password": f"${{env:{password}}}"}
        }
    return {storage.type: backend}


def user_config(settings: JaegerSettings) -> dict[str, Any]:
    """Jaeger v2's collector configuration (`userconfig`): OTLP in, one store, query out.

    Every listener binds 0.0.0.0 explicitly: recent collector versions default to
    localhost, which no Service can reach.
    """
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {
                    "level": "detailed",
                    "readers": [
                        {
                            "pull": {
                                "exporter": {
                                    "prometheus": {"host": "0.0.0.0", "port": METRICS_PORT}
                                }
                            }
                        }
                    ],
                },
            },
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"0.0.0.0:{HEALTH_PORT}"}},
            "jaeger_query": {
                "storage": {"traces": STORE},
                "http": {"endpoint": f"0.0.0.0:{QUERY_HTTP_PORT}"},
                "grpc": {"endpoint": f"0.0.0.0:{QUERY_GRPC_PORT}"},
            },
            "jaeger_storage": {"backends": {STORE: _storage_backend(settings)}},
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC_PORT}"},
                    "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP_PORT}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": STORE}},
    }


def pod_labels(release: str = RELEASE) -> dict[str, str]:
    """Selector labels of the chart's pod (`jaeger.selectorLabels`)."""
    return {"app.kubernetes.io/name": CHART_NAME, "app.kubernetes.io/instance": release}


def badger_claim_name(release: str = RELEASE) -> str:
    """Name of the PersistentVolumeClaim holding Badger's files."""
    return f"{jaeger_fullname(release)}-badger"


def jaeger_values(settings: JaegerSettings, release: str = RELEASE) -> dict[str, Any]:
    """Values of the jaeger chart 4.x for these settings."""
    jaeger: dict[str, Any] = {
        "replicas": settings.replicas,
        "resources": settings.resources.as_kubernetes(),
        # Jaeger never calls the Kubernetes API; its sidecar has its own projected token.
        "serviceAccount": {"automountServiceAccountToken": False},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    storage = settings.storage
    if storage.type == "badger":
        jaeger["extraVolumes"] = [
            {
                "name": BADGER_VOLUME,
                "persistentVolumeClaim": {"claimName": badger_claim_name(release)},
            }
        ]
        jaeger["extraVolumeMounts"] = [{"name": BADGER_VOLUME, "mountPath": BADGER_MOUNT}]
    if storage.external and storage.credentials_secret:
        jaeger["extraEnv"] = [
            {
                "name": env,
                "valueFrom": {"secretKeyRef": {"name": storage.credentials_secret, "key": key}},
            }
            for env, key in zip(CREDENTIAL_ENV, ("username", "password"), strict=True)
        ]
    if settings.ingress_host:
        jaeger["ingress"] = {
            "enabled": True,
            "ingressClassName": settings.ingress_class,
            "hosts": [settings.ingress_host],
            "pathType": "Prefix",
        }
    return {"userconfig": user_config(settings), "jaeger": jaeger}


def badger_claim_spec(settings: JaegerSettings) -> dict[str, Any]:
    """Spec of the Badger volume claim: one writer, ReadWriteOnce."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": settings.storage.size}},
    }
    if settings.storage.storage_class:
        spec["storageClassName"] = settings.storage.storage_class
    return spec


class JaegerStack(pulumi.ComponentResource):
    """Jaeger v2 in the observability namespace, receiving OTLP from every proxy.

    Children: the observability namespace (retained on delete, sidecar injection on so
    spokes reach the collector over mTLS through the east-west gateway), the Badger
    PersistentVolumeClaim (Badger storage only), and the jaeger chart. Secure defaults:
    one replica unless the store is external, persistent storage, non-root read-only
    container without an API token, requests and limits, no Ingress unless a host is set.
    """

    namespace: pulumi.Output[str]
    """The observability namespace Jaeger (and Kiali) run in."""
    service_name: pulumi.Output[str]
    """Name of the chart's Service (`jaeger.fullname`)."""
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
        settings: StackSettings,
        mesh: IstioMesh,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        jaeger = settings.observability.jaeger
        ns = namespace(
            f"{name}-ns",
            settings.observability_namespace,
            injection_labels(settings.istio_revision),
            parent=self,
        )
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
            source=settings.chart_source,
            depends_on=depends_on,
        )
        """The jaeger chart."""

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
        self.service_name = pulumi.Output.from_input(fullname)
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
                "service_name": self.service_name,
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
    def tracing_target_for(settings: StackSettings) -> TracingTarget:
        """The OTLP/gRPC target the JaegerStack of `settings` will have, before it exists.

        For IstioMesh's tracing provider, which istiod needs before Jaeger may install.
        """
        host = service_fqdn(jaeger_fullname(RELEASE), settings.observability_namespace)
        return TracingTarget(
            service=pulumi.Output.from_input(host),
            port=pulumi.Output.from_input(OTLP_GRPC_PORT),
        )
