"""Settings of the mesh alerts, scrape configuration and Grafana dashboard.

`StackSettings` holds these as `alerts` and `dashboard`, and `MeshService.metrics` asks for an
application-metrics ServiceMonitor. Every threshold, `for` duration and severity of the
PrometheusRule comes from here, so one region can be stricter than another without touching
code. Defaults follow the product targets stated in issue 4 (5% errors, 1 s p95 latency for
2 minutes) and Prometheus practice (rate windows of at least four scrape intervals).
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, model_validator

from components.settings_types import (
    DnsLabel,
    HttpsUrl,
    LabelValue,
    PromDuration,
    RuleViolationError,
    SettingsModel,
    prom_duration_seconds,
)

_PORT_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME_MAX: Final = 15


def _port_name(value: str) -> str:
    if len(value) > _PORT_NAME_MAX or not _PORT_NAME.match(value):
        raise ValueError(
            "must be a Kubernetes port name: at most 15 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _http_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError("must be an HTTP path starting with '/', without spaces")
    return value


def _absolute_dir(value: str) -> str:
    if not value.startswith("/") or value.endswith("/") or any(c.isspace() for c in value):
        raise ValueError(
            "must be an absolute directory path without spaces or trailing '/', "
            "e.g. /etc/prom-certs"
        )
    return value


Severity = Literal["critical", "warning", "info"]
"""Alertmanager routing label; the three levels kube-prometheus-stack's routes know."""

MIN_SAMPLES_PER_WINDOW: Final = 4
"""`rate()` needs at least two samples; four scrape intervals per window keeps one missed
scrape from emptying the result (Prometheus' documented rule of thumb)."""


class AppMetrics(SettingsModel):
    """Scrape the application's own `/metrics` through a ServiceMonitor.

    The Service of the mesh service must carry the label `app: <name>` and name its metrics
    port `port`; Prometheus must be able to reach it (with STRICT mTLS, through Istio's
    merged metrics on 15020 or a Prometheus with mesh certificates).

    The ServiceMonitor scrapes over mesh mTLS (`scheme: https`, the certificates in
    `alerts.meshCertificatesDir`): under STRICT PeerAuthentication the sidecar rejects
    plaintext, so Prometheus needs Istio's certificate-writing sidecar (docs/alerts.md).
    """

    port: Annotated[str, AfterValidator(_port_name)] = Field(
        default="http-metrics",
        description=(
            "Name of the Service port that serves metrics (a port name, at most 15 "
            "characters). Default `http-metrics`, the name the `http-` prefix keeps HTTP."
        ),
    )
    path: Annotated[str, AfterValidator(_http_path)] = Field(
        default="/metrics",
        description="HTTP path of the metrics. Default `/metrics`, the Prometheus convention.",
    )
    interval: PromDuration = Field(
        default="30s",
        description=(
            "Scrape interval. Default `30s`: application metrics change slower than the "
            "proxies' request metrics."
        ),
    )


class ErrorRateAlert(SettingsModel):
    """`CanaryErrorRateHigh`: share of failed requests (5xx, or a non-OK gRPC status) per
    service version."""

    threshold: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description=(
            "Ratio of failed requests (0-1; 5xx, or for gRPC a status other than OK) above "
            "which the alert fires. Default 0.05 (5%)."
        ),
    )
    for_: PromDuration = Field(
        default="2m",
        alias="for",
        description="How long the ratio must stay above the threshold. Default `2m`.",
    )
    severity: Severity = Field(
        default="critical",
        description="Default `critical`: a failing canary must be rolled back by a human now.",
    )


class LatencyAlert(SettingsModel):
    """`CanaryLatencyHigh`: p95 request duration per service version."""

    threshold_ms: float = Field(
        default=1000,
        gt=0,
        description="p95 latency in milliseconds above which the alert fires. Default 1000.",
    )
    for_: PromDuration = Field(
        default="2m",
        alias="for",
        description="How long the p95 must stay above the threshold. Default `2m`.",
    )
    severity: Severity = Field(
        default="warning",
        description="Default `warning`: slow is bad but not yet broken.",
    )


class RateLimitAlert(SettingsModel):
    """`RateLimitExceeded`: requests rejected with 429, and the rate limit service's verdicts."""

    threshold: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description=(
            "Ratio of requests to a service answered 429 (0-1) above which the alert fires. "
            "Default 0.1: some rejections are the limiter doing its job, 10% means a client "
            "or a limit is wrong."
        ),
    )
    over_limit_per_second: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Over-limit decisions per second of the global rate limit service (per domain) "
            "above which the alert fires. Default 1."
        ),
    )
    for_: PromDuration = Field(
        default="5m",
        alias="for",
        description="Default `5m`: bursts that the limiter absorbs are not worth a page.",
    )
    severity: Severity = Field(default="warning", description="Default `warning`.")


