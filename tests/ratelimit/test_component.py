"""RateLimiter: settings, the quota service's Kubernetes objects, and the component."""

from __future__ import annotations

from typing import Any

import pytest

from components.istio.component import IstioMesh
from components.ratelimit import specs
from components.ratelimit.component import RateLimiter
from components.ratelimit.settings import QuotaSettings
from components.versions import RATELIMIT_IMAGE, REDIS_IMAGE
from tests.conftest import (
    by_name,
    make_settings,
    run_with_provider,
    settings_error,
    stack_settings,
)
from tools.manifests import SECRET_PLACEHOLDER
from tools.verify import validate_manifest

QUOTA = {
    "enabled": True,
    "tiers": [
        {"name": "free", "requestsPerUnit": 60, "unit": "minute"},
        {"name": "pro", "requestsPerUnit": 100, "unit": "second"},
    ],
    "clients": [{"id": "acme", "tier": "pro"}],
}
SETTINGS = make_settings(
    identityProviders={"auth": {"issuer": "https://auth.x", "jwksUri": "https://auth.x/jwks"}},
    services=[
        {
            "name": "api",
            "namespace": "shop",
            "rateLimit": {"routes": [{"pathPrefix": "/status", "requestsPerSecond": 5000}]},
            # Known quota clients are named by a verified claim of this provider's tokens.
            "jwt": {"provider": "auth"},
        },
        {"name": "web", "namespace": "shop", "port": 9000},
    ],
    rateLimit={"quota": QUOTA},
)


# --- settings -------------------------------------------------------------------------------


def test_defaults() -> None:
    rate_limit = make_settings().rate_limit
    assert rate_limit.local.enabled is True
    assert rate_limit.local.requests_per_second == 1000
    assert rate_limit.local.enforced_percent == 100
    quota = rate_limit.quota
    assert quota.enabled is False, "regions opt in to the quota service"
    assert quota.failure_mode_deny is False, "fail open: a quota outage is no API outage"
    assert quota.timeout_ms == 100
    assert quota.client_header == "x-client-id"
    assert [t.name for t in quota.tiers] == ["free"]
    assert (quota.unknown_client_tier, quota.anonymous_tier) == ("free", "free")
    assert quota.replicas == 2


def test_quota_namespace_is_a_workload_namespace_only_when_enabled() -> None:
    assert "ratelimit" in SETTINGS.namespaces
    assert "ratelimit" not in make_settings().namespaces


def test_repeated_route_prefix() -> None:
    routes = [{"pathPrefix": "/a", "requestsPerSecond": 1}] * 2
    assert settings_error(
        services=[{"name": "a", "namespace": "n", "rateLimit": {"routes": routes}}]
    ) == (
        'meshstack:services[0] (a).rateLimit.routes[1].pathPrefix = "/a": must be unique; it is '
        "repeated"
    )


def test_limited_tier_needs_requests() -> None:
    quota = {"tiers": [{"name": "free", "requestsPerUnit": 0}]}
    assert settings_error(rateLimit={"quota": quota}) == (
        "meshstack:rateLimit.quota.tiers[0].requestsPerUnit = 0: must be >= 1 unless "
        "unlimited is true"
    )


def test_repeated_tier() -> None:
    tier = {"name": "free", "requestsPerUnit": 1}
    assert settings_error(rateLimit={"quota": {"tiers": [tier, tier]}}) == (
        'meshstack:rateLimit.quota.tiers[1].name = "free": must be unique; it is repeated'
    )


def test_a_new_tier_keeps_the_default_tier_without_restating_it() -> None:
    # anonymousTier and unknownClientTier default to `free`: listing only `pro` used to
    # drop `free` and fail on both.
    pro = {"name": "pro", "requestsPerUnit": 100, "unit": "second"}
    quota = make_settings(rateLimit={"quota": {"tiers": [pro]}}).rate_limit.quota
    assert [(t.name, t.requests_per_unit, t.unit) for t in quota.tiers] == [
        ("free", 60, "minute"),
        ("pro", 100, "second"),
    ]
    assert quota.tier(quota.anonymous_tier).requests_per_unit == 60


def test_a_restated_default_tier_replaces_it() -> None:
    free = {"name": "free", "requestsPerUnit": 10, "unit": "second"}
    quota = make_settings(rateLimit={"quota": {"tiers": [free]}}).rate_limit.quota
    assert [(t.name, t.requests_per_unit, t.unit) for t in quota.tiers] == [("free", 10, "second")]


