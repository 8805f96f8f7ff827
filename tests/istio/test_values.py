"""Pure builders of the Istio Helm values: no engine, no mocks."""

from __future__ import annotations

from typing import Any

from components.istio import values as v
from components.istio.settings import IstioSettings
from tests.conftest import make_settings


def istio_settings(**config: Any) -> IstioSettings:
    """The mesh's slice of fixture stack settings built from these config keys."""
    return make_settings(**config).istio


def test_istiod_values_are_flat_and_carry_multicluster_identity() -> None:
    values = v.istiod_values(istio_settings(meshId="m1", clusterName="c1", network="n1"))
    assert "pilot" not in values, "istiod values are flat since 1.24"
    assert values["global"]["meshID"] == "m1"
    assert values["global"]["multiCluster"] == {"clusterName": "c1"}
    assert values["global"]["network"] == "n1"


def test_istiod_is_sized_for_production() -> None:
    values = v.istiod_values(istio_settings(istiodReplicas=3, istiodMaxReplicas=7))
    assert values["autoscaleEnabled"] is True
    assert (values["autoscaleMin"], values["autoscaleMax"]) == (3, 7)
    assert "replicaCount" not in values  # the chart ignores it when autoscaling
    assert set(values["resources"]) == {"requests", "limits"}
    assert set(values["global"]["proxy"]["resources"]) == {"requests", "limits"}


