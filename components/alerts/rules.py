"""Pure builders of the mesh's Prometheus scrape objects and alert rules.

Plain functions from settings to dicts, unit-tested without the Pulumi engine and checked
with promql-parser and `promtool`. `MeshAlerts` (`component.py`) only wraps them in custom
resources.

Every alert reads a metric that really exists:

- `istio_requests_total` and `istio_request_duration_milliseconds_bucket` are Istio's
  standard metrics, on by default;
- the Envoy cluster stats (`envoy_cluster_*`) exist only because IstioMesh's
  `proxyStatsMatcher.inclusionRegexps` exports them; `ENVOY_STATS` names the Envoy stat behind
  each Prometheus name so the tests can check the regexps really match it;
- `ratelimit_service_rate_limit_over_limit` is the envoyproxy/ratelimit service's counter
  (with `USE_PROMETHEUS=true`), labelled by rate limit `domain`.
"""

from __future__ import annotations

from typing import Any, Final

from components.alerts.settings import AlertsSettings, AppMetrics
from components.constants import PROMETHEUS_IGNORE_LABEL
from components.kube import MetricsEndpoint

ALERT_NAMES: Final = (
    "CanaryErrorRateHigh",
    "CanaryLatencyHigh",
    "RateLimitExceeded",
    "CircuitBreakerTriggered",
)
"""Every alert of the PrometheusRule, in rule order."""

RULE_GROUP: Final = "meshstack.mesh"
"""Name of the one rule group."""

ENVOY_PROXY_CONTAINER: Final = "istio-proxy"
"""Container name of every injected sidecar and gateway proxy."""

ENVOY_PROMETHEUS_PORT: Final = "http-envoy-prom"
"""Port name of Envoy's own Prometheus endpoint (15090) in the injected proxy container.
Scraping it (not the merged 15020) keeps proxy and application metrics apart."""

ENVOY_PROMETHEUS_PATH: Final = "/stats/prometheus"

ISTIOD_MONITORING_PORT: Final = "http-monitoring"
"""istiod Service port (15014) serving control-plane metrics."""

ISTIOD_SERVICE_SELECTOR: Final = {"istio": "pilot"}
"""Labels of every istiod Service, whatever its revision."""

EJECTIONS: Final = "envoy_cluster_outlier_detection_ejections_enforced_total"
PENDING_OVERFLOW: Final = "envoy_cluster_upstream_rq_pending_overflow"
RATELIMIT_OVER_LIMIT: Final = "ratelimit_service_rate_limit_over_limit"

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

ENVOY_STATS: Final = {
    EJECTIONS: "cluster.{cluster}.outlier_detection.ejections_enforced_total",
    PENDING_OVERFLOW: "cluster.{cluster}.upstream_rq_pending_overflow",
}
"""Envoy stat name behind each Prometheus metric the alerts read. Envoy's Prometheus output
prefixes `envoy_`, moves the cluster name into the `cluster_name` label and joins the rest
with `_`; counters keep their name (no `_total` is added: the ejection counter's own name
ends in `_total`). `proxyStatsMatcher` regexps are matched against these stat names."""


def _selector(labels: dict[str, str]) -> str:
    return ", ".join(f'{key}="{value}"' for key, value in labels.items())


def canary_error_ratio_expr(window: str) -> str:
    """Failed share per service version, as seen by the receiving sidecar.

    A failure is a 5xx, or, for gRPC (`request_protocol="grpc"`), a `grpc_response_status`
    other than `0` (OK): gRPC answers errors with HTTP 200 and the status in a trailer, so
    `response_code` alone misses them. The two selectors are joined with `or` before the
    `sum`: a series both select (a gRPC 5xx with an error status) has one label set and is
    kept once, so nothing is counted twice.
    """
    by = "destination_service, destination_version"
    server = _selector({"reporter": "destination"})
    http_errors = f'istio_requests_total{{{server}, response_code=~"5.."}}'
    grpc_errors = (
        f'istio_requests_total{{{server}, request_protocol="grpc", grpc_response_status!~"0|"}}'
    )
    return (
        f"sum by ({by}) (\n  rate({http_errors}[{window}])\n  or\n"
        f"  rate({grpc_errors}[{window}])\n)"
        f"\n/\nsum by ({by}) (rate(istio_requests_total{{{server}}}[{window}]))"
    )


def enough_traffic_expr(window: str, min_rate: float) -> str:
    """Service versions receiving at least `min_rate` requests per second.

    `and`-ed to the canary alerts: one failed or slow request out of three is not a
    verdict on a version.
    """
    by = "destination_service, destination_version"
    return (
        f'sum by ({by}) (rate(istio_requests_total{{reporter="destination"}}[{window}]))'
        f" >= {min_rate:g}"
    )


def canary_p95_latency_expr(window: str) -> str:
    """p95 request duration per service version in milliseconds."""
    return (
        "histogram_quantile(0.95, sum by (destination_service, destination_version, le) "
        f'(rate(istio_request_duration_milliseconds_bucket{{reporter="destination"}}[{window}])))'
    )


def rejected_ratio_expr(window: str) -> str:
    """429 share per destination service, as the calling proxy saw it.

    `reporter="source"`: a 429 from the ingress gateway's limiter never reaches the
    destination sidecar, but the gateway (the source proxy) reports it, and so does the
    client sidecar for a limit enforced at the destination.
    """
    by = "destination_service"
    return (
        f'sum by ({by}) (rate(istio_requests_total{{reporter="source", response_code="429"}}'
        f"[{window}]))\n/\n"
        f'sum by ({by}) (rate(istio_requests_total{{reporter="source"}}[{window}]))'
    )