def test_repeated_added_tier_is_named_at_its_index_in_the_stack_file() -> None:
    tier = {"name": "pro", "requestsPerUnit": 1}
    assert settings_error(rateLimit={"quota": {"tiers": [tier, tier]}}) == (
        'meshstack:rateLimit.quota.tiers[1].name = "pro": must be unique; it is repeated'
    )


SCOPE = {
    "name": "search",
    "pathPrefixes": ["/search/"],
    "tiers": [{"name": "free", "requestsPerUnit": 5}],
}


def test_a_scope_names_a_host_or_a_path() -> None:
    scope = {**SCOPE, "pathPrefixes": []}
    assert settings_error(rateLimit={"quota": {"scopes": [scope]}}) == (
        "meshstack:rateLimit.quota.scopes[0].hosts is not set: must name a host, or pathPrefixes a "
        "prefix: a scope of every request is the region-wide quota (`tiers`)"
    )


def test_a_scope_limits_tiers_of_the_quota_that_some_request_is_in() -> None:
    gold = {**SCOPE, "tiers": [{"name": "gold", "requestsPerUnit": 5}]}
    assert settings_error(rateLimit={"quota": {"scopes": [gold]}}) == (
        'meshstack:rateLimit.quota.scopes[0].tiers[0].name = "gold": must be one of the '
        "tiers ['free']"
    )
    pro = {**SCOPE, "tiers": [{"name": "pro", "requestsPerUnit": 5}]}
    quota = {"tiers": [{"name": "pro", "requestsPerUnit": 9}], "scopes": [pro]}
    assert settings_error(rateLimit={"quota": quota}) == (
        'meshstack:rateLimit.quota.scopes[0].tiers = ["pro"]: must list a tier some request '
        "is in (['free']: the clients', unknownClientTier, anonymousTier); else the scope "
        "limits nobody"
    )


def test_a_scopes_hosts_and_prefixes_do_not_overlap() -> None:
    # One rate limit per host and prefix: a request matching two would count twice.
    prefixes = {**SCOPE, "pathPrefixes": ["/search/", "/search/deep"]}
    assert settings_error(rateLimit={"quota": {"scopes": [prefixes]}}) == (
        'meshstack:rateLimit.quota.scopes[0].pathPrefixes[1] = "/search/deep": must not '
        "overlap '/search/': a request would count twice"
    )
    hosts = {**SCOPE, "hosts": ["*.example.com", "api.example.com"]}
    assert settings_error(rateLimit={"quota": {"scopes": [hosts]}}) == (
        'meshstack:rateLimit.quota.scopes[0].hosts[1] = "api.example.com": must not '
        "overlap '*.example.com': a request would count twice"
    )


def test_a_scopes_host_is_served_by_a_gateway() -> None:
    scope = {**SCOPE, "hosts": ["api.example.org"]}
    gateways = [{"name": "public", "hosts": ["*.example.com"], "credentialName": "tls"}]
    assert settings_error(
        rateLimit={"quota": {"scopes": [scope]}}, traffic={"gateways": gateways}
    ) == (
        'meshstack:rateLimit.quota.scopes[0].hosts[0] = "api.example.org": must be served by '
        "a gateway of traffic.gateways (['*.example.com'])"
    )
    served = make_settings(
        rateLimit={"quota": {"scopes": [{**scope, "hosts": ["a.b.example.com"]}]}},
        traffic={"gateways": gateways},
    )
    assert served.rate_limit.quota.scopes[0].hosts == ("a.b.example.com",)


def test_repeated_client() -> None:
    clients = [{"id": "a", "tier": "free"}] * 2
    assert settings_error(rateLimit={"quota": {"clients": clients}}) == (
        'meshstack:rateLimit.quota.clients[1].id = "a": must be unique; it is repeated'
    )


def test_client_of_unknown_tier() -> None:
    clients = [{"id": "a", "tier": "gold"}]
    assert settings_error(rateLimit={"quota": {"clients": clients}}) == (
        "meshstack:rateLimit.quota.clients[0].tier = \"gold\": must be one of the tiers ['free']"
    )


def test_unknown_client_tier_must_exist() -> None:
    assert settings_error(rateLimit={"quota": {"unknownClientTier": "gold"}}) == (
        "meshstack:rateLimit.quota.unknownClientTier = \"gold\": must be one of the tiers ['free']"
    )


def test_anonymous_tier_must_exist() -> None:
    assert settings_error(rateLimit={"quota": {"anonymousTier": "gold"}}) == (
        "meshstack:rateLimit.quota.anonymousTier = \"gold\": must be one of the tiers ['free']"
    )