class CircuitBreakerAlert(SettingsModel):
    """`CircuitBreakerTriggered`: outlier ejections or pending-request overflows in Envoy."""

    threshold: float = Field(
        default=0,
        ge=0,
        description=(
            "Ejections (or overflows) per rate window above which the alert fires. Default 0: "
            "any ejection means an upstream host failed, which someone should look at."
        ),
    )
    for_: PromDuration = Field(
        default="1m",
        alias="for",
        description="Default `1m`: ejections are short-lived, a long `for` would hide them.",
    )
    severity: Severity = Field(default="warning", description="Default `warning`.")


class AlertsSettings(SettingsModel):
    """Thresholds of the PrometheusRule and how Prometheus finds the monitors and the rule."""

    runbook_base_url: HttpsUrl = Field(
        default="https://github.com/meshstack/meshstack/blob/main/docs/alerts.md",
        description=(
            "Base of every alert's `runbook_url` (`<base>#<alertname in lowercase>`). "
            "Default: the runbook section of this project's docs/alerts.md; point it at "
            "your fork or wiki. Must be https (operators open it from a notification) and "
            "have no `#fragment`."
        ),
    )
    prometheus_selector_labels: dict[str, LabelValue] = Field(
        default_factory=lambda: {"release": "kube-prometheus-stack"},
        description=(
            "Labels on every PodMonitor, ServiceMonitor and PrometheusRule so the Prometheus "
            "Operator picks them up. Default `{release: kube-prometheus-stack}`, what that "
            "chart's default selectors require."
        ),
    )
    mesh_certificates_dir: Annotated[str, AfterValidator(_absolute_dir)] = Field(
        default="/etc/prom-certs",
        description=(
            "Directory in the Prometheus container holding the Istio workload certificate "
            "(`root-cert.pem`, `cert-chain.pem`, `key.pem`), written there by Prometheus' "
            "own istio-proxy sidecar (Istio's 'Prometheus' integration, TLS settings). "
            "Application and ratelimit monitors scrape over mTLS with it, because STRICT "
            "PeerAuthentication rejects plaintext scrapes. Default `/etc/prom-certs`, "
            "the mount path of Istio's documentation."
        ),
    )
    scrape_interval: PromDuration = Field(
        default="15s",
        description="Scrape interval of the sidecars and istiod. Default `15s`, Istio's sample.",
    )
    rate_window: PromDuration = Field(
        default="1m",
        description=(
            "Range of every `rate()`/`increase()` in the rules. Default `1m`: four 15s "
            "scrapes, short enough that a 2m `for` reacts within 3 minutes. At least 4 x "
            "`scrapeInterval`, so `rate()` always has enough samples."
        ),
    )
    min_request_rate: float = Field(
        default=0.1,
        ge=0,
        description=(
            "Requests per second a service version must receive before the canary error "
            "and latency alerts judge it. Default 0.1 (6 a minute): below that one failed "
            "or slow request is noise, not a verdict. 0 judges every version."
        ),
    )
    canary_error_rate: ErrorRateAlert = Field(
        default_factory=ErrorRateAlert, description="`CanaryErrorRateHigh`."
    )
    canary_latency: LatencyAlert = Field(
        default_factory=LatencyAlert, description="`CanaryLatencyHigh`."
    )
    rate_limit: RateLimitAlert = Field(
        default_factory=RateLimitAlert, description="`RateLimitExceeded`."
    )
    circuit_breaker: CircuitBreakerAlert = Field(
        default_factory=CircuitBreakerAlert, description="`CircuitBreakerTriggered`."
    )

    @model_validator(mode="after")
    def _window_holds_enough_samples(self) -> AlertsSettings:
        minimum = MIN_SAMPLES_PER_WINDOW * prom_duration_seconds(self.scrape_interval)
        if prom_duration_seconds(self.rate_window) < minimum:
            raise RuleViolationError(
                ("rateWindow",),
                self.rate_window,
                f"must be at least {MIN_SAMPLES_PER_WINDOW} x scrapeInterval "
                f"({self.scrape_interval}) so rate() always has enough samples",
            )
        return self


class DashboardSettings(SettingsModel):
    """The Grafana dashboard ConfigMap, picked up by Grafana's dashboard sidecar."""

    enabled: bool = Field(
        default=True,
        description="Ship the mesh dashboard. Default on.",
    )
    namespace: DnsLabel = Field(
        default="monitoring",
        description=(
            "Namespace of the dashboard ConfigMap. Default `monitoring`: Grafana's sidecar "
            "watches its own namespace unless told otherwise, and kube-prometheus-stack runs "
            "there. The namespace belongs to the monitoring stack; this program does not "
            "create it."
        ),
    )
