"""Pure builders of the kiali-server chart's values (auth, tracing, clustering, Ingress).

Plain functions from settings to dicts, unit-tested without the engine; `KialiStack` and
`KialiRemoteAccess` (`kiali.py`) only wire them into the chart.
"""

from __future__ import annotations

from typing import Any, Final

import pulumi

from components.constants import PROMETHEUS_IGNORE_LABEL, SKIP_SERVICE_AWAIT
from components.observability.settings import KialiSettings, ObservabilitySettings

RELEASE: Final = "kiali"

"""Helm release; with the default `deployment.instance_name` the Service is `kiali`."""

SIGNING_KEY_LENGTH: Final = 32

"""Kiali signs login tokens with HMAC; 32 random characters (the chart's own default
when it generates one) — but generated once and kept, not on every render."""

SIGNING_KEY_SECRET: Final = "kiali-signing-key"
"""Secret holding the login-token signing key (item `SIGNING_KEY_ITEM`)."""
SIGNING_KEY_ITEM: Final = "key"
SIGNING_KEY_REFERENCE: Final = f"secret:{SIGNING_KEY_SECRET}:{SIGNING_KEY_ITEM}"
"""`login_token.signing_key` as the chart takes a Secret (`secret:<name>:<key>`): it mounts
the item as a file and the ConfigMap holds only this reference."""

MULTI_CLUSTER_LABEL: Final = "kiali.io/multiCluster=true"

"""Label of the remote-cluster kubeconfig Secrets Kiali discovers in its namespace."""

SERVICE_ACCOUNT: Final = RELEASE

"""Kiali's ServiceAccount: the chart's `kiali-server.fullname`, the instance name, which
defaults to the release name. Its mTLS identity is what Jaeger admits to the gRPC query
API (`jaeger_access`)."""

SERVER_PORT: Final = 20001

"""Kiali's HTTP port (chart `server.port` default): UI, API and its Ingress backend."""

POD_LABELS: Final = {"app.kubernetes.io/name": "kiali", "app.kubernetes.io/instance": RELEASE}

"""Selector labels of the chart's pod (`kiali-server.selectorLabels`; the instance is
`deployment.instance_name`, which defaults to the release name used here)."""

WEB_ROOT: Final = "/kiali"

"""Kiali's default web root on Kubernetes, stated so links and Ingress agree."""

RESOURCES: Final = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}

"""Above the chart's 10m/64Mi: a multi-cluster graph query is CPU-heavy; the chart's 1Gi
memory limit kept, plus a CPU limit."""


def anonymous_warning() -> str:
    """The warning logged when anonymous access is enabled."""
    return (
        "Kiali auth.strategy is 'anonymous': anyone who reaches Kiali has full access "
        "(allowed by observability.kiali.allowAnonymous)"
    )


def kiali_values(
    settings: KialiSettings,
    *,
    prometheus_url: str,
    tracing_internal_url: pulumi.Input[str],
    tracing_external_url: str,
    signing_key: pulumi.Input[str],
) -> dict[str, Any]:
    """Values of the kiali-server chart. Inputs may be Outputs (Jaeger URL, signing key)."""
    auth: dict[str, Any] = {"strategy": settings.auth_strategy}
    if settings.auth_strategy == "openid":
        auth["openid"] = {
            "issuer_uri": settings.openid_issuer_uri,
            "client_id": settings.openid_client_id,
        }
    tracing: dict[str, Any] = {
        "enabled": True,
        "provider": "jaeger",
        "internal_url": tracing_internal_url,
        "use_grpc": True,
    }
    if tracing_external_url:
        tracing["external_url"] = tracing_external_url
    grafana: dict[str, Any] = {"enabled": bool(settings.grafana_internal_url)}
    if settings.grafana_internal_url:
        grafana["internal_url"] = settings.grafana_internal_url
        grafana["external_url"] = settings.grafana_external_url
    deployment: dict[str, Any] = {
        "resources": RESOURCES,
        "view_only_mode": settings.view_only_mode,
        # The chart's NetworkPolicy (kept: `network_policy.enabled` defaults to true) admits
        # only 20001 and 9090, so the sidecar PodMonitor's target on 15090 could never be
        # scraped and would stay down; the label opts Kiali's pod out of that PodMonitor.
        "pod_labels": {PROMETHEUS_IGNORE_LABEL: "true"},
        # Nothing the program creates waits for Kiali's Service (the Deployment stays
        # awaited); its 10 s endpoint settle would only lengthen every first deploy.
        "service_annotations": dict(SKIP_SERVICE_AWAIT),
    }
    server: dict[str, Any] = {"web_root": WEB_ROOT}
    if settings.ingress_host:
        deployment["ingress"] = {"enabled": True, "override_yaml": {"spec": ingress_spec(settings)}}
        server["web_fqdn"] = settings.ingress_host
        server["web_schema"] = "https"
    return {
        "auth": auth,
        "login_token": {"signing_key": signing_key},
        "deployment": deployment,
        "server": server,
        "external_services": {
            "prometheus": {"enabled": True, "url": prometheus_url},
            "tracing": tracing,
            "grafana": grafana,
        },
        "clustering": {
            # Spokes appear once their kubeconfig Secrets (this label) exist here and the
            # chart re-renders: it finds them with Helm's `lookup` at render time.
            "autodetect_secrets": {"enabled": True, "label": MULTI_CLUSTER_LABEL},
        },
    }


def ingress_spec(settings: KialiSettings) -> dict[str, Any]:
    """Spec of Kiali's Ingress: the chart's own rule (host, web root, Service port) plus TLS.

    kiali-server 2.29 has no TLS value for its Ingress: only `override_yaml.spec`, which
    replaces the whole spec, so the chart's rule is restated here. The chart still sets
    its backend-protocol annotations (plain HTTP to port 20001).
    """
    return {
        "ingressClassName": settings.ingress_class,
        "rules": [
            {
                "host": settings.ingress_host,
                "http": {
                    "paths": [
                        {
                            "path": WEB_ROOT,
                            "pathType": "Prefix",
                            "backend": {
                                "service": {"name": RELEASE, "port": {"number": SERVER_PORT}}
                            },
                        }
                    ]
                },
            }
        ],
        "tls": [{"hosts": [settings.ingress_host], "secretName": settings.ingress_tls_secret}],
    }


def remote_access_values(signing_key: pulumi.Input[str]) -> dict[str, Any]:
    """Values of kiali-server on a spoke: only the ServiceAccount and RBAC the hub's Kiali
    uses through its remote-cluster Secret, no Kiali server."""
    return {
        "deployment": {"remote_cluster_resources_only": True},
        # Without a key the chart renders a new random one into its ConfigMap on every run.
        "login_token": {"signing_key": signing_key},
    }


def tracing_external_url(settings: ObservabilitySettings) -> str:
    """Browser URL of the Jaeger UI: the setting, else Jaeger's Ingress host, else none."""
    if settings.kiali.tracing_external_url:
        return settings.kiali.tracing_external_url
    host = settings.jaeger.ingress_host
    return f"https://{host}" if host else ""