def test_client_header_must_be_a_lowercase_header_name() -> None:
    assert settings_error(rateLimit={"quota": {"clientHeader": "X-Client"}}).startswith(
        'meshstack:rateLimit.quota.clientHeader = "X-Client": must be a lowercase HTTP header'
    )


def test_known_clients_need_a_jwt_issuer() -> None:
    assert settings_error(rateLimit={"quota": QUOTA}) == (
        'meshstack:rateLimit.quota.clients = ["acme"]: need a JWT issuer (services[].jwt) '
        "to identify clients at the gateway; without one every request is anonymous"
    )


def test_client_claim_must_be_a_claim_name() -> None:
    assert settings_error(rateLimit={"quota": {"clientClaim": "client id"}}) == (
        'meshstack:rateLimit.quota.clientClaim = "client id": must match pattern '
        "'^[A-Za-z_][A-Za-z0-9_.-]{0,127}$'"
    )


# --- Kubernetes objects of the quota service ---------------------------------------------------


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec["template"]["spec"]["containers"])


def test_ratelimit_deployment_environment() -> None:
    (container,) = _containers(specs.ratelimit_deployment_spec(QuotaSettings(namespace="rl")))
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["REDIS_SOCKET_TYPE"] == "tcp"
    assert env["REDIS_URL"] == "redis.rl.svc.cluster.local:6379"
    assert env["RUNTIME_ROOT"] == "/data"
    assert env["RUNTIME_SUBDIRECTORY"] == "ratelimit"
    assert env["RUNTIME_WATCH_ROOT"] == "false"
    assert env["RUNTIME_IGNOREDOTFILES"] == "true"
    assert env["USE_STATSD"] == "false"
    assert env["USE_PROMETHEUS"] == "true"
    assert env["PROMETHEUS_ADDR"] == ":9090"
    assert env["REDIS_AUTH"] == {
        "secretKeyRef": {"name": specs.REDIS_SECRET_NAME, "key": specs.REDIS_SECRET_KEY}
    }
    mount = container["volumeMounts"][0]
    assert mount["mountPath"] == "/data/ratelimit/config", "RUNTIME_ROOT/SUBDIRECTORY/config"


def test_containers_are_pinned_sized_probed_and_locked_down() -> None:
    deployments = [specs.ratelimit_deployment_spec(QuotaSettings()), specs.redis_deployment_spec()]
    images = set()
    for spec in deployments:
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in _containers(spec):
            images.add(container["image"])
            assert ":" in container["image"].rsplit("/", 1)[-1]
            assert not container["image"].endswith(":latest")
            assert set(container["resources"]) == {"requests", "limits"}
            assert container["readinessProbe"] and container["livenessProbe"]
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
    assert images == {RATELIMIT_IMAGE, REDIS_IMAGE}


def test_images_are_pinned_by_tag() -> None:
    assert RATELIMIT_IMAGE == "docker.io/envoyproxy/ratelimit:f2fb1577", "commit-SHA tag"
    assert REDIS_IMAGE.startswith("docker.io/library/redis:7.")


def test_redis_requires_the_password_from_the_secret() -> None:
    (container,) = _containers(specs.redis_deployment_spec())
    assert container["args"][:2] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == specs.REDIS_SECRET_NAME


def test_grpc_port_is_named_for_istio() -> None:
    ports = {p["port"]: p["name"] for p in specs.ratelimit_service_spec()["ports"]}
    assert ports[8081].startswith("grpc-")
    assert ports[9090].startswith("http-")
    assert specs.redis_service_spec()["ports"][0]["name"].startswith("tcp-")


def test_quota_namespace_opens_only_gateway_to_ratelimit_and_ratelimit_to_redis() -> None:
    policies = specs.ratelimit_allow_specs("rl", "cluster.local/ns/gw/sa/gw")
    gateway = policies["allow-gateway-to-ratelimit"]["rules"][0]
    assert gateway["from"][0]["source"]["principals"] == ["cluster.local/ns/gw/sa/gw"]
    assert gateway["to"][0]["operation"]["ports"] == ["8081"]
    redis = policies["allow-ratelimit-to-redis"]["rules"][0]
    assert redis["from"][0]["source"]["principals"] == ["cluster.local/ns/rl/sa/ratelimit"]
    assert redis["to"][0]["operation"]["ports"] == ["6379"]


