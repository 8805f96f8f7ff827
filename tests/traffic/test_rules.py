"""The traffic rules as plain functions over the settings parts they read, without a stack.

Every rule's message is checked through `make_settings` in test_traffic_settings.py; these
tests call the functions with narrow arguments, as the root model does, and check the key
path each reports and the first-error order."""

from __future__ import annotations

import pytest

from components.settings_types import RuleViolationError
from components.traffic.rules import (
    check_canary_subsets,
    check_ejection_detection_bound,
    check_service_traffic,
    host_matches,
)
from components.traffic.settings import CanarySettings, ServiceTraffic, TrafficSettings
from tests.conftest import make_settings


def canary(*weights: tuple[str, int]) -> CanarySettings:
    return CanarySettings.model_validate(
        {"weights": [{"subset": s, "weight": w} for s, w in weights]}
    )


@pytest.mark.parametrize(
    ("host", "pattern", "covered"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "*.example.com", True),
        ("example.com", "*.example.com", False),
        ("*.example.com", "*.example.com", False),
        ("api.example.org", "*.example.com", False),
        ("www.api.example.com", "api.example.com", False),
    ],
)
def test_gateway_host_patterns(host: str, pattern: str, covered: bool) -> None:
    assert host_matches(host, pattern) is covered


def test_canary_weights_must_name_versions() -> None:
    check_canary_subsets(canary(("stable", 90), ("canary", 10)), {"stable", "canary"})
    with pytest.raises(RuleViolationError) as caught:
        check_canary_subsets(canary(("stable", 90), ("beta", 10)), {"stable", "canary"})
    assert caught.value.path == ("traffic", "canary", "weights", 1, "subset")
    assert caught.value.message == "must be a version of the service (canary, stable)"


def test_progressive_ownership_is_reported_before_canary_subsets() -> None:
    traffic = ServiceTraffic.model_validate(
        {"canary": {"weights": [{"subset": "beta", "weight": 100}]}}
    )
    check_service_traffic(traffic, delivery="static", versions={"beta"})
    with pytest.raises(RuleViolationError) as caught:
        check_service_traffic(traffic, delivery="progressive", versions={"stable"})
    assert caught.value.path == ("traffic", "canary")


def test_ejection_bound_reports_the_subset_policy_that_breaks_it() -> None:
    settings = make_settings(
        services=[
            {
                "name": "api",
                "namespace": "shop",
                "versions": [{"name": "stable"}, {"name": "canary"}],
                "traffic": {
                    "subsetPolicies": {"canary": {"outlierDetection": {"consecutive5xxErrors": 40}}}
                },
            }
        ]
    )
    [service] = settings.services
    # 40 errors x 1s gap = 40s: inside 1m, outside 30s.
    check_ejection_detection_bound(("services", 3), service, TrafficSettings())
    tight = TrafficSettings(ejection_detection_bound="30s")
    with pytest.raises(RuleViolationError) as caught:
        check_ejection_detection_bound(("services", 3), service, tight)
    assert caught.value.path == (
        "services",
        3,
        "traffic",
        "subsetPolicies",
        "canary",
        "outlierDetection",
        "consecutive5xxErrors",
    )
    assert caught.value.message.startswith("ejection detection 40s")
