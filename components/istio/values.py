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
from components.istio.settings import DEFAULT_TAG, IstioRevision, IstioSettings
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


JWKS_BLOCKED_CIDRS: Final = (
    "127.0.0.0/8",
    "::1/128",
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::/32",
    "100.100.100.200/32",
)
"""Ranges istiod never fetches a RequestAuthentication's `jwksUri` from.

istiod downloads every JWKS itself, so a `jwksUri` is a request made on the author's behalf.
Istio 1.30.4 checks the resolved address at dial time and refuses link-local and known cloud
metadata addresses by itself (`pilot/pkg/model/jwks_resolver.go` `jwksBlockedIP`), but not
loopback, where istiod's own debug and monitoring ports answer: this list adds loopback, and
names link-local and the metadata addresses 1.30.4 blocks (AWS's IPv6 `fd00:ec2::/32`,
Alibaba's 100.100.100.200) for the istiods without that built-in block: the 1.30.3 an
in-place upgrade starts from, and 1.31.0, whose resolver checks only this list. Private
ranges stay open: an in-cluster identity provider (a Keycloak Service) is a legitimate JWKS
host. Unset, `istioctl analyze` reports IST0175 on every stack with JWT services (found by
make e2e)."""


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


def injection_labels(selection: str) -> dict[str, str]:
    """Namespace labels that turn sidecar injection on: by the revision or tag `selection`,
    or, for an untagged namespace (`""`), by the default revision.

    `istio-injection` would override `istio.io/rev` (every webhook's `istio.io/rev`
    selector also requires `istio-injection` to be absent), so exactly one is set. Untagged
    namespaces keep `istio-injection: enabled`: the unrevisioned istiod and the `default`
    tag both inject it, so a stack moves to revisions without relabelling them.
    """
    return {"istio.io/rev": selection} if selection else {"istio-injection": "enabled"}


def namespace_injection_labels(settings: IstioSettings, namespace: str) -> dict[str, str]:
    """Injection labels of a workload namespace: its `namespaceRevisions` entry, if any."""
    return injection_labels(settings.namespace_revisions.get(namespace, ""))


def istiod_service(revision: IstioRevision) -> str:
    """Service (and Helm release) of a revision's istiod: `istiod` or `istiod-<revision>`."""
    return f"istiod-{revision.name}" if revision.name else "istiod"


def revisions_summary(settings: IstioSettings) -> dict[str, dict[str, Any]]:
    """What control planes run: revision (`default` for the unrevisioned one) → version and
    tags, for the `istioRevisions` stack output."""
    return {
        revision.name or "default": {"version": revision.version, "tags": list(revision.tags)}
        for revision in settings.revisions
    }


REVISION_TAG_WEBHOOK_PREFIX: Final = "istio-revision-tag-"


def _injection_webhook(prefix: str, revision: IstioRevision) -> dict[str, Any]:
    """One webhook of the istiod chart's `core` template: calls the revision's `/inject`."""
    return {
        "name": f"{prefix}sidecar-injector.istio.io",
        "clientConfig": {
            "service": {
                "name": istiod_service(revision),
                "namespace": ISTIO_NAMESPACE,
                "path": "/inject",
                "port": 443,
            }
        },
        "sideEffects": "None",
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
            }
        ],
        "failurePolicy": "Fail",
        "reinvocationPolicy": "Never",
        "admissionReviewVersions": ["v1"],
    }


def _expressions(*expressions: tuple[str, str, list[str] | None]) -> dict[str, Any]:
    return {
        "matchExpressions": [
            {"key": key, "operator": op, **({"values": values} if values is not None else {})}
            for key, op, values in expressions
        ]
    }


_NOT_OPTED_OUT: Final = ("sidecar.istio.io/inject", "NotIn", ["false"])