# --- the component --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def render():  # type: ignore[no-untyped-def]
    def build(opts: Any) -> None:
        mesh = IstioMesh("m", SETTINGS.istio, opts=opts)
        RateLimiter("rl", mesh, SETTINGS.rate_limit, services=SETTINGS.services, opts=opts)

    return run_with_provider(build)


def test_children_are_parented(render) -> None:  # type: ignore[no-untyped-def]
    names = by_name(render)
    component = names["rl"]
    assert component.type == "meshstack:ratelimit:RateLimiter"
    children = [r for r in render.registrations if r.parent == component.urn]
    assert {c.name for c in children} == {
        "rl-shop-api-local",
        "rl-shop-web-local",
        "rl-redis-password",
        "rl-redis-secret",
        "rl-config",
        "rl-ratelimit-sa",
        "rl-redis-sa",
        "rl-redis",
        "rl-redis-service",
        "rl-ratelimit",
        "rl-ratelimit-service",
        "rl-ratelimit-pdb",
        "rl-allow-gateway-to-ratelimit",
        "rl-allow-ratelimit-to-redis",
        "rl-gateway-filter",
        "rl-gateway-actions",
    }


def test_custom_resources_wait_for_istiod(render) -> None:  # type: ignore[no-untyped-def]
    names = by_name(render)
    for name in ("rl-shop-api-local", "rl-gateway-filter", "rl-allow-gateway-to-ratelimit"):
        assert names["m-istiod"].urn in names[name].dependencies, name
        assert names[name].inputs["apiVersion"] in {
            "networking.istio.io/v1alpha3",
            "security.istio.io/v1",
        }


def test_objects_land_in_their_namespaces_after_the_namespace_exists(render) -> None:  # type: ignore[no-untyped-def]
    names = by_name(render)
    assert names["m-ns-ratelimit"].urn in names["rl-ratelimit"].dependencies
    assert names["rl-ratelimit"].inputs["metadata"]["namespace"] == "ratelimit"
    assert names["m-ns-shop"].urn in names["rl-shop-api-local"].dependencies
    assert names["rl-shop-api-local"].inputs["metadata"]["namespace"] == "shop"
    assert names["rl-gateway-filter"].inputs["metadata"]["namespace"] == "istio-ingress"


def test_gateway_filters_select_the_mesh_ingress_gateway(render) -> None:  # type: ignore[no-untyped-def]
    names = by_name(render)
    selector = names["m-ingress-gateway"].inputs["values"]["labels"]
    for name in ("rl-gateway-filter", "rl-gateway-actions"):
        labels = names[name].inputs["spec"]["workloadSelector"]["labels"]
        assert labels.items() <= selector.items()


def test_redis_password_is_a_pulumi_secret(render) -> None:  # type: ignore[no-untyped-def]
    names = by_name(render)
    assert names["rl-redis-password"].type == "random:index/randomPassword:RandomPassword"
    assert names["rl-redis-password"].inputs["length"] == 32
    assert names["rl-redis-secret"].inputs["stringData"] == SECRET_PLACEHOLDER
    assert names["rl-redis-password"].urn in names["rl-redis-secret"].dependencies
    assert names["rl-redis-secret"].urn in names["rl-ratelimit"].dependencies


def test_service_without_routes_gets_only_the_filter(render) -> None:  # type: ignore[no-untyped-def]
    names = by_name(render)
    web = names["rl-shop-web-local"].inputs["spec"]["configPatches"]
    api = names["rl-shop-api-local"].inputs["spec"]["configPatches"]
    assert [p["applyTo"] for p in web] == ["HTTP_FILTER"]
    assert [p["applyTo"] for p in api] == ["HTTP_FILTER", "VIRTUAL_HOST"]


def test_every_object_validates(render) -> None:  # type: ignore[no-untyped-def]
    objects = render.kubernetes_objects()
    for rendered in objects:
        obj = rendered
        if obj["kind"] == "Secret":
            assert obj["stringData"] == SECRET_PLACEHOLDER
            # The password is unknown before deploy; validate the object with its one key.
            obj = {**obj, "stringData": {specs.REDIS_SECRET_KEY: "redacted"}}
        assert validate_manifest(obj) == [], obj["metadata"]["name"]
    kinds = {o["kind"] for o in objects}
    assert {"EnvoyFilter", "AuthorizationPolicy", "Deployment", "Service", "ConfigMap"} <= kinds
    assert {"Secret", "ServiceAccount"} <= kinds


