"""Pure builders of the Istio Helm values and namespace labels.

Plain functions from the mesh's settings slice (`IstioSettings`) to dicts, unit-tested
without the Pulumi engine. The IstioMesh component only wires their results into Helm
charts and namespaces.

istiod values are flat since Istio 1.24 (no `pilot:` block); the gateway chart validates
its values against `values.schema.json`. The tests check every key set here against the
charts' own defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from components.constants import (
    EASTWEST_GATEWAY_NAME,
    EGRESS_GATEWAY_NAME,
    EGRESS_NAMESPACE,
    INGRESS_GATEWAY_NAME,
    INGRESS_NAMESPACE,
    ISTIO_NAMESPACE,
    PROXY_RESOURCES,
)
from components.istio.settings import IstioSettings
from components.istio.tracing import OTLP_GRPC_PORT, extension_providers

ISTIOD_RESOURCES: Final = {
    "requests": {"cpu": "500m", "memory": "2Gi"},
    "limits": {"cpu": "2", "memory": "4Gi"},
}
"""istiod: chart requests (500m/2Gi) plus limits, so a config storm cannot starve a node."""

GATEWAY_RESOURCES: Final = {
    "requests": {"cpu": "200m", "memory": "256Mi"},
    "limits": {"cpu": "2", "memory": "1Gi"},
}
"""Gateways: double the chart's 100m/128Mi request, sized for the region's edge traffic."""

DRAIN_FRIENDLY_PDB: Final = {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"}
"""One pod at a time may go, and crash-looping pods never block a node drain
(istio/istio#12602, #53909: `minAvailable: 1` with one replica blocks drains)."""


@dataclass(frozen=True)
class GatewaySpec:
    """Which gateway to install and how it is reached."""

    key: str
    """Short name used in Pulumi resource names (`<mesh>-<key>-gateway`)."""
    release: str
    namespace: str
    selector_label: str
    service_type: str
    network_gateway: bool = False
    """An east-west gateway: it carries the cluster's network and exposes port 15443."""


INGRESS: Final = GatewaySpec(
    "ingress", INGRESS_GATEWAY_NAME, INGRESS_NAMESPACE, "ingressgateway", "LoadBalancer"
)
EGRESS: Final = GatewaySpec(
    "egress", EGRESS_GATEWAY_NAME, EGRESS_NAMESPACE, "egressgateway", "ClusterIP"
)
EASTWEST: Final = GatewaySpec(
    "eastwest",
    EASTWEST_GATEWAY_NAME,
    ISTIO_NAMESPACE,
    "eastwestgateway",
    "LoadBalancer",
    network_gateway=True,
)
"""Istio's multi-network recipe installs the east-west gateway beside istiod."""

CROSS_NETWORK_GATEWAY: Final = "cross-network-gateway"
"""Name of the Gateway that exposes this cluster's services to the other networks."""


def ingress_controller_exception_spec(pod_labels: dict[str, str], port: int) -> dict[str, Any]:
    """PeerAuthentication spec: STRICT, except plaintext on `port` of the selected pods.

    Ingress controllers such as ingress-nginx run outside the mesh and send plaintext;
    with the mesh-wide STRICT policy the pod's sidecar would reset those connections, and
    an Ingress to a meshed UI would answer 502. Only that one port of those pods opens.
    """
    return {
        "selector": {"matchLabels": dict(pod_labels)},
        "mtls": {"mode": "STRICT"},
        "portLevelMtls": {str(port): {"mode": "PERMISSIVE"}},
    }


def gateways(settings: IstioSettings) -> tuple[GatewaySpec, ...]:
    """The gateways this region installs (all after istiod, none after another)."""
    return (
        INGRESS,
        *((EGRESS,) if settings.egress_gateway else ()),
        *((EASTWEST,) if settings.east_west_gateway else ()),
    )


def cross_network_gateway_spec() -> dict[str, Any]:
    """Gateway of the east-west gateway: mTLS passthrough of every `*.local` service.

    AUTO_PASSTHROUGH routes on the SNI istiod's proxies set, so only mesh workloads of the
    other regions (mTLS with the shared root CA) get through; nothing terminates here.
    """
    return {
        "selector": gateway_selector(EASTWEST),
        "servers": [
            {
                "port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                "tls": {"mode": "AUTO_PASSTHROUGH"},
                "hosts": ["*.local"],
            }
        ],
    }


def gateway_selector(gateway: GatewaySpec) -> dict[str, str]:
    """Pod labels of a gateway, set explicitly so Gateway objects can select it."""
    return {"istio": gateway.selector_label}


def injection_labels(revision: str) -> dict[str, str]:
    """Namespace labels that turn sidecar injection on for the installed control plane.

    A revisioned control plane only injects namespaces labelled with its revision, and
    `istio-injection` would override that label, so exactly one of the two is set.
    """
    return {"istio.io/rev": revision} if revision else {"istio-injection": "enabled"}


def istio_namespace_labels(settings: IstioSettings) -> dict[str, str]:
    """Labels of the control-plane namespace: its network, for multi-network meshes."""
    return {"topology.istio.io/network": settings.network}


def base_values(settings: IstioSettings) -> dict[str, Any]:
    """Values of the `base` chart (CRDs, cluster roles, default-revision webhook)."""
    return {
        "global": {"istioNamespace": ISTIO_NAMESPACE},
        # Keep EnvoyFilter usable: the stable-channel admission policy rejects it, and
        # the rate limiter is built on EnvoyFilters.
        "experimental": {"stableValidationPolicy": False},
        "defaultRevision": settings.revision or "default",
        # The base chart renders the default-revision `istiod-default-validator` webhook
        # with `failurePolicy: Ignore` on every fresh render (Chart v4 never upgrades):
        # invalid Istio config would be admitted whenever istiod is unreachable. Its
        # template reads this value before falling back to Ignore.
        "base": {"validationFailurePolicy": "Fail"},
    }


def mesh_config(
    settings: IstioSettings, tracing_service: str | None = None, tracing_port: int = OTLP_GRPC_PORT
) -> dict[str, Any]:
    """`meshConfig` of istiod: extension providers and the extra Envoy stats the alerts need.

    Access logs are not configured here (`accessLogFile`) but through the Telemetry API,
    which selects the `extensionProviders` defined here (see `components.observability.telemetry`).
    """
    return {
        "defaultConfig": {
            # Apps must not start before their proxy, or their first calls fail.
            "holdApplicationUntilProxyStarts": True,
            "proxyStatsMatcher": {
                "inclusionRegexps": list(settings.proxy_stats_inclusion_regexps),
            },
        },
        "enablePrometheusMerge": True,
        "extensionProviders": extension_providers(tracing_service, tracing_port),
        "serviceSettings": [
            {
                "settings": {"clusterLocal": True},
                "hosts": list(settings.cluster_local_hosts),
            }
        ],
    }


def istiod_values(
    settings: IstioSettings, tracing_service: str | None = None, tracing_port: int = OTLP_GRPC_PORT
) -> dict[str, Any]:
    """Values of the `istiod` chart: multi-cluster identity, production sizing, meshConfig.

    `tracing_service`/`tracing_port`: the OTLP/gRPC collector spans go to, if any.
    """
    values: dict[str, Any] = {
        "autoscaleEnabled": True,
        "autoscaleMin": settings.istiod_replicas,
        "autoscaleMax": settings.istiod_max_replicas,
        # No `replicaCount`: with autoscaling the chart leaves `replicas` to the HPA and
        # never reads it (the full render's effective-values check found it unused).
        "resources": ISTIOD_RESOURCES,
        "pdb": DRAIN_FRIENDLY_PDB,
        # Pulumi's Chart v4 renders like `helm template` (never an upgrade), so without
        # this every `pulumi up` resets the webhook to Ignore after istiod flipped it to
        # Fail (istio/istio#59367).
        "base": {"validationFailurePolicy": "Fail"},
        "global": {
            "istioNamespace": ISTIO_NAMESPACE,
            "meshID": settings.mesh_id,
            "multiCluster": {"clusterName": settings.cluster_name},
            "network": settings.network,
            "logAsJson": True,
            "proxy": {"resources": PROXY_RESOURCES},
            "defaultPodDisruptionBudget": {"enabled": True},
        },
        "meshConfig": mesh_config(settings, tracing_service, tracing_port),
    }
    if settings.revision:
        values["revision"] = settings.revision
    return values


def gateway_values(settings: IstioSettings, gateway: GatewaySpec) -> dict[str, Any]:
    """Values of the `gateway` chart for the ingress, egress or east-west gateway."""
    labels = {**gateway_selector(gateway), "app": gateway.release}
    values: dict[str, Any] = {
        "labels": labels,
        "autoscaling": {
            "enabled": True,
            "minReplicas": settings.gateway_replicas,
            "maxReplicas": settings.gateway_max_replicas,
        },
        "podDisruptionBudget": DRAIN_FRIENDLY_PDB,
        "resources": GATEWAY_RESOURCES,
        "service": {"type": gateway.service_type},
    }
    if gateway.network_gateway:
        # The chart then exposes `networkGatewayPorts` (15443 and istiod's 15012/15017),
        # asks istiod for this network's view of the mesh, and labels the pods and the
        # Service `topology.istio.io/network` itself (gateway chart deployment.yaml and
        # service.yaml, `with .Values.networkGateway`): the same key in `labels` would be
        # rendered twice, which strict YAML tools reject.
        values["networkGateway"] = settings.network
        if settings.east_west_gateway_service_annotations:
            values["service"]["annotations"] = dict(settings.east_west_gateway_service_annotations)
    if settings.revision:
        values["revision"] = settings.revision
    return values
