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
    LabelValue,
    OptionalHttpsUrl,
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


def _duration_or_0s(value: str) -> str:
    try:
        seconds = prom_duration_seconds(value) if value else -1
    except ValueError:
        seconds = -1
    if seconds < 0:
        raise ValueError("must be a duration in hours, minutes and seconds, e.g. 0s, 30s or 2m")
    return value


AlertFor = Annotated[str, AfterValidator(_duration_or_0s)]
"""A rule's `for`: a Prometheus duration, `0s` (fire on the first evaluation) included."""

Severity = Literal["critical", "warning", "info"]
"""Alertmanager routing label; the three levels kube-prometheus-stack's routes know."""

MIN_SAMPLES_PER_WINDOW: Final = 4
"""`rate()` needs at least two samples; four scrape intervals per window keeps one missed
scrape from emptying the result (Prometheus' documented rule of thumb)."""

EVALUATION_INTERVAL_SECONDS: Final = 30
"""How often Prometheus evaluates the rule group: the Prometheus Operator's default
`evaluationInterval`, also set on the group itself so the detection arithmetic below holds
whatever the Prometheus' global setting."""

CIRCUIT_BREAKER_DETECTION_SECONDS: Final = 60
"""`CircuitBreakerTriggered` must fire within this many seconds of the first scrape that
shows a single outlier ejection (the mesh's "< 1 min detection" target)."""


def _seconds(value: float) -> str:
    return f"{value:g}s"