def test_pdb_never_blocks_a_drain() -> None:
    values = v.istiod_values(istio_settings())
    assert values["pdb"] == {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"}
    gateway = v.gateway_values(istio_settings(), v.INGRESS)
    assert gateway["podDisruptionBudget"]["maxUnavailable"] == 1


def test_webhook_failure_policy_is_pinned_for_chart_v4() -> None:
    assert v.istiod_values(istio_settings())["base"] == {"validationFailurePolicy": "Fail"}


def test_access_logs_are_a_json_provider_not_mesh_config_files() -> None:
    """Access logging goes through the Telemetry API only (components.istio.tracing)."""
    for access_logging in (True, False):
        config = v.mesh_config(istio_settings(accessLogging=access_logging))
        assert "accessLogFile" not in config
        assert "accessLogEncoding" not in config
        assert config["extensionProviders"] == [
            {
                "name": "envoy-json",
                "envoyFileAccessLog": {"path": "/dev/stdout", "logFormat": {"labels": {}}},
            }
        ]


def test_tracing_target_becomes_an_opentelemetry_provider() -> None:
    values = v.istiod_values(istio_settings(), "jaeger.obs.svc.cluster.local", 4317)
    providers = values["meshConfig"]["extensionProviders"]
    assert providers[0] == {
        "name": "jaeger-otlp",
        "opentelemetry": {"service": "jaeger.obs.svc.cluster.local", "port": 4317},
    }


def test_proxy_stats_matcher_comes_from_settings() -> None:
    config = v.mesh_config(istio_settings(proxyStatsInclusionRegexps=[".*foo.*"]))
    assert config["defaultConfig"]["proxyStatsMatcher"] == {"inclusionRegexps": [".*foo.*"]}


def test_revision_is_set_on_istiod_gateways_and_injection_labels() -> None:
    settings = istio_settings(
        istioRevisions=[{"name": "1-30", "version": "1.30.4", "tags": ["default"]}]
    )
    assert v.istiod_values(settings)["revision"] == "1-30"
    assert v.gateway_values(settings, v.EGRESS)["revision"] == "1-30"
    assert v.base_values(settings)["defaultRevision"] == "1-30"
    assert v.injection_labels("1-30") == {"istio.io/rev": "1-30"}


def test_default_revision_uses_istio_injection_label() -> None:
    settings = istio_settings()
    assert "revision" not in v.istiod_values(settings)
    assert "revision" not in v.gateway_values(settings, v.INGRESS)
    assert v.injection_labels("") == {"istio-injection": "enabled"}


def test_gateways_select_by_explicit_istio_label() -> None:
    ingress = v.gateway_values(istio_settings(), v.INGRESS)
    assert ingress["labels"]["istio"] == "ingressgateway"
    assert v.gateway_selector(v.INGRESS) == {"istio": "ingressgateway"}
    assert ingress["service"]["type"] == "LoadBalancer"
    assert v.gateway_values(istio_settings(), v.EGRESS)["service"]["type"] == "ClusterIP"


def test_stable_validation_policy_stays_off_so_envoyfilters_are_admitted() -> None:
    assert v.base_values(istio_settings())["experimental"] == {"stableValidationPolicy": False}


def test_istio_namespace_is_labelled_with_its_network() -> None:
    labels = v.istio_namespace_labels(istio_settings(network="net-a"))
    assert labels == {"topology.istio.io/network": "net-a"}


def test_gateways_install_in_order_and_follow_settings() -> None:
    assert v.gateways(istio_settings()) == (v.INGRESS, v.EGRESS, v.EASTWEST)
    no_extras = istio_settings(egressGateway=False, eastWestGateway=False)
    assert v.gateways(no_extras) == (v.INGRESS,)


def test_east_west_gateway_carries_the_network() -> None:
    values = v.gateway_values(istio_settings(network="net-a"), v.EASTWEST)
    assert values["networkGateway"] == "net-a"
    # The chart labels pods and Service with `topology.istio.io/network` from
    # `networkGateway` (deployment.yaml, service.yaml); setting it in `labels` as well
    # renders the key twice in one mapping, which strict YAML decoders reject.
    assert "topology.istio.io/network" not in values["labels"]
    assert values["labels"]["istio"] == "eastwestgateway"
    assert "annotations" not in values["service"]
    assert "networkGateway" not in v.gateway_values(istio_settings(), v.INGRESS)


def test_east_west_service_annotations_come_from_settings() -> None:
    annotations = {"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}
    settings = istio_settings(eastWestGatewayServiceAnnotations=annotations)
    assert v.gateway_values(settings, v.EASTWEST)["service"]["annotations"] == annotations
    assert "annotations" not in v.gateway_values(settings, v.INGRESS)["service"]


def test_cross_network_gateway_passes_mtls_through_for_mesh_services_only() -> None:
    spec = v.cross_network_gateway_spec()
    assert spec["selector"] == {"istio": "eastwestgateway"}
    (server,) = spec["servers"]
    assert server["port"]["number"] == 15443
    assert server["tls"] == {"mode": "AUTO_PASSTHROUGH"}
    assert server["hosts"] == ["*.local"]


def test_per_region_infrastructure_is_cluster_local() -> None:
    settings = istio_settings(
        rateLimit={"quota": {"enabled": True, "namespace": "quotas"}},
        clusterLocalHosts=["admin.shop.svc.cluster.local"],
    )
    (service_settings,) = v.mesh_config(settings)["serviceSettings"]
    assert service_settings["settings"] == {"clusterLocal": True}
    assert service_settings["hosts"] == [
        "*.flagger-system.svc.cluster.local",
        "*.quotas.svc.cluster.local",
        "admin.shop.svc.cluster.local",
    ]
    hosts = v.mesh_config(istio_settings())["serviceSettings"][0]["hosts"]
    assert hosts == ["*.flagger-system.svc.cluster.local"], "no ratelimit without quotas"


def test_ingress_controller_exception_opens_one_port_of_the_selected_pods_only() -> None:
    spec = v.ingress_controller_exception_spec({"app": "ui"}, 8080)
    assert spec == {
        "selector": {"matchLabels": {"app": "ui"}},
        "mtls": {"mode": "STRICT"},
        "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}},
    }


def test_istio_slice_applies_the_cluster_and_network_defaults() -> None:
    settings = make_settings(
        services=[{"name": "a", "namespace": "shop"}], workloadNamespaces=["x"]
    )
    istio = settings.istio
    assert (istio.cluster_name, istio.network) == ("test-region", "network-test-region")
    assert istio.workload_namespaces == ("shop", "x")
    assert istio.cluster_local_hosts == settings.cluster_local_service_hosts
