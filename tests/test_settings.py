"""Settings: documented defaults, and one test per error message."""

from __future__ import annotations

import pytest

from components.settings import SettingsError, StackSettings, load_settings
from tests.conftest import make_settings, settings_error

# --- defaults -----------------------------------------------------------------------------


def test_defaults_are_production_ready() -> None:
    settings = make_settings()
    assert settings.mesh_id == "meshstack"
    assert settings.istiod_replicas == 2, "one istiod replica blocks node drains"
    assert settings.gateway_replicas == 2
    assert settings.access_logging is True
    assert settings.egress_gateway is True
    assert settings.east_west_gateway is True, "regions are separate networks"
    assert settings.east_west_gateway_service_annotations == {}
    assert settings.istio_revisions == ()
    assert settings.namespace_revisions == {}
    assert settings.services == ()


def test_cluster_name_and_network_default_from_region() -> None:
    settings = make_settings()
    assert settings.effective_cluster_name == "test-region"
    assert settings.effective_network == "network-test-region"
    explicit = make_settings(clusterName="c1", network="n1")
    assert (explicit.effective_cluster_name, explicit.effective_network) == ("c1", "n1")


def test_proxy_stats_default_exports_circuit_breaker_and_rate_limit_stats() -> None:
    regexps = make_settings().proxy_stats_inclusion_regexps
    for stat in ("outlier_detection", "upstream_rq_pending_overflow", "http_local_rate_limit"):
        assert any(stat in r for r in regexps), stat


def test_service_defaults_one_stable_version_labelled_for_telemetry() -> None:
    service = make_settings(services=[{"name": "a", "namespace": "shop"}]).services[0]
    assert service.port == 8080
    assert service.protocol == "http"
    assert [(v.name, v.labels) for v in service.versions] == [("stable", {"version": "stable"})]


def test_namespaces_are_those_of_services_plus_extra_sorted_and_unique() -> None:
    settings = make_settings(
        services=[{"name": "a", "namespace": "shop"}, {"name": "b", "namespace": "bank"}],
        workloadNamespaces=["shop", "jobs"],
    )
    assert settings.namespaces == ("bank", "jobs", "shop")


def test_settings_are_frozen() -> None:
    settings = make_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.region = "other"  # type: ignore[misc]


def test_string_settings_are_not_json_decoded() -> None:
    assert load_settings({"meshstack:region": "x", "meshstack:meshId": "123"}).mesh_id == "123"


def test_other_namespaces_and_secret_keys_are_ignored() -> None:
    settings = load_settings(
        {
            "meshstack:region": "x",
            "meshstack:kubeconfig": "[secret]",
            "kubernetes:context": "c",
            "pulumi:disable-default-providers": '["kubernetes"]',
        }
    )
    assert isinstance(settings, StackSettings)


# --- one test per error message -----------------------------------------------------------


def test_missing_region() -> None:
    with pytest.raises(SettingsError, match=r"^meshstack:region is required but not set$"):
        load_settings({})


def test_unknown_key_is_a_typo_not_a_default() -> None:
    assert settings_error(servics=[]) == (
        "meshstack:servics is not a known setting; did you mean `services`?"
    )


def test_invalid_kubernetes_name() -> None:
    assert settings_error(region="US_East").startswith(
        'meshstack:region = "US_East": must be a Kubernetes name: lowercase letters'
    )


def test_invalid_label_value() -> None:
    message = settings_error(
        services=[
            {"name": "a", "namespace": "s", "versions": [{"name": "v", "labels": {"k": "-x"}}]}
        ]
    )
    assert message.startswith('meshstack:services[0] (a).versions[0].labels.k = "-x": must be a')
    assert "label value" in message


def test_port_out_of_range() -> None:
    assert settings_error(services=[{"name": "a", "namespace": "s", "port": 70000}]) == (
        "meshstack:services[0] (a).port = 70000: must be less than or equal to 65535"
    )


def test_unknown_protocol() -> None:
    assert settings_error(services=[{"name": "a", "namespace": "s", "protocol": "tcp"}]) == (
        "meshstack:services[0] (a).protocol = \"tcp\": must be 'http', 'http2' or 'grpc'"
    )


def test_single_istiod_replica_rejected() -> None:
    assert settings_error(istiodReplicas=1) == (
        "meshstack:istiodReplicas = 1: must be greater than or equal to 2"
    )


def test_istiod_ceiling_below_floor() -> None:
    assert settings_error(istiodReplicas=4, istiodMaxReplicas=3) == (
        "meshstack:istiodMaxReplicas = 3: must be >= istiodReplicas (4)"
    )


def test_gateway_ceiling_below_floor() -> None:
    assert settings_error(gatewayReplicas=4, gatewayMaxReplicas=3) == (
        "meshstack:gatewayMaxReplicas = 3: must be >= gatewayReplicas (4)"
    )


def test_duplicate_service() -> None:
    assert (
        settings_error(services=[{"name": "a", "namespace": "s"}, {"name": "a", "namespace": "s"}])
        == "meshstack:services[1] (a).name = \"a\": must be unique in namespace 's'; it is repeated"
    )


def test_duplicate_version() -> None:
    assert (
        settings_error(
            services=[{"name": "a", "namespace": "s", "versions": [{"name": "v1"}, {"name": "v1"}]}]
        )
        == 'meshstack:services[0] (a).versions[1].name = "v1": must be unique; it is repeated'
    )


def test_former_istio_revision_key_says_what_to_write_instead() -> None:
    assert settings_error(istioRevision="canary") == (
        'meshstack:istioRevision = "canary": is replaced by istioRevisions: write '
        "istioRevisions: [{name: canary, version: 1.30.4, tags: [default]}] (docs/upgrades.md)"
    )


def test_wrong_type() -> None:
    assert settings_error(accessLogging="maybe").startswith(
        'meshstack:accessLogging = "maybe": must be true or false'
    )


def test_several_errors_are_one_line_each() -> None:
    assert settings_error(istiodReplicas=1, gatewayReplicas=1).splitlines() == [
        "meshstack:istiodReplicas = 1: must be greater than or equal to 2",
        "meshstack:gatewayReplicas = 1: must be greater than or equal to 2",
    ]


def test_prometheus_url_defaults_to_the_operator_service() -> None:
    settings = make_settings()
    assert settings.prometheus_url == "http://prometheus-operated.monitoring.svc.cluster.local:9090"
    assert settings.observability_namespace == "observability"


def test_prometheus_url_must_be_http() -> None:
    assert settings_error(prometheusUrl="ftp://p:9090").startswith(
        'meshstack:prometheusUrl = "ftp://p:9090": must match pattern'
    )


def test_cluster_local_host_must_be_an_in_cluster_service_host() -> None:
    assert settings_error(clusterLocalHosts=["admin.example.com"]) == (
        'meshstack:clusterLocalHosts[0] = "admin.example.com": must be an in-cluster service '
        "host `<name>.<namespace>.svc.cluster.local`, or `*.<namespace>.svc.cluster.local` "
        "for a whole namespace"
    )
