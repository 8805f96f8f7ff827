"""Prometheus Operator monitors of the mesh: what Prometheus scrapes and how.

The sidecar PodMonitor (every proxy's Envoy stats), the istiod ServiceMonitor, one
ServiceMonitor per service with application metrics (over mesh mTLS, Flagger's primary and
canary Services for progressive services) and the ratelimit service's monitor. Plain
functions returning `spec`s; `MeshAlerts` (`component.py`) wraps them in custom resources.
"""

from __future__ import annotations

from typing import Any, Final

from components.alerts.rules import ISTIOD_SERVICE_SELECTOR
from components.alerts.settings import AlertsSettings, AppMetrics
from components.constants import PROMETHEUS_IGNORE_LABEL
from components.kube import MetricsEndpoint

ENVOY_PROXY_CONTAINER: Final = "istio-proxy"
"""Container name of every injected sidecar and gateway proxy."""

ENVOY_PROMETHEUS_PORT: Final = "http-envoy-prom"
"""Port name of Envoy's own Prometheus endpoint (15090) in the injected proxy container.
Scraping it (not the merged 15020) keeps proxy and application metrics apart."""

ENVOY_PROMETHEUS_PATH: Final = "/stats/prometheus"

ISTIOD_MONITORING_PORT: Final = "http-monitoring"
"""istiod Service port (15014) serving control-plane metrics."""

RATELIMIT_SERIES: Final = "ratelimit_.*"
"""Series kept from the ratelimit service's own endpoint: its counters only. Its Go runtime
series would duplicate nothing useful, and Envoy's come from the sidecar PodMonitor."""

MESH_CERTIFICATE_FILES: Final = {
    "caFile": "root-cert.pem",
    "certFile": "cert-chain.pem",
    "keyFile": "key.pem",
}
"""Files Istio's proxy writes to `OUTPUT_CERTS` (Istio's "Prometheus" integration, TLS
settings), by the `tlsConfig` field that reads each."""


def sidecar_pod_monitor_spec(settings: AlertsSettings) -> dict[str, Any]:
    """PodMonitor `spec` scraping Envoy's own metrics from every proxy in the cluster.

    A PodMonitor, not a ServiceMonitor: port 15090 is on every injected pod, and not every
    pod has a Service exposing it. Pods labelled `PROMETHEUS_IGNORE_LABEL` opt out, as in
    Istio's `samples/addons/extras/prometheus-operator.yaml`.
    """
    return {
        "selector": {
            # Every pod: only proxies have the `http-envoy-prom` port, and the relabeling
            # keeps the `istio-proxy` container, so sidecars and gateways alike are scraped.
            "matchExpressions": [{"key": PROMETHEUS_IGNORE_LABEL, "operator": "DoesNotExist"}]
        },
        "namespaceSelector": {"any": True},
        "jobLabel": "envoy-stats",
        "podMetricsEndpoints": [
            {
                "port": ENVOY_PROMETHEUS_PORT,
                "path": ENVOY_PROMETHEUS_PATH,
                "interval": settings.scrape_interval,
                "relabelings": [
                    {
                        "action": "keep",
                        "sourceLabels": ["__meta_kubernetes_pod_container_name"],
                        "regex": ENVOY_PROXY_CONTAINER,
                    },
                ],
            }
        ],
    }


def istiod_service_monitor_spec(settings: AlertsSettings, istio_namespace: str) -> dict[str, Any]:
    """ServiceMonitor `spec` for istiod's control-plane metrics."""
    return {
        "selector": {"matchLabels": dict(ISTIOD_SERVICE_SELECTOR)},
        "namespaceSelector": {"matchNames": [istio_namespace]},
        "jobLabel": "istio",
        "targetLabels": ["app"],
        "endpoints": [{"port": ISTIOD_MONITORING_PORT, "interval": settings.scrape_interval}],
    }


def mesh_tls_endpoint(settings: AlertsSettings) -> dict[str, Any]:
    """`scheme` and `tlsConfig` of an endpoint scraped through a STRICT-mTLS sidecar.

    Prometheus presents the workload certificate its own istio-proxy sidecar writes to
    `meshCertificatesDir`. `insecureSkipVerify`: the server certificate carries a SPIFFE
    identity, not the pod address Prometheus dials, so name verification cannot succeed
    (Istio's documented setting); the client certificate still authenticates Prometheus.
    """
    directory = settings.mesh_certificates_dir
    return {
        "scheme": "https",
        "tlsConfig": {
            **{field: f"{directory}/{file}" for field, file in MESH_CERTIFICATE_FILES.items()},
            "insecureSkipVerify": True,
        },
    }


def app_service_monitor_spec(
    settings: AlertsSettings,
    service_name: str,
    namespace: str,
    metrics: AppMetrics,
    *,
    service_apps: tuple[str, ...],
) -> dict[str, Any]:
    """ServiceMonitor `spec` for one application's own metrics, over mesh mTLS.

    Selects the Services labelled `app` in `service_apps` (`constants.pod_services`: each
    pod behind exactly one of them, so nothing is scraped twice). With several Services
    (Flagger's primary and canary) `job` is set to the service's name, as the one Service
    of a static service gives it, so queries need not know about Flagger; the `service`
    and `pod` labels tell primary and canary apart.
    """
    endpoint: dict[str, Any] = {
        "port": metrics.port,
        "path": metrics.path,
        "interval": metrics.interval,
        **mesh_tls_endpoint(settings),
    }
    if service_apps == (service_name,):
        selector: dict[str, Any] = {"matchLabels": {"app": service_name}}
    else:
        selector = {
            "matchExpressions": [{"key": "app", "operator": "In", "values": list(service_apps)}]
        }
        endpoint["relabelings"] = [
            {"action": "replace", "targetLabel": "job", "replacement": service_name}
        ]
    return {
        "selector": selector,
        "namespaceSelector": {"matchNames": [namespace]},
        "endpoints": [endpoint],
    }


def ratelimit_service_monitor_spec(
    settings: AlertsSettings, endpoint: MetricsEndpoint
) -> dict[str, Any]:
    """ServiceMonitor `spec` for the ratelimit service's own counters (`RateLimitExceeded`).

    The ratelimit Service carries no `app` label, so every Service of its namespace is
    selected and the `keep` relabeling narrows it to the one `endpoint` names (Redis'
    Service has no metrics port anyway). The pods are meshed under STRICT mTLS, hence the
    mesh TLS settings. Only `ratelimit_*` series are kept: the sidecar PodMonitor already
    scrapes the proxy, so nothing is counted twice.
    """
    return {
        "selector": {},
        "namespaceSelector": {"matchNames": [endpoint.namespace]},
        "endpoints": [
            {
                # Path: Prometheus' default `/metrics`, ratelimit's PROMETHEUS_PATH.
                "port": endpoint.port_name,
                "interval": settings.scrape_interval,
                **mesh_tls_endpoint(settings),
                "relabelings": [
                    {
                        "action": "keep",
                        "sourceLabels": ["__meta_kubernetes_service_name"],
                        "regex": endpoint.service,
                    }
                ],
                "metricRelabelings": [
                    {
                        "action": "keep",
                        "sourceLabels": ["__name__"],
                        "regex": RATELIMIT_SERIES,
                    }
                ],
            }
        ],
    }