def circuit_breaker_detection_error(
    for_: str, rate_window: str, scrape_interval: str
) -> tuple[tuple[str, ...], str, str] | None:
    """Why a single ejection could not fire `CircuitBreakerTriggered` in time, or None.

    Returns the offending key, its value and the message. A counter step is first seen by an
    evaluation up to one evaluation interval after the scrape that shows it; the rule stays
    true only while `increase(...[rateWindow])` still holds the samples before and after the
    step (until `rateWindow - scrapeInterval` after it), and fires once `for` has elapsed,
    rounded up to whole evaluation intervals. So `evaluation + for` must fit both the
    detection target and `rateWindow - scrapeInterval`.
    """
    interval = EVALUATION_INTERVAL_SECONDS
    for_seconds = prom_duration_seconds(for_)
    fires_after = interval * (1 + -(-for_seconds // interval))
    if fires_after > CIRCUIT_BREAKER_DETECTION_SECONDS:
        return (
            ("circuitBreaker", "for"),
            for_,
            f"must be at most {_seconds(CIRCUIT_BREAKER_DETECTION_SECONDS - interval)}: rules "
            f"are evaluated every {_seconds(interval)}, so a longer `for` cannot fire on a "
            f"single ejection within {_seconds(CIRCUIT_BREAKER_DETECTION_SECONDS)} of the "
            "scrape that shows it",
        )
    needed = fires_after + prom_duration_seconds(scrape_interval)
    if prom_duration_seconds(rate_window) < needed:
        return (
            ("rateWindow",),
            rate_window,
            f"must be at least {_seconds(needed)} (scrapeInterval {scrape_interval} + "
            f"{_seconds(interval)} evaluation + circuitBreaker.for {for_}) so a single "
            "ejection is still in increase() when CircuitBreakerTriggered fires",
        )
    return None


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


class QuotaServiceAlert(SettingsModel):
    """`QuotaServiceFailing`: the per-client quota service (envoyproxy/ratelimit and its Redis)
    fails the proxies that ask it."""

    threshold: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description=(
            "Share of requests refused 500 because the quota service failed (`signal: "
            "denied`, flag `RLSE`, with `rateLimit.quota.failureModeDeny`), or of quota "
            "checks that failed (`signal: errors`, either mode), above which the alert fires. "
            "Default 0.01: a healthy quota service fails no check."
        ),
    )
    for_: PromDuration = Field(
        default="1m",
        alias="for",
        description=(
            "How long the share must stay above the threshold. Default `1m`: a Redis "
            "restart already refuses public requests for that long."
        ),
    )
    severity: Severity = Field(
        default="critical",
        description=(
            "Severity of `signal: denied`. Default `critical`: users get 500 on every "
            "request the quota service cannot check."
        ),
    )
    errors_severity: Severity = Field(
        default="warning",
        description=(
            "Severity of `signal: errors`. Default `warning`: with fail-open the requests "
            "pass but quotas are off; with fail-closed `signal: denied` pages as well."
        ),
    )


class CircuitBreakerAlert(SettingsModel):
    """`CircuitBreakerTriggered`: outlier ejections or pending-request overflows in Envoy."""

    threshold: float = Field(
        default=0,
        ge=0,
        description=(
            "Ejections (or overflows) per rateWindow above which the alert fires; that many "
            "are ignored. Ejections are summed over every calling proxy of the upstream "
            "cluster in a region, and every caller ejects a bad host on its own: threshold N "
            "ignores one bad host ejected by N callers (or N ejections by one caller). "
            "Overflows count per pod. Default 0: any ejection means an upstream host failed, "
            "which someone should look at."
        ),
    )
    for_: AlertFor = Field(
        default="0s",
        alias="for",
        description=(
            "How long the increase must last before the alert fires. Default `0s`: an "
            "ejection is an event, not a state; a single ejection leaves increase() one "
            "rateWindow later, so any `for` longer than that never fires. At most "
            "`30s`, and `30s + for` (rounded up to 30s steps) must not exceed rateWindow - "
            "scrapeInterval, so a "
            "single ejection fires within 60s of the scrape that shows it."
        ),
    )
    severity: Severity = Field(default="warning", description="Default `warning`.")


ISTIOD_CONVERGENCE_MAX_BUCKET_SECONDS: Final = 30
"""Largest finite bucket of istiod's `pilot_proxy_convergence_time` histogram
(`pilot/pkg/xds/monitoring.go`): histogram_quantile() never returns more, so a threshold at
or above it could never fire."""


class ControlPlaneAlert(SettingsModel):
    """istiod alerts: `IstiodUnavailable`, `IstiodXdsPushErrors`, `IstiodProxiesBehind`."""

    unavailable_for: PromDuration = Field(
        default="2m",
        description=(
            "How long no istiod target may be up before `IstiodUnavailable` fires. Default "
            "`2m`: longer than a pod restart, short enough that injection failures and "
            "stale proxy config are noticed before certificates run out."
        ),
    )
    unavailable_severity: Severity = Field(
        default="critical",
        description=(
            "Default `critical`: without istiod no pod gets a sidecar or a certificate, and "
            "no proxy receives config."
        ),
    )
    window: PromDuration = Field(
        default="5m",
        description=(
            "Range of increase()/rate() over istiod's counters and convergence histogram. "
            "Default `5m`: pushes are sporadic, so a rejection stays visible (and "
            "`IstiodXdsPushErrors` firing) this long. At least 4 x `scrapeInterval`."
        ),
    )
    push_errors: float = Field(
        default=0,
        ge=0,
        description=(
            "xDS send errors, or configs rejected by proxies, per `window` above which "
            "`IstiodXdsPushErrors` fires. Default 0: a rejected config leaves proxies on "
            "their previous config until someone fixes it."
        ),
    )
    convergence_seconds: float = Field(
        default=10,
        gt=0,
        lt=ISTIOD_CONVERGENCE_MAX_BUCKET_SECONDS,
        description=(
            "p99 of `pilot_proxy_convergence_time` (seconds from a config change until a "
            "proxy has all of it) above which `IstiodProxiesBehind` fires. Default 10; "
            "below 30, istiod's largest histogram bucket."
        ),
    )
    convergence_for: PromDuration = Field(
        default="5m",
        description=(
            "How long the p99 must stay above the threshold. Default `5m`: one large push "
            "after an istiod restart is normal."
        ),
    )
    severity: Severity = Field(
        default="warning",
        description=(
            "Severity of `IstiodXdsPushErrors` and `IstiodProxiesBehind`. Default `warning`."
        ),
    )


class AlertsSettings(SettingsModel):
    """Thresholds of the PrometheusRule and how Prometheus finds the monitors and the rule."""

    runbook_base_url: OptionalHttpsUrl = Field(
        default="",
        description=(
            "Base of every alert's `runbook_url` (`<base>#<alertname in lowercase>`). "
            "Default: docs/alerts.md of the deployed commit (the checkout's HEAD) in the "
            "repository of the GitHub Actions run (`GITHUB_SERVER_URL`/`GITHUB_REPOSITORY`), "
            "else of the checkout's `origin` remote; offline renders use a fixed "
            "stand-in. Set it for a wiki, or to deploy from elsewhere. Must be https "
            "(operators open it from a notification) and have no `#fragment`."
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
    quota_service: QuotaServiceAlert = Field(
        default_factory=QuotaServiceAlert, description="`QuotaServiceFailing`."
    )
    circuit_breaker: CircuitBreakerAlert = Field(
        default_factory=CircuitBreakerAlert, description="`CircuitBreakerTriggered`."
    )
    control_plane: ControlPlaneAlert = Field(
        default_factory=ControlPlaneAlert,
        description="`IstiodUnavailable`, `IstiodXdsPushErrors`, `IstiodProxiesBehind`.",
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
        if prom_duration_seconds(self.control_plane.window) < minimum:
            raise RuleViolationError(
                ("controlPlane", "window"),
                self.control_plane.window,
                f"must be at least {MIN_SAMPLES_PER_WINDOW} x scrapeInterval "
                f"({self.scrape_interval}) so increase() always has enough samples",
            )
        return self

    @model_validator(mode="after")
    def _single_ejection_fires_within_a_minute(self) -> AlertsSettings:
        problem = circuit_breaker_detection_error(
            self.circuit_breaker.for_, self.rate_window, self.scrape_interval
        )
        if problem is not None:
            raise RuleViolationError(*problem)
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