def test_local_part_can_be_switched_off() -> None:
    settings = make_settings(
        services=[{"name": "a", "namespace": "n"}], rateLimit={"local": {"enabled": False}}
    )

    def build(opts: Any) -> None:
        mesh = IstioMesh("m", settings.istio, opts=opts)
        RateLimiter("rl", mesh, settings.rate_limit, services=settings.services, opts=opts)

    render = run_with_provider(build)
    assert not [o for o in render.kubernetes_objects() if o["kind"] == "EnvoyFilter"]


def test_a_flagger_primary_gets_its_own_local_filter() -> None:
    settings = make_settings(
        services=[{"name": "a", "namespace": "n", "delivery": "progressive"}],
    )

    def build(opts: Any) -> None:
        mesh = IstioMesh("m", settings.istio, opts=opts)
        RateLimiter("rl", mesh, settings.rate_limit, services=settings.services, opts=opts)

    filters = {
        o["metadata"]["name"]: o["spec"]["workloadSelector"]["labels"]
        for o in run_with_provider(build).kubernetes_objects()
        if o["kind"] == "EnvoyFilter"
    }
    assert filters == {
        "a-local-ratelimit": {"app": "a"},
        "a-primary-local-ratelimit": {"app": "a-primary"},
    }


def test_only_grpc_services_answer_resource_exhausted() -> None:
    settings = make_settings(
        services=[
            {"name": "g", "namespace": "n", "protocol": "grpc", "port": 9090},
            {"name": "h", "namespace": "n", "port": 8080},
        ],
    )

    def build(opts: Any) -> None:
        mesh = IstioMesh("m", settings.istio, opts=opts)
        RateLimiter("rl", mesh, settings.rate_limit, services=settings.services, opts=opts)

    filters = {
        o["metadata"]["name"]: o["spec"]["configPatches"][0]
        for o in run_with_provider(build).kubernetes_objects()
        if o["kind"] == "EnvoyFilter"
    }
    config = {name: p["patch"]["value"]["typed_config"] for name, p in filters.items()}
    assert config["g-local-ratelimit"]["rate_limited_as_resource_exhausted"] is True
    assert "rate_limited_as_resource_exhausted" not in config["h-local-ratelimit"]
    # Each filter applies only to its own service port's inbound chains.
    ports = {name: p["match"]["listener"]["portNumber"] for name, p in filters.items()}
    assert ports == {"g-local-ratelimit": 9090, "h-local-ratelimit": 8080}


def test_fail_closed_is_refused_while_the_counters_live_in_one_redis_pod() -> None:
    error = settings_error(rateLimit={"quota": {"enabled": True, "failureModeDeny": True}})
    assert error.startswith(
        "meshstack:rateLimit.quota.failureModeDeny = true: needs a highly available quota "
        "backend, and the quota counters live in one Redis pod"
    ), error
    # What the refusal rests on: Redis is still a single, replaced-not-overlapped pod.
    redis = specs.redis_deployment_spec()
    assert (redis["replicas"], redis["strategy"]["type"]) == (1, "Recreate")


def test_the_gateway_filter_waits_for_a_ready_quota_path(render) -> None:  # type: ignore[no-untyped-def]
    names = by_name(render)
    dependencies = names["rl-gateway-filter"].dependencies
    for name in (
        "rl-ratelimit",  # Pulumi awaits the Deployment's rollout: its pods are ready
        "rl-ratelimit-service",
        "rl-allow-gateway-to-ratelimit",
        "rl-allow-ratelimit-to-redis",
    ):
        assert names[name].urn in dependencies, name


def test_ratelimit_pods_survive_a_drain_and_a_rollout() -> None:
    spec = specs.ratelimit_deployment_spec(QuotaSettings(enabled=True, replicas=3))
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    spread = spec["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    for constraint in spread:
        assert constraint["labelSelector"] == {"matchLabels": spec["selector"]["matchLabels"]}
    budget = specs.ratelimit_disruption_budget_spec()
    assert budget["selector"] == spec["selector"]
    assert budget["maxUnavailable"] == 1


def test_every_stack_with_quotas_has_a_disruption_budget_for_ratelimit(every_render) -> None:  # type: ignore[no-untyped-def]
    checked = 0
    for stack, result in every_render.items():
        if not stack_settings(stack).rate_limit.quota.enabled:
            continue
        budgets = [
            o
            for o in result.kubernetes_objects()
            if o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == "ratelimit"
        ]
        assert len(budgets) == 1, stack
        checked += 1
    assert checked, "a stack sells quotas, so this checks something"