def over_limit_expr(window: str) -> str:
    """Over-limit decisions per second of the global rate limit service, per domain."""
    return f"sum by (domain) (rate({RATELIMIT_OVER_LIMIT}[{window}]))"


def envoy_increase_expr(metric: str, window: str) -> str:
    """Increase of an Envoy cluster counter over the window, per upstream cluster."""
    return f"sum by (cluster_name) (increase({metric}[{window}]))"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def _runbook(settings: AlertsSettings, alert: str) -> str:
    return f"{settings.runbook_base_url}#{alert.lower()}"


def _alert(
    settings: AlertsSettings,
    alert: str,
    expr: str,
    *,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "alert": alert,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **(labels or {})},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": _runbook(settings, alert),
        },
    }


def alert_rules(settings: AlertsSettings) -> list[dict[str, Any]]:
    """The alerting rules, thresholds and durations from settings.

    `RateLimitExceeded` and `CircuitBreakerTriggered` have one rule per signal, told apart by
    the `signal` label, so each fires with the labels that identify its cause.
    """
    window = settings.rate_window
    errors = settings.canary_error_rate
    latency = settings.canary_latency
    limit = settings.rate_limit
    breaker = settings.circuit_breaker
    version = "{{ $labels.destination_service }} version {{ $labels.destination_version }}"
    by = "destination_service, destination_version"
    return [
        _alert(
            settings,
            "CanaryErrorRateHigh",
            f"(\n{canary_error_ratio_expr(window)}\n) > {errors.threshold:g}"
            f"\nand on ({by})\n{enough_traffic_expr(window, settings.min_request_rate)}",
            for_=errors.for_,
            severity=errors.severity,
            summary=f"{version} fails too many requests",
            description=(
                "{{ $value | humanizePercentage }} of the requests to "
                f"{version} failed (5xx, or a gRPC status other than OK) over {window}, "
                "above the "
                f"{_percent(errors.threshold)} threshold for {errors.for_}. If this is a "
                "canary, roll it back."
            ),
        ),
        _alert(
            settings,
            "CanaryLatencyHigh",
            f"(\n{canary_p95_latency_expr(window)}\n) > {latency.threshold_ms:g}"
            f"\nand on ({by})\n{enough_traffic_expr(window, settings.min_request_rate)}",
            for_=latency.for_,
            severity=latency.severity,
            summary=f"{version} is slow",
            description=(
                f'p95 latency of {version} is {{{{ $value | printf "%.0f" }}}}ms over {window}, '
                f"above the {latency.threshold_ms:g}ms threshold for {latency.for_}."
            ),
        ),
        _alert(
            settings,
            "RateLimitExceeded",
            f"(\n{rejected_ratio_expr(window)}\n) > {limit.threshold:g}",
            for_=limit.for_,
            severity=limit.severity,
            labels={"signal": "http_429"},
            summary="{{ $labels.destination_service }} rejects many requests with 429",
            description=(
                "{{ $value | humanizePercentage }} of the requests to "
                "{{ $labels.destination_service }} were rejected with 429 Too Many Requests "
                f"over {window}, above the {_percent(limit.threshold)} threshold for "
                f"{limit.for_}."
            ),
        ),
        _alert(
            settings,
            "RateLimitExceeded",
            f"{over_limit_expr(window)} > {limit.over_limit_per_second:g}",
            for_=limit.for_,
            severity=limit.severity,
            labels={"signal": "ratelimit_service"},
            summary="Rate limit domain {{ $labels.domain }} is over its limit",
            description=(
                "The rate limit service decides over-limit {{ $value | humanize }} times a "
                "second for domain {{ $labels.domain }}, above the "
                f"{limit.over_limit_per_second:g}/s threshold for {limit.for_}."
            ),
        ),
        _alert(
            settings,
            "CircuitBreakerTriggered",
            f"{envoy_increase_expr(EJECTIONS, window)} > {breaker.threshold:g}",
            for_=breaker.for_,
            severity=breaker.severity,
            labels={"signal": "outlier_ejection"},
            summary="Envoy ejects hosts of {{ $labels.cluster_name }}",
            description=(
                "Outlier detection ejected {{ $value | humanize }} hosts of "
                f"{{{{ $labels.cluster_name }}}} in {window} (threshold "
                f"{breaker.threshold:g}): upstream hosts keep failing."
            ),
        ),
        _alert(
            settings,
            "CircuitBreakerTriggered",
            f"{envoy_increase_expr(PENDING_OVERFLOW, window)} > {breaker.threshold:g}",
            for_=breaker.for_,
            severity=breaker.severity,
            labels={"signal": "pending_overflow"},
            summary="Circuit breaker of {{ $labels.cluster_name }} sheds requests",
            description=(
                "{{ $value | humanize }} requests to {{ $labels.cluster_name }} overflowed "
                f"the pending-request limit in {window} (threshold {breaker.threshold:g}) "
                "and were answered 503 with flag UO."
            ),
        ),
    ]


def rule_groups(settings: AlertsSettings) -> list[dict[str, Any]]:
    """`spec.groups` of the PrometheusRule (and, as is, a Prometheus rules file's `groups`)."""
    return [{"name": RULE_GROUP, "rules": alert_rules(settings)}]


def prometheus_rule_spec(settings: AlertsSettings) -> dict[str, Any]:
    """`spec` of the PrometheusRule."""
    return {"groups": rule_groups(settings)}


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