def revision_tag_webhook(tag: str, revision: IstioRevision) -> dict[str, Any]:
    """The MutatingWebhookConfiguration `istio-revision-tag-<tag>`: namespaces labelled
    `istio.io/rev: <tag>` (and pods labelled so) are injected by `revision`'s istiod.

    The same object as the istiod chart's `templates/revision-tags-mwc.yaml` renders for
    `revisionTags: [<tag>]` (and `istioctl tag set`), including the extra webhooks of the
    `default` tag for `istio-injection: enabled` namespaces and `sidecar.istio.io/inject:
    "true"` pods. The program owns it rather than the chart: moving a tag is then an
    in-place update of one object, where the chart would move it between two Helm releases
    (create in one, delete in the other) and lose it or fail (docs/upgrades.md). Labelled
    `istio.io/rev: <revision>`, so that revision's istiod patches in its CA bundle.
    """
    webhooks = [
        {
            **_injection_webhook("rev.namespace.", revision),
            "namespaceSelector": _expressions(
                ("istio.io/rev", "In", [tag]), ("istio-injection", "DoesNotExist", None)
            ),
            "objectSelector": _expressions(_NOT_OPTED_OUT),
        },
        {
            **_injection_webhook("rev.object.", revision),
            "namespaceSelector": _expressions(
                ("istio.io/rev", "DoesNotExist", None), ("istio-injection", "DoesNotExist", None)
            ),
            "objectSelector": _expressions(_NOT_OPTED_OUT, ("istio.io/rev", "In", [tag])),
        },
    ]
    if tag == DEFAULT_TAG:
        webhooks += [
            {
                **_injection_webhook("namespace.", revision),
                "namespaceSelector": _expressions(("istio-injection", "In", ["enabled"])),
                "objectSelector": _expressions(_NOT_OPTED_OUT),
            },
            {
                **_injection_webhook("object.", revision),
                "namespaceSelector": _expressions(
                    ("istio-injection", "DoesNotExist", None),
                    ("istio.io/rev", "DoesNotExist", None),
                ),
                "objectSelector": _expressions(
                    ("sidecar.istio.io/inject", "In", ["true"]),
                    ("istio.io/rev", "DoesNotExist", None),
                ),
            },
        ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": f"{REVISION_TAG_WEBHOOK_PREFIX}{tag}",
            "labels": {
                "istio.io/tag": tag,
                "istio.io/rev": revision.name or "default",
                "app": "sidecar-injector",
                "app.kubernetes.io/name": "istiod",
                "operator.istio.io/component": "Pilot",
            },
        },
        "webhooks": webhooks,
    }


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
        # The default validating webhook calls the revision the `default` tag points at.
        "defaultRevision": settings.default_revision.name or "default",
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


KEEP_UNHEALTHY_ENDPOINTS_OUT: Final = {"PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS": "false"}
"""istiod 1.31's opt-out of sending unready endpoints to proxies.

1.31 sends not-ready pods' endpoints (as UNHEALTHY) and sets Envoy's panic threshold to 0
for every cluster unless its DestinationRule sets `outlierDetection.minHealthPercent`
(`pilot/pkg/xds/endpoints/endpoint_builder.go` `supportsUnhealthyEndpoints`,
`pilot/pkg/networking/core/cluster_traffic_policy.go`); 1.30 sends ready endpoints only and
leaves the threshold unset without outlier detection. Setting `minHealthPercent` instead would
change 1.30's behaviour too (its panic threshold becomes that value), and a mesh-wide default
is ignored by 1.31.0's endpoint decision. With the opt-out, a 1.31 istiod builds the same
endpoints and thresholds as 1.30 for every DestinationRule (checked on istiod's own code with
both releases), so outlier detection, ejection and locality failover behave the same before,
during and after a minor upgrade (docs/upgrades.md, "Across minor versions")."""


def _version_env(revision: IstioRevision) -> dict[str, str]:
    """istiod environment that keeps a newer minor's behaviour equal to the installed 1.30."""
    minor = tuple(int(part) for part in revision.version.split(".")[:2])
    return dict(KEEP_UNHEALTHY_ENDPOINTS_OUT) if minor >= (1, 31) else {}


def istiod_values(
    settings: IstioSettings,
    tracing_service: str | None = None,
    tracing_port: int = OTLP_GRPC_PORT,
    *,
    revision: IstioRevision | None = None,
) -> dict[str, Any]:
    """Values of the `istiod` chart: multi-cluster identity, production sizing, meshConfig.

    `tracing_service`/`tracing_port`: the OTLP/gRPC collector spans go to, if any.
    `revision`: which revision's istiod (default: the default revision). Its tags are not
    chart values but program-owned webhooks (`revision_tag_webhook` says why).
    """
    revision = revision or settings.default_revision
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
        "env": {
            "BLOCKED_CIDRS_IN_JWKS_URIS": ",".join(JWKS_BLOCKED_CIDRS),
            **_version_env(revision),
        },
    }
    if revision.name:
        values["revision"] = revision.name
    elif settings.revisioned:
        # With `istioRevisions` the `default` tag is the program's webhook, also while it
        # points at this unrevisioned istiod, so the chart's own `istio-sidecar-injector` goes
        # as soon as revisions are declared: that hand-over changes no istiod a pod gets
        # (both call this one). Kept until the tag moves, it would be deleted only at the end
        # of that update, after the gateways rolled, and as the API server calls mutating
        # webhooks in name order it would run after `istio-revision-tag-default` and re-inject
        # them from the old istiod (docs/upgrades.md, "Why the default tag is a webhook").
        values["global"]["operatorManageWebhooks"] = True
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
    if settings.default_revision.name:
        # Gateways follow the `default` tag (their namespaces are untagged). Naming its
        # revision in the pod template, rather than the tag, makes moving the tag roll
        # the gateways onto the new proxy in the same update.
        values["revision"] = settings.default_revision.name
    return values
