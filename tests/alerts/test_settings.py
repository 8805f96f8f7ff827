"""Alert, dashboard and app-metrics settings: documented defaults, one test per error message."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from components.alerts.settings import (
    AlertsSettings,
    AppMetrics,
    DashboardSettings,
)
from components.settings_types import prom_duration_seconds
from tests.conftest import FIXTURES, fixture_config, make_settings, settings_error

# --- defaults -----------------------------------------------------------------------------


def test_alert_defaults_are_the_product_targets() -> None:
    alerts = make_settings().alerts
    assert (alerts.canary_error_rate.threshold, alerts.canary_error_rate.for_) == (0.05, "2m")
    assert alerts.canary_error_rate.severity == "critical"
    assert (alerts.canary_latency.threshold_ms, alerts.canary_latency.for_) == (1000, "2m")
    assert alerts.canary_latency.severity == "warning"
    assert (alerts.rate_limit.threshold, alerts.rate_limit.over_limit_per_second) == (0.1, 1.0)
    assert (alerts.rate_limit.for_, alerts.rate_limit.severity) == ("5m", "warning")
    assert (alerts.circuit_breaker.threshold, alerts.circuit_breaker.for_) == (0, "0s")


def test_scrape_defaults_follow_istio_and_prometheus_practice() -> None:
    alerts = make_settings().alerts
    assert alerts.scrape_interval == "15s"
    assert alerts.rate_window == "1m", "four scrapes per rate window"
    assert alerts.prometheus_selector_labels == {"release": "kube-prometheus-stack"}
    assert alerts.runbook_base_url == "", "derived where the program runs (__main__.py)"
    assert alerts.mesh_certificates_dir == "/etc/prom-certs", "Istio's documented mount"


def test_dashboard_defaults_to_on_in_the_monitoring_namespace() -> None:
    dashboard = make_settings().dashboard
    assert (dashboard.enabled, dashboard.namespace) == (True, "monitoring")


def test_app_metrics_are_off_by_default_and_default_to_http_metrics() -> None:
    services = make_settings(
        services=[
            {"name": "a", "namespace": "s"},
            {"name": "b", "namespace": "s", "metrics": {}},
        ]
    ).services
    assert services[0].metrics is None
    metrics = services[1].metrics
    assert metrics is not None
    assert (metrics.port, metrics.path, metrics.interval) == ("http-metrics", "/metrics", "30s")


def test_for_is_spelled_as_in_prometheus() -> None:
    alerts = make_settings(alerts={"canaryErrorRate": {"for": "90s"}}).alerts
    assert alerts.canary_error_rate.for_ == "90s"


def test_duration_seconds() -> None:
    assert [prom_duration_seconds(d) for d in ("15s", "2m", "1m30s", "1h")] == [15, 120, 90, 3600]


def test_a_rate_window_of_exactly_four_scrapes_is_allowed() -> None:
    assert AlertsSettings.model_validate({"scrapeInterval": "30s", "rateWindow": "2m"})


# --- one test per error message -----------------------------------------------------------


def test_rate_window_shorter_than_four_scrapes() -> None:
    assert settings_error(alerts={"scrapeInterval": "30s"}) == (
        'meshstack:alerts.rateWindow = default "1m": must be at least 4 x scrapeInterval (30s) '
        "so rate() always has enough samples"
    )


def test_invalid_duration() -> None:
    assert settings_error(alerts={"canaryErrorRate": {"for": "2 minutes"}}) == (
        'meshstack:alerts.canaryErrorRate.for = "2 minutes": must be a positive duration '
        "in hours, minutes and seconds, e.g. 2m or 1m30s"
    )


def test_zero_duration() -> None:
    assert settings_error(alerts={"scrapeInterval": "0s"}).startswith(
        'meshstack:alerts.scrapeInterval = "0s": must be a positive duration'
    )


def test_error_ratio_above_one() -> None:
    assert settings_error(alerts={"canaryErrorRate": {"threshold": 5}}) == (
        "meshstack:alerts.canaryErrorRate.threshold = 5: must be less than 1"
    )


def test_zero_latency_threshold() -> None:
    assert settings_error(alerts={"canaryLatency": {"thresholdMs": 0}}) == (
        "meshstack:alerts.canaryLatency.thresholdMs = 0: must be greater than 0"
    )


def test_negative_circuit_breaker_threshold() -> None:
    assert settings_error(alerts={"circuitBreaker": {"threshold": -1}}) == (
        "meshstack:alerts.circuitBreaker.threshold = -1: must be greater than or equal to 0"
    )


def test_unknown_severity() -> None:
    assert settings_error(alerts={"canaryLatency": {"severity": "page"}}) == (
        "meshstack:alerts.canaryLatency.severity = \"page\": must be 'critical', 'warning' "
        "or 'info'"
    )


def test_runbook_url_must_be_https_without_fragment() -> None:
    expected = "must be an https:// URL without spaces or #fragment (the alert name is appended)"
    assert settings_error(alerts={"runbookBaseUrl": "http://wiki/rb"}) == (
        f'meshstack:alerts.runbookBaseUrl = "http://wiki/rb": {expected}'
    )
    assert settings_error(alerts={"runbookBaseUrl": "https://wiki/rb#x"}).endswith(expected)


def test_selector_label_value_invalid() -> None:
    assert settings_error(alerts={"prometheusSelectorLabels": {"release": "-x"}}).startswith(
        'meshstack:alerts.prometheusSelectorLabels.release = "-x": must be a Kubernetes label value'
    )


def test_misspelt_alert_key() -> None:
    assert settings_error(alerts={"canaryErrorRate": {"threshhold": 0.1}}) == (
        "meshstack:alerts.canaryErrorRate.threshhold is not a known setting; "
        "did you mean `threshold`?"
    )


def test_dashboard_namespace_invalid() -> None:
    assert settings_error(dashboard={"namespace": "Grafana"}).startswith(
        'meshstack:dashboard.namespace = "Grafana": must be a Kubernetes name'
    )


def test_metrics_port_name_invalid() -> None:
    expected = (
        "must be a Kubernetes port name: at most 15 lowercase letters, digits and '-', "
        "starting and ending with a letter or digit"
    )
    service = {"name": "a", "namespace": "s", "metrics": {"port": "http-metrics-endpoint"}}
    assert settings_error(services=[service]) == (
        f'meshstack:services[0] (a).metrics.port = "http-metrics-endpoint": {expected}'
    )


def test_metrics_path_must_be_absolute() -> None:
    service = {"name": "a", "namespace": "s", "metrics": {"path": "metrics"}}
    assert settings_error(services=[service]) == (
        'meshstack:services[0] (a).metrics.path = "metrics": must be an HTTP path starting '
        "with '/', without spaces"
    )


def test_mesh_certificates_dir_must_be_an_absolute_directory() -> None:
    expected = (
        "must be an absolute directory path without spaces or trailing '/', e.g. /etc/prom-certs"
    )
    assert settings_error(alerts={"meshCertificatesDir": "etc/prom-certs"}) == (
        f'meshstack:alerts.meshCertificatesDir = "etc/prom-certs": {expected}'
    )
    assert settings_error(alerts={"meshCertificatesDir": "/etc/prom-certs/"}).endswith(expected)


# --- the fixture stacks exercise every option ----------------------------------------------------


def _option_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or to_camel(name)}"
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            paths |= _option_paths(nested, f"{path}.")
        else:
            paths.add(path)
    return paths


def _set_paths(value: Any, prefix: str) -> set[str]:
    if not isinstance(value, dict):
        return {prefix}
    paths = {prefix}
    for key, item in value.items():
        if isinstance(item, dict) and not prefix.endswith("prometheusSelectorLabels"):
            paths |= _set_paths(item, f"{prefix}.{key}")
        else:
            paths.add(f"{prefix}.{key}")
    return paths


def test_the_fixture_stacks_exercise_every_alert_dashboard_and_metrics_option() -> None:
    used: set[str] = set()
    for stack in FIXTURES:
        config = fixture_config(stack)
        for key in ("alerts", "dashboard"):
            used |= _set_paths(config.get(f"meshstack:{key}", {}), key)
        for service in config.get("meshstack:services", []):
            if "metrics" in service:
                used |= _set_paths(service["metrics"], "metrics")
    expected = (
        _option_paths(AlertsSettings, "alerts.")
        | _option_paths(DashboardSettings, "dashboard.")
        | _option_paths(AppMetrics, "metrics.")
    )
    assert expected - used == set()
