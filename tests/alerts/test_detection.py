"""Alert settings that decide how fast an alert can fire: documented defaults of the
control-plane alerts, and one test per error message of the detection-time rules."""

from __future__ import annotations

import pytest

from components.alerts.settings import circuit_breaker_detection_error
from tests.conftest import make_settings, settings_error


def test_control_plane_alert_defaults_are_documented() -> None:
    plane = make_settings().alerts.control_plane
    assert (plane.unavailable_for, plane.unavailable_severity) == ("2m", "critical")
    assert (plane.window, plane.push_errors, plane.severity) == ("5m", 0, "warning")
    assert (plane.convergence_seconds, plane.convergence_for) == (10, "5m")


def test_a_circuit_breaker_for_that_cannot_fire_within_a_minute_is_rejected() -> None:
    # eu-west-1's former `for: 2m`: a single ejection would have left increase() long before.
    assert settings_error(alerts={"circuitBreaker": {"for": "2m"}}) == (
        'meshstack:alerts.circuitBreaker.for = "2m": must be at most 30s: rules are evaluated '
        "every 30s, so a longer `for` cannot fire on a single ejection within 60s of the "
        "scrape that shows it"
    )


def test_a_rate_window_that_drops_a_single_ejection_before_the_alert_fires_is_rejected() -> None:
    # 30s `for` needs the ejection in increase() for 15s + 30s + 30s; a 1m window holds 45s.
    assert settings_error(alerts={"circuitBreaker": {"for": "30s"}}) == (
        'meshstack:alerts.rateWindow = default "1m": must be at least 75s (scrapeInterval 15s '
        "+ 30s evaluation + circuitBreaker.for 30s) so a single ejection is still in increase() "
        "when CircuitBreakerTriggered fires"
    )


def test_a_circuit_breaker_for_that_is_no_duration_is_rejected() -> None:
    assert settings_error(alerts={"circuitBreaker": {"for": "1 minute"}}) == (
        'meshstack:alerts.circuitBreaker.for = "1 minute": must be a duration in hours, '
        "minutes and seconds, e.g. 0s, 30s or 2m"
    )


def test_a_control_plane_window_shorter_than_four_scrapes_is_rejected() -> None:
    assert settings_error(alerts={"controlPlane": {"window": "30s"}}) == (
        'meshstack:alerts.controlPlane.window = "30s": must be at least 4 x scrapeInterval '
        "(15s) so increase() always has enough samples"
    )


def test_a_convergence_threshold_at_istiods_largest_bucket_is_rejected() -> None:
    # histogram_quantile() never exceeds the largest finite bucket (30s): it could never fire.
    assert settings_error(alerts={"controlPlane": {"convergenceSeconds": 30}}) == (
        "meshstack:alerts.controlPlane.convergenceSeconds = 30: must be less than 30"
    )


@pytest.mark.parametrize(
    ("for_", "window", "scrape"),
    [("0s", "1m", "15s"), ("0s", "2m", "30s"), ("30s", "2m", "15s"), ("30s", "2m", "30s")],
)
def test_circuit_breaker_timings_that_fire_within_a_minute_are_accepted(
    for_: str, window: str, scrape: str
) -> None:
    alerts = make_settings(
        alerts={"circuitBreaker": {"for": for_}, "rateWindow": window, "scrapeInterval": scrape}
    ).alerts
    assert alerts.circuit_breaker.for_ == for_
    assert circuit_breaker_detection_error(for_, window, scrape) is None
