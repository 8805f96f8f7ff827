"""MeshSecurity: settings, policy builders, the component, and the policies on every stack."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from components.constants import (
    FLAGGER_SERVICE_ACCOUNT,
    LOADTESTER_SERVICE_ACCOUNT,
    ingress_gateway_principal,
    workload_apps,
    workload_principal,
)
from components.istio.component import IstioMesh
from components.kube import MetricsEndpoint
from components.observability import jaeger_access
from components.security import specs
from components.security.component import FlaggerNamespace, MeshSecurity
from components.security.settings import (
    AllowRule,
    IdentityProvider,
    JwtSettings,
    MtlsException,
)
from components.service_graph import ServiceGraph, ServiceId
from components.settings import StackSettings, load_settings
from components.traffic import delivery_specs
from components.traffic.delivery import FLAGGER_RELEASE
from tests.conftest import by_name, run_with_provider
from tests.conftest import make_settings as make_stack_settings
from tests.conftest import settings_error as stack_settings_error
from tools.render import PROJECT_DIR, load_stack_config
from tools.verify import authorization, validate_manifest

ISSUER = "https://auth.example.com"
JWKS = f"{ISSUER}/jwks.json"
PROVIDERS = {"auth": {"issuer": ISSUER, "jwksUri": JWKS}}
"""The fixture mesh's identity providers (`meshstack:identityProviders`)."""
PROVIDER_MODELS = {"auth": IdentityProvider(issuer=ISSUER, jwks_uri=JWKS)}
JWT = {"provider": "auth", "audiences": ["api"]}


def make_settings(**overrides: Any) -> StackSettings:
    """Fixture settings with the fixture mesh's identity providers."""
    return make_stack_settings(**{"identityProviders": PROVIDERS, **overrides})


def settings_error(**overrides: Any) -> str:
    return stack_settings_error(**{"identityProviders": PROVIDERS, **overrides})


SETTINGS = make_settings(
    services=[
        {
            "name": "revenue-engine",
            "namespace": "revenue",
            "jwt": JWT,
            "authorization": [
                {
                    "requestPrincipals": ["*"],
                    "claims": {"role": ["user"]},
                    "paths": ["/api/v1/revenue/*"],
                    "methods": ["GET", "POST", "PUT", "DELETE"],
                },
                {"requestPrincipals": ["*"], "claims": {"role": ["admin"]}},
                {"serviceAccounts": ["revenue/admin-service"], "methods": ["GET"]},
                {"ports": [9102], "paths": ["/metrics"]},
            ],
            "metrics": {"path": "/stats"},
        },
        {
            "name": "market-data",
            "namespace": "markets",
            "traffic": {"expose": {"gateway": "public", "hosts": ["markets.example.com"]}},
            "authorization": [
                {"fromIngressGateway": True, "methods": ["GET"]},
                {"ipBlocks": ["10.40.0.0/16"], "methods": ["GET"]},
            ],
        },
    ],
    security={
        "mtlsExceptions": [
            {"name": "legacy", "namespace": "markets"},
            {
                "name": "scrape",
                "namespace": "revenue",
                "selector": {"app": "revenue-engine"},
                "ports": [9102],
            },
        ],
        "prometheusServiceAccounts": ["metrics/prom"],
    },
    traffic={
        "gateways": [{"name": "public", "hosts": ["markets.example.com"], "credentialName": "tls"}]
    },
    observabilityNamespace="obs",
)


def service(**fields: Any) -> list[dict[str, Any]]:
    return [{"name": "a", "namespace": "n", **fields}]


# --- settings -------------------------------------------------------------------------------


def test_defaults() -> None:
    security = make_settings().security
    assert security.mtls_exceptions == ()
    assert security.prometheus_service_accounts == (
        "monitoring/kube-prometheus-stack-prometheus",
    ), "kube-prometheus-stack's account for the release alerts.prometheusSelectorLabels names"
    assert "/health" in security.public_paths and "/status" in security.public_paths
    jwt = JwtSettings(provider="auth")
    assert jwt.forward_original_token is False, "the app never sees the bearer token"
    assert jwt.output_payload_to_header == "x-jwt-payload"
    assert jwt.protected_paths == ("/api/*",)


def test_port_exception_needs_a_selector() -> None:
    exception = {"name": "x", "namespace": "n", "ports": [9102]}
    assert settings_error(security={"mtlsExceptions": [exception]}) == (
        "meshstack:security.mtlsExceptions[0].ports = [9102]: needs a selector: Istio "
        "applies port-level mTLS only to selected workloads"
    )


def test_exception_port_out_of_range() -> None:
    exception = {"name": "x", "namespace": "n", "selector": {"app": "a"}, "ports": [0]}
    assert settings_error(security={"mtlsExceptions": [exception]}) == (
        "meshstack:security.mtlsExceptions[0].ports[0] = 0: must be a port, 1-65535"
    )


def test_repeated_exception() -> None:
    exception = {"name": "x", "namespace": "n"}
    assert settings_error(security={"mtlsExceptions": [exception, exception]}) == (
        "meshstack:security.mtlsExceptions[1].name = \"x\": must be unique in namespace 'n'; "
        "it is repeated"
    )


def test_strict_cannot_be_an_exception() -> None:
    exception = {"name": "x", "namespace": "n", "mode": "STRICT"}
    assert settings_error(security={"mtlsExceptions": [exception]}).startswith(
        'meshstack:security.mtlsExceptions[0].mode = "STRICT": must be'
    )


def test_an_exception_needs_a_rule_plaintext_clients_can_match() -> None:
    exception = {"name": "legacy", "namespace": "n"}
    by_identity = {"serviceAccounts": ["n/b"], "ports": [8080]}
    assert settings_error(
        services=service(authorization=[by_identity]), security={"mtlsExceptions": [exception]}
    ) == (
        'meshstack:security.mtlsExceptions[0] = "legacy": needs an authorization rule for the '
        "services it covers with `ports` or `ipBlocks` and no serviceAccounts/"
        "fromIngressGateway: plaintext clients have no identity, every other ALLOW answers "
        "them 403"
    )


def test_a_port_exception_needs_a_rule_on_each_of_its_ports() -> None:
    exception = {"name": "scrape", "namespace": "n", "selector": {"app": "a"}, "ports": [9102]}
    other_port = {"ports": [9103], "methods": ["GET"]}
    message = settings_error(
        services=service(authorization=[other_port]), security={"mtlsExceptions": [exception]}
    )
    assert message.startswith(
        'meshstack:security.mtlsExceptions[0] = "scrape": needs an authorization rule for port '
        "9102 of the services it covers"
    )
    for rule in ({"ports": [9102]}, {"ipBlocks": ["10.0.0.0/8"]}):
        settings = make_settings(
            services=service(authorization=[rule]), security={"mtlsExceptions": [exception]}
        )
        assert settings.security.mtls_exceptions[0].ports == (9102,)


def test_ip_block_format() -> None:
    rule = {"ipBlocks": ["10.40.0.1/16"]}
    assert settings_error(services=service(authorization=[rule])) == (
        'meshstack:services[0] (a).authorization[0].ipBlocks[0] = "10.40.0.1/16": must be an IP '
        "address or a CIDR block without host bits, e.g. 10.40.0.0/16"
    )


def test_ip_blocks_become_the_source_ip_blocks() -> None:
    rule = AllowRule(ip_blocks=("10.40.0.0/16", "192.0.2.7"), methods=("POST",))
    assert specs.service_allow_spec("a", (rule,))["rules"] == [
        {
            "from": [{"source": {"ipBlocks": ["10.40.0.0/16", "192.0.2.7"]}}],
            "to": [{"operation": {"methods": ["POST"]}}],
        }
    ]


def test_small_spoke_fixture_admits_its_legacy_plaintext_clients_by_address(
    fixture_renders: Any,
) -> None:
    rules = [
        rule
        for o in fixture_renders["fixture-small-spoke"].kubernetes_objects()
        if o["kind"] == "AuthorizationPolicy" and o["metadata"]["name"] == "market-data-allow"
        for rule in o["spec"]["rules"]
    ]
    assert {"source": {"ipBlocks": ["10.40.0.0/16"]}} in [r["from"][0] for r in rules]


def test_jwks_uri_must_be_https() -> None:
    providers = {"auth": {"issuer": ISSUER, "jwksUri": "http://auth/jwks"}}
    assert settings_error(identityProviders=providers).startswith(
        'meshstack:identityProviders.auth.jwksUri = "http://auth/jwks": must match pattern'
    )


def test_protected_path_must_be_a_path() -> None:
    jwt = {**JWT, "protectedPaths": ["api/*"]}
    assert settings_error(services=service(jwt=jwt)) == (
        'meshstack:services[0] (a).jwt.protectedPaths[0] = "api/*": must be `*` or an absolute '
        "path with `*` only at the start or end"
    )


def test_public_path_must_be_a_path() -> None:
    assert settings_error(security={"publicPaths": ["/a/*/b"]}) == (
        'meshstack:security.publicPaths[0] = "/a/*/b": must be `*` or an absolute path with '
        "`*` only at the start or end"
    )


def test_service_account_format() -> None:
    rule = {"serviceAccounts": ["admin-service"]}
    assert settings_error(services=service(authorization=[rule])) == (
        'meshstack:services[0] (a).authorization[0].serviceAccounts[0] = "admin-service": must be '
        "`<namespace>/<serviceAccount>`"
    )


def test_request_principal_format() -> None:
    rule = {"requestPrincipals": ["alice"]}
    assert settings_error(services=service(authorization=[rule])) == (
        'meshstack:services[0] (a).authorization[0].requestPrincipals[0] = "alice": must be '
        "`<issuer>/<subject>` or `*`"
    )


def test_rule_path_format() -> None:
    rule = {"fromIngressGateway": True, "paths": ["x"]}
    assert settings_error(services=service(authorization=[rule])) == (
        'meshstack:services[0] (a).authorization[0].paths[0] = "x": must be `*` or an absolute '
        "path with `*` only at the start or end"
    )


def test_claims_need_request_principals() -> None:
    rule = {"fromIngressGateway": True, "claims": {"role": ["admin"]}}
    assert settings_error(services=service(authorization=[rule])) == (
        'meshstack:services[0] (a).authorization[0].claims = {"role": ["admin"]}: needs '
        "requestPrincipals: claims exist only on requests with a valid JWT"
    )


def test_request_principals_need_the_service_jwt() -> None:
    rule = {"requestPrincipals": ["*"], "claims": {"role": ["admin"]}}
    assert settings_error(services=service(authorization=[rule])) == (
        'meshstack:services[0] (a).authorization[0].requestPrincipals = ["*"]: needs the '
        "service's jwt: without a RequestAuthentication no request has a request principal"
    )


def test_a_gateway_rule_needs_the_service_exposed() -> None:
    """The ingress gateway only routes to exposed services: without `expose` the rule never
    matches (make simulate found market-data's in two regions, tools/simulate)."""
    rule = {"fromIngressGateway": True, "methods": ["GET"]}
    assert settings_error(services=service(authorization=[rule])) == (
        "meshstack:services[0] (a).authorization[0].fromIngressGateway = true: needs "
        "traffic.expose: the ingress gateway routes only to services exposed on a public "
        "host, so without it this rule never matches"
    )
    gateway = {"name": "public", "hosts": ["a.example.com"], "credentialName": "tls"}
    exposed = make_settings(
        traffic={"gateways": [gateway]},
        services=service(
            authorization=[rule],
            traffic={"expose": {"gateway": "public", "hosts": ["a.example.com"]}},
        ),
    )
    assert exposed.services[0].authorization[0].from_ingress_gateway


def test_grpc_rules_allow_only_post() -> None:
    rule = {"fromIngressGateway": True, "methods": ["POST", "GET"]}
    assert settings_error(services=service(protocol="grpc", authorization=[rule])) == (
        'meshstack:services[0] (a).authorization[0].methods[1] = "GET": must be POST on a grpc '
        "service: every gRPC call is a POST"
    )


def test_grpc_rule_paths_are_grpc_methods() -> None:
    rule = {"fromIngressGateway": True, "paths": ["/pkg.Svc/Get*", "/api/v1/market/*"]}
    assert settings_error(services=service(protocol="grpc", authorization=[rule])) == (
        'meshstack:services[0] (a).authorization[0].paths[1] = "/api/v1/market/*": must be '
        "`/<package.Service>/<Method>` (`*` method or suffix allowed) on a grpc service; "
        "gRPC calls have no other path"
    )


def test_grpc_protected_paths_are_grpc_methods() -> None:
    jwt = {**JWT, "protectedPaths": ["/pkg.Svc/*", "/api/*"]}
    assert settings_error(services=service(protocol="grpc", jwt=jwt)) == (
        'meshstack:services[0] (a).jwt.protectedPaths[1] = "/api/*": must be `*` or '
        "`/<package.Service>/<Method>` (`*` method or suffix allowed) on a grpc service; "
        "no gRPC request has another path"
    )


def test_grpc_rules_that_can_match_are_accepted() -> None:
    settings = make_settings(
        services=service(
            protocol="grpc",
            jwt={**JWT, "protectedPaths": ["/market.v1.MarketData/Publish*"]},
            authorization=[
                {"serviceAccounts": ["n/b"], "methods": ["POST"], "paths": ["/pkg.Svc/*"]},
                {"requestPrincipals": ["*"], "paths": ["/market.v1.MarketData/Publish"]},
            ],
        )
    )
    assert settings.services[0].authorization[1].request_principals == ("*",)


def test_an_empty_rule_would_allow_everything() -> None:
    assert settings_error(services=service(authorization=[{}])).startswith(
        "meshstack:services[0] (a).authorization[0] = "
    )
    assert settings_error(services=service(authorization=[{}])).endswith(
        ": must name a source, a path, a method or a port: an empty rule allows everything"
    )


# --- builders -------------------------------------------------------------------------------


def test_mesh_wide_mtls_is_strict_without_selector() -> None:
    assert specs.mesh_peer_authentication_spec() == {"mtls": {"mode": "STRICT"}}


def test_namespace_exception() -> None:
    exception = MtlsException(name="x", namespace="n")
    assert specs.exception_peer_authentication_spec(exception) == {"mtls": {"mode": "PERMISSIVE"}}


def test_port_exception_keeps_other_ports_strict() -> None:
    exception = MtlsException(
        name="x", namespace="n", selector={"app": "a"}, ports=(9102,), mode="DISABLE"
    )
    assert specs.exception_peer_authentication_spec(exception) == {
        "selector": {"matchLabels": {"app": "a"}},
        "mtls": {"mode": "STRICT"},
        "portLevelMtls": {"9102": {"mode": "DISABLE"}},
    }


def test_principals() -> None:
    assert workload_principal("ns", "sa") == "cluster.local/ns/ns/sa/sa"
    assert ingress_gateway_principal() == ("cluster.local/ns/istio-ingress/sa/istio-ingressgateway")


def test_allow_rules_become_sources_operations_and_claim_conditions() -> None:
    rules = (
        AllowRule(
            request_principals=("*",),
            claims={"role": ("user",)},
            paths=("/api/v1/revenue/*",),
            methods=("GET", "POST"),
        ),
        AllowRule(service_accounts=("shop/web",), from_ingress_gateway=True),
    )
    assert specs.service_allow_spec("revenue-engine", rules) == {
        "selector": {"matchLabels": {"app": "revenue-engine"}},
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"requestPrincipals": ["*"]}}],
                "to": [{"operation": {"paths": ["/api/v1/revenue/*"], "methods": ["GET", "POST"]}}],
                "when": [{"key": "request.auth.claims[role]", "values": ["user"]}],
            },
            {
                "from": [
                    {
                        "source": {
                            "principals": [
                                "cluster.local/ns/shop/sa/web",
                                "cluster.local/ns/istio-ingress/sa/istio-ingressgateway",
                            ]
                        }
                    }
                ]
            },
        ],
    }


def test_request_authentication() -> None:
    jwt = JwtSettings(
        provider="auth",
        audiences=("api",),
        forward_original_token=True,
        output_payload_to_header="x-claims",
    )
    assert specs.request_authentication_spec("a", jwt, PROVIDER_MODELS["auth"]) == {
        "selector": {"matchLabels": {"app": "a"}},
        "jwtRules": [
            {
                "issuer": ISSUER,
                "jwksUri": JWKS,
                "audiences": ["api"],
                "forwardOriginalToken": True,
                "outputPayloadToHeader": "x-claims",
            }
        ],
    }


def test_requests_without_jwt_are_denied_on_protected_paths_except_exempt_and_health() -> None:
    jwt = JwtSettings(provider="auth")
    spec = specs.require_jwt_spec(
        "a", jwt, ["/health"], exempt_principals=["cluster.local/ns/m/sa/prom"]
    )
    assert spec["action"] == "DENY"
    (rule,) = spec["rules"]
    assert rule["from"] == [
        {
            "source": {
                "notRequestPrincipals": ["*"],
                "notPrincipals": ["cluster.local/ns/m/sa/prom"],
            }
        }
    ], "identities, never whole namespaces"
    assert rule["to"] == [{"operation": {"paths": ["/api/*"], "notPaths": ["/health"]}}]


def test_every_namespace_is_default_deny_with_metrics_and_health_openings() -> None:
    prom = "cluster.local/ns/monitoring/sa/prom"
    policies = specs.namespace_policies(
        ["/health"], scrapers=[prom], metrics_paths=["/stats", "/metrics"]
    )
    assert policies["allow-nothing"] == {}
    assert policies["allow-metrics-scraping"] == {
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": [prom]}}],
                "to": [{"operation": {"methods": ["GET"], "paths": ["/metrics", "/stats"]}}],
            }
        ],
    }
    assert policies["allow-public-paths"]["rules"] == [
        {"to": [{"operation": {"methods": ["GET", "HEAD"], "paths": ["/health"]}}]}
    ]
    assert "allow-metrics-scraping" not in specs.namespace_policies(["/health"], scrapers=[prom])


# --- the component --------------------------------------------------------------------------


def _mesh_security(
    settings: StackSettings, opts: Any, metrics_endpoints: Sequence[MetricsEndpoint] = ()
) -> MeshSecurity:
    """MeshSecurity on its own mesh, given its slice of `settings` as region.py does:
    Flagger's namespace only when a service is progressive (Flagger runs)."""
    flagger_ns = settings.traffic.flagger_namespace
    progressive = any(s.delivery == "progressive" for s in settings.services)
    return MeshSecurity(
        "sec",
        IstioMesh("m", settings.istio, opts=opts),
        settings.security,
        graph=ServiceGraph(settings.services),
        namespaces=settings.namespaces,
        identity_providers=settings.identity_providers,
        flagger=(
            FlaggerNamespace(flagger_ns, pulumi.Output.from_input(flagger_ns))
            if progressive
            else None
        ),
        metrics_endpoints=metrics_endpoints,
        opts=opts,
    )


@pytest.fixture(scope="module")
def render():  # type: ignore[no-untyped-def]
    def build(opts: Any) -> None:
        _mesh_security(SETTINGS, opts)

    return run_with_provider(build)


def _objects(render: Any, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in render.kubernetes_objects()
        if o["kind"] == kind
    }


def test_children_are_parented_and_wait_for_istiod(render) -> None:  # type: ignore[no-untyped-def]
    names = by_name(render)
    component = names["sec"]
    assert component.type == "meshstack:security:MeshSecurity"
    children = [r for r in render.registrations if r.parent == component.urn]
    # Mesh-wide PeerAuthentication, 2 exceptions, default-deny + public paths in both
    # namespaces and Prometheus on revenue's metrics path, JWT pair, two ALLOW policies.
    assert len(children) == 1 + 2 + (2 * 2 + 1) + 2 + 2
    for child in children:
        assert names["m-istiod"].urn in child.dependencies, child.name
        assert child.inputs["apiVersion"] == "security.istio.io/v1"


def test_mesh_wide_strict_mtls_in_the_root_namespace(render) -> None:  # type: ignore[no-untyped-def]
    peer = _objects(render, "PeerAuthentication")
    assert peer[("istio-system", "default")]["spec"] == {"mtls": {"mode": "STRICT"}}
    assert peer[("markets", "legacy")]["spec"] == {"mtls": {"mode": "PERMISSIVE"}}
    assert peer[("revenue", "scrape")]["spec"]["portLevelMtls"] == {"9102": {"mode": "PERMISSIVE"}}


def test_policies_per_namespace_and_service(render) -> None:  # type: ignore[no-untyped-def]
    policies = _objects(render, "AuthorizationPolicy")
    assert set(policies) == {
        (ns, name)
        for ns in ("markets", "revenue")
        for name in ("allow-nothing", "allow-public-paths")
    } | {
        ("revenue", "allow-metrics-scraping"),
        ("revenue", "revenue-engine-allow"),
        ("revenue", "revenue-engine-require-jwt"),
        ("markets", "market-data-allow"),
    }, "no Flagger policy: no service is progressive, so the region runs no Flagger"
    scraping = policies[("revenue", "allow-metrics-scraping")]["spec"]["rules"][0]
    assert scraping["from"][0]["source"] == {"principals": ["cluster.local/ns/metrics/sa/prom"]}
    authn = _objects(render, "RequestAuthentication")
    assert authn[("revenue", "revenue-engine-jwt")]["spec"]["jwtRules"][0]["issuer"] == ISSUER


def test_every_object_validates(render) -> None:  # type: ignore[no-untyped-def]
    for obj in render.kubernetes_objects():
        assert validate_manifest(obj) == [], obj["metadata"]["name"]


# --- every stack ----------------------------------------------------------------------------


def test_every_stack_is_strict_mesh_wide_and_default_deny(stack_renders: Any) -> None:
    for stack, render in stack_renders.items():
        objects = render.kubernetes_objects()
        mesh_wide = [
            o
            for o in objects
            if o["kind"] == "PeerAuthentication" and o["metadata"]["namespace"] == "istio-system"
        ]
        assert [o["spec"] for o in mesh_wide] == [{"mtls": {"mode": "STRICT"}}], stack
        workload_namespaces = set(render.outputs["workloadNamespaces"])
        deny_all = {
            o["metadata"]["namespace"]
            for o in objects
            if o["kind"] == "AuthorizationPolicy" and o["metadata"]["name"] == "allow-nothing"
        }
        # Flagger's namespace too, where the region runs Flagger (item 18).
        flagger_ns = _flagger_namespace(render)
        assert deny_all == workload_namespaces | ({flagger_ns} if flagger_ns else set()), stack


def test_no_stack_has_an_allow_all_policy(stack_renders: Any) -> None:
    for render in stack_renders.values():
        for obj in render.kubernetes_objects():
            if obj["kind"] != "AuthorizationPolicy":
                continue
            spec = obj["spec"]
            if spec.get("action", "ALLOW") == "ALLOW":
                assert {} not in spec.get("rules", []), obj["metadata"]
                for rule in spec.get("rules", []):
                    assert rule.get("from") or rule.get("to"), obj["metadata"]


def test_exceptions_and_jwt_rules_are_exercised_by_the_fixture_stacks(fixture_renders: Any) -> None:
    objects = [o for r in fixture_renders.values() for o in r.kubernetes_objects()]
    peer = [o["spec"] for o in objects if o["kind"] == "PeerAuthentication"]
    assert any("portLevelMtls" in s for s in peer), "a port-level exception"
    assert any("selector" not in s and s["mtls"]["mode"] == "PERMISSIVE" for s in peer)
    jwt = [o for o in objects if o["kind"] == "RequestAuthentication"]
    assert any(o["metadata"]["name"] == "revenue-engine-jwt" for o in jwt)


# --- service-to-service calls and Flagger primaries -----------------------------------------


def test_workload_apps_include_the_flagger_primary() -> None:
    assert workload_apps("api", progressive=False) == ("api",)
    assert workload_apps("api", progressive=True) == ("api", "api-primary")


def test_callers_are_allowed_by_their_service_identity() -> None:
    principals = specs.caller_principals(
        [ServiceId("shop", "web"), ServiceId("shop", "web"), ServiceId("bank", "ledger")]
    )
    assert principals == ["cluster.local/ns/bank/sa/ledger", "cluster.local/ns/shop/sa/web"]
    assert specs.callers_allow_spec("api", principals) == {
        "selector": {"matchLabels": {"app": "api"}},
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": principals}}]}],
    }


def test_service_policies_are_named_after_the_workload() -> None:
    jwt = JwtSettings(provider="auth")
    policies = specs.service_policies(
        "api-primary",
        jwt=jwt,
        rules=(AllowRule(methods=("GET",)),),
        caller_principals=["cluster.local/ns/a/sa/b"],
        public_paths=["/health"],
        providers=PROVIDER_MODELS,
    )
    assert [(p.kind, p.name) for p in policies] == [
        ("RequestAuthentication", "api-primary-jwt"),
        ("AuthorizationPolicy", "api-primary-require-jwt"),
        ("AuthorizationPolicy", "api-primary-allow"),
        ("AuthorizationPolicy", "api-primary-allow-callers"),
    ]
    for policy in policies:
        assert policy.spec["selector"] == {"matchLabels": {"app": "api-primary"}}


def test_calls_and_progressive_delivery_in_the_component() -> None:
    settings = make_settings(
        services=[
            {"name": "web", "namespace": "shop", "calls": ["bank/ledger"]},
            {
                "name": "ledger",
                "namespace": "bank",
                "delivery": "progressive",
                "authorization": [{"serviceAccounts": ["shop/web"]}],
            },
        ]
    )

    def build(opts: Any) -> None:
        _mesh_security(settings, opts)

    policies = _objects(run_with_provider(build), "AuthorizationPolicy")
    for app in ("ledger", "ledger-primary"):
        callers = policies[("bank", f"{app}-allow-callers")]["spec"]
        assert callers["selector"] == {"matchLabels": {"app": app}}
        assert callers["rules"][0]["from"][0]["source"]["principals"] == [
            "cluster.local/ns/shop/sa/web"
        ]
        assert ("bank", f"{app}-allow") in policies
    assert ("shop", "web-allow-callers") not in policies


def test_exposed_service_without_rules_accepts_the_ingress_gateway() -> None:
    assert specs.ingress_gateway_allow_spec("web") == {
        "selector": {"matchLabels": {"app": "web"}},
        "action": "ALLOW",
        "rules": [
            {
                "from": [
                    {
                        "source": {
                            "principals": ["cluster.local/ns/istio-ingress/sa/istio-ingressgateway"]
                        }
                    }
                ]
            }
        ],
    }
    common: dict[str, Any] = {
        "jwt": None,
        "caller_principals": [],
        "public_paths": [],
        "providers": PROVIDER_MODELS,
    }
    exposed = specs.service_policies("web", rules=(), exposed=True, **common)
    assert [p.name for p in exposed] == ["web-allow-ingress-gateway"]
    with_rules = specs.service_policies(
        "web", rules=(AllowRule(methods=("GET",)),), exposed=True, **common
    )
    assert [p.name for p in with_rules] == ["web-allow"], "with rules, the rules decide"
    assert specs.service_policies("web", rules=(), exposed=False, **common) == []


def test_fixture_stacks_open_exposed_services_and_route_backends_to_the_gateway(
    fixture_renders: Any,
) -> None:
    names = {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in fixture_renders["fixture-hub"].kubernetes_objects()
        if o["kind"] == "AuthorizationPolicy"
    }
    assert ("identity", "fingerprint-api-allow-ingress-gateway") in names
    assert ("revenue", "revenue-engine-allow-ingress-gateway") not in names, "not exposed"


def test_rule_port_out_of_range() -> None:
    rule = {"ports": [70000]}
    assert settings_error(services=service(authorization=[rule])) == (
        "meshstack:services[0] (a).authorization[0].ports[0] = 70000: must be a port, 1-65535"
    )


def test_a_port_rule_opens_a_plaintext_metrics_port() -> None:
    rule = AllowRule(ports=(9102,), methods=("GET",), paths=("/metrics",))
    assert specs.service_allow_spec("a", (rule,))["rules"] == [
        {"to": [{"operation": {"paths": ["/metrics"], "methods": ["GET"], "ports": ["9102"]}}]}
    ]


_rules: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    serviceAccounts=st.lists(st.sampled_from(["shop/web", "bank/ledger"]), max_size=2),
    fromIngressGateway=st.booleans(),
    requestPrincipals=st.lists(st.sampled_from(["*", f"{ISSUER}/alice"]), max_size=2),
    paths=st.lists(st.sampled_from(["/api/*", "/status", "*"]), max_size=2),
    methods=st.lists(st.sampled_from(["GET", "POST", "DELETE"]), max_size=2),
    ports=st.lists(st.integers(1, 65535), max_size=1),
    ipBlocks=st.lists(st.sampled_from(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]), max_size=1),
)


@settings(max_examples=30, deadline=None)
@given(st.lists(_rules, min_size=1, max_size=3))
def test_any_accepted_rules_give_a_valid_policy_that_is_never_allow_all(
    raw_rules: list[dict[str, Any]],
) -> None:
    try:
        rules = tuple(AllowRule.model_validate(r) for r in raw_rules)
    except ValueError:
        return  # rejected settings are covered by the error-message tests
    spec = specs.service_allow_spec("api", rules)
    for rule in spec["rules"]:
        assert rule.get("from") or rule.get("to"), rule
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "api-allow", "namespace": "shop"},
        "spec": spec,
    }
    assert validate_manifest(policy) == []


# --- route backends and the JWT DENY exemption ----------------------------------------------

GATEWAY = "cluster.local/ns/istio-ingress/sa/istio-ingressgateway"


def test_route_paths_and_their_intersection_with_protected_paths() -> None:
    assert specs.route_path("/api/v1/admin", None) == "/api/v1/admin*"
    assert specs.route_path(None, "/status") == "/status"
    assert specs.intersect_paths(["/api/v1/admin*"], ["/api/*"]) == ["/api/v1/admin*"]
    assert specs.intersect_paths(["/api/v1/admin*"], ["*"]) == ["/api/v1/admin*"]
    assert specs.intersect_paths(["/a*"], ["/a/b*", "/a/c", "/x*"]) == ["/a/b*", "/a/c"]
    assert specs.intersect_paths(["/a/c"], ["/a*", "/a/c"]) == ["/a/c"]
    assert specs.intersect_paths(["/status", "/web*"], ["/api/*"]) == []


def test_a_route_backend_admits_the_routing_service_callers_and_its_jwt_rule() -> None:
    settings = make_settings(
        services=[
            {"name": "client", "namespace": "shop", "calls": ["shop/front"]},
            {
                "name": "front",
                "namespace": "shop",
                "jwt": JWT,
                "traffic": {
                    "routes": [
                        {"name": "admin", "prefix": "/api/admin", "backend": "shop/back"},
                        {"name": "web", "prefix": "/web", "backend": "shop/back"},
                    ]
                },
            },
            {"name": "back", "namespace": "shop"},
        ]
    )

    def build(opts: Any) -> None:
        _mesh_security(settings, opts)

    out = run_with_provider(build)
    policies = _objects(out, "AuthorizationPolicy")
    assert policies[("shop", "back-allow-routed")]["spec"]["rules"] == [
        {
            "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/client"]}}],
            "to": [{"operation": {"paths": ["/api/admin*", "/web*"]}}],
        }
    ]
    deny = policies[("shop", "back-require-jwt-via-shop-front")]["spec"]
    assert deny["action"] == "DENY"
    (rule,) = deny["rules"]
    assert rule["to"][0]["operation"]["paths"] == ["/api/admin*"], "only routed ∩ protected"
    assert rule["from"][0]["source"]["notRequestPrincipals"] == ["*"]
    authn = _objects(out, "RequestAuthentication")[("shop", "back-jwt-via-shop-front")]
    assert authn["spec"]["jwtRules"][0]["issuer"] == ISSUER
    assert authn["spec"]["selector"] == {"matchLabels": {"app": "back"}}


def test_a_routed_exposed_service_admits_the_gateway_on_the_backend_but_never_exempts_it() -> None:
    jwt = JwtSettings(provider="auth")
    routed = specs.RoutedFrom(
        namespace="shop",
        name="front",
        paths=("/api/admin*",),
        principals=("cluster.local/ns/shop/sa/client", GATEWAY),
        jwt=jwt,
    )
    policies = {
        p.name: p
        for p in specs.service_policies(
            "back",
            jwt=jwt,
            rules=(),
            caller_principals=[],
            public_paths=[],
            providers=PROVIDER_MODELS,
            routed=[routed],
        )
    }
    assert "back-jwt-via-shop-front" not in policies, "back accepts that issuer already"
    allow = policies["back-allow-routed"].spec["rules"][0]
    assert allow["from"][0]["source"]["principals"] == ["cluster.local/ns/shop/sa/client", GATEWAY]
    for name in ("back-require-jwt", "back-require-jwt-via-shop-front"):
        source = policies[name].spec["rules"][0]["from"][0]["source"]
        assert source["notPrincipals"] == ["cluster.local/ns/shop/sa/client"]
        assert GATEWAY not in source["notPrincipals"]


def test_require_jwt_exempts_only_identities_the_allow_rules_name() -> None:
    jwt = JwtSettings(provider="auth")
    rules = (
        AllowRule(service_accounts=("ops/admin",), methods=("GET",)),
        AllowRule(service_accounts=("ops/batch",), request_principals=("*",)),
        AllowRule(from_ingress_gateway=True, methods=("GET",)),
        AllowRule(request_principals=("*",)),
    )
    policies = {
        p.name: p.spec
        for p in specs.service_policies(
            "api",
            jwt=jwt,
            rules=rules,
            caller_principals=["cluster.local/ns/web/sa/front"],
            public_paths=["/health"],
            providers=PROVIDER_MODELS,
        )
    }
    (rule,) = policies["api-require-jwt"]["rules"]
    # Workload identities allowed without a token pass the DENY; everyone else (end users
    # through the gateway, the batch job that must also bring a token) still needs one.
    assert rule["from"] == [
        {
            "source": {
                "notRequestPrincipals": ["*"],
                "notPrincipals": ["cluster.local/ns/ops/sa/admin", "cluster.local/ns/web/sa/front"],
            }
        }
    ]
    without_exempt = specs.service_policies(
        "api",
        jwt=jwt,
        rules=(AllowRule(request_principals=("*",)),),
        caller_principals=[],
        public_paths=[],
        providers=PROVIDER_MODELS,
    )
    deny = next(p for p in without_exempt if p.name == "api-require-jwt")
    assert "notPrincipals" not in deny.spec["rules"][0]["from"][0]["source"]


def _policy(stack: Any, namespace: str, name: str) -> dict[str, Any]:
    return next(
        o
        for o in stack.kubernetes_objects()
        if o["kind"] == "AuthorizationPolicy"
        and (o["metadata"]["namespace"], o["metadata"]["name"]) == (namespace, name)
    )


def test_fixture_stacks_service_accounts_and_callers_get_past_the_jwt_deny(
    fixture_renders: Any,
) -> None:
    us = _policy(fixture_renders["fixture-hub"], "revenue", "revenue-engine-require-jwt")
    source = us["spec"]["rules"][0]["from"][0]["source"]
    assert "cluster.local/ns/revenue/sa/admin-service" in source["notPrincipals"]
    assert source["notRequestPrincipals"] == ["*"]
    for app in ("admin-service", "admin-service-primary"):
        eu = _policy(fixture_renders["fixture-spoke"], "revenue", f"{app}-require-jwt")
        source = eu["spec"]["rules"][0]["from"][0]["source"]
        assert "cluster.local/ns/revenue/sa/revenue-engine" in source["notPrincipals"]
        assert GATEWAY not in source["notPrincipals"]


def test_fixture_stacks_route_backends_admit_the_routing_service_callers(
    fixture_renders: Any,
) -> None:
    routed = _policy(fixture_renders["fixture-hub"], "revenue", "admin-service-allow-routed")
    assert routed["spec"]["rules"] == [
        {
            "from": [{"source": {"principals": ["cluster.local/ns/identity/sa/fingerprint-api"]}}],
            "to": [{"operation": {"paths": ["/api/v1/admin*"]}}],
        }
    ]
    deny = _policy(
        fixture_renders["fixture-hub"],
        "revenue",
        "admin-service-require-jwt-via-revenue-revenue-engine",
    )
    assert deny["spec"]["rules"][0]["to"][0]["operation"]["paths"] == ["/api/v1/admin*"]


# --- Istio's evaluation over the rendered stacks ----------------------------------------------


SOURCE_IP = "10.1.2.3"
"""The peer address of a request in these tests (no rule of the stacks names it)."""


def _workload(namespace: str, app: str) -> authorization.Workload:
    return authorization.Workload(namespace, {"app": app})


def _authenticated(
    objects: list[dict[str, Any]], namespace: str, app: str, token: dict[str, Any] | None
) -> Any:
    """The token as the workload's RequestAuthentications see it (None: not accepted)."""
    request = authorization.Request(port=8080, source_ip=SOURCE_IP, token=token)
    verified = authorization.authenticated(objects, _workload(namespace, app), request)
    return None if verified is None else verified.token


def _allowed(target: Any, namespace: str, app: str, request: dict[str, Any]) -> bool:
    """Istio's decision (`tools.verify.authorization`, the one evaluator of the rendered
    policies) for `request` to pods `app: <app>` in `namespace`."""
    objects = target if isinstance(target, list) else target.kubernetes_objects()
    decision = authorization.decide(
        objects,
        _workload(namespace, app),
        authorization.Request(
            port=int(request.get("port", 8080)),
            source_ip=str(request.get("ip", SOURCE_IP)),
            principal=request["principal"],
            method=request["method"],
            path=request["path"],
            token=request.get("token"),
        ),
    )
    return decision == "allowed"


def req(
    principal: str | None,
    path: str,
    method: str = "GET",
    token: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    return {"principal": principal, "path": path, "method": method, "token": token, **extra}


def test_fixture_stacks_evaluate_as_intended(fixture_renders: Any) -> None:
    us, eu = fixture_renders["fixture-hub"], fixture_renders["fixture-spoke"]
    admin_sa = "cluster.local/ns/revenue/sa/admin-service"
    engine_sa = "cluster.local/ns/revenue/sa/revenue-engine"
    fingerprint = "cluster.local/ns/identity/sa/fingerprint-api"
    # fixture-hub's provider; a token of another issuer is no identity at all.
    user = {
        "iss": "https://auth.meshstack.example.com",
        "sub": "someone",
        "aud": "revenue-engine",
        "role": "user",
    }
    forged = {**user, "iss": "https://auth.example.org"}

    # Finding 2: an identity the rules name gets past the JWT DENY; no token + gateway does not.
    assert _allowed(us, "revenue", "revenue-engine", req(admin_sa, "/api/v1/revenue/x"))
    assert not _allowed(us, "revenue", "revenue-engine", req(GATEWAY, "/api/v1/revenue/x"))
    assert not _allowed(us, "revenue", "revenue-engine", req(None, "/api/v1/revenue/x"))
    path = "/api/v1/revenue/x"
    assert _allowed(us, "revenue", "revenue-engine", req(GATEWAY, path, token=user))
    assert not _allowed(us, "revenue", "revenue-engine", req(GATEWAY, path, token=forged))
    assert not _allowed(us, "revenue", "revenue-engine", req(None, path, token=user)), (
        "STRICT mTLS: plaintext is refused whatever the token"
    )
    for app in ("admin-service", "admin-service-primary"):
        assert _allowed(eu, "revenue", app, req(engine_sa, "/api/x", "POST"))
        assert not _allowed(eu, "revenue", app, req(GATEWAY, "/api/x"))
    # Finding 1: the routed caller reaches the backend on the routed path only.
    assert _allowed(us, "revenue", "admin-service", req(fingerprint, "/api/v1/admin/users"))
    assert not _allowed(us, "revenue", "admin-service", req(fingerprint, "/internal"))


def test_output_payload_header_must_be_a_lowercase_header_name() -> None:
    jwt = {**JWT, "outputPayloadToHeader": "X-Claims"}
    assert settings_error(services=service(jwt=jwt)) == (
        'meshstack:services[0] (a).jwt.outputPayloadToHeader = "X-Claims": must be a lowercase '
        "HTTP header name (letters, digits, '-', '_'); Istio matches header names in lowercase"
    )


# --- item 18: the loadtester, Prometheus and Flagger's namespace ------------------------------

PROM = "cluster.local/ns/monitoring/sa/prom"
FLAGGER = "cluster.local/ns/delivery/sa/flagger"
LOADTESTER = "cluster.local/ns/delivery/sa/flagger-loadtester"
WEB = "cluster.local/ns/front/sa/web"
FLAGGER_SETTINGS = make_settings(
    services=[
        {
            "name": "shop",
            "namespace": "store",
            "delivery": "progressive",
            "jwt": {**JWT, "protectedPaths": ["*"]},
            "metrics": {"path": "/stats"},
            "authorization": [{"requestPrincipals": ["*"]}],
        },
        {"name": "web", "namespace": "front", "calls": ["store/shop"]},
    ],
    traffic={"flaggerNamespace": "delivery"},
    security={"prometheusServiceAccounts": ["monitoring/prom"]},
)


@pytest.fixture(scope="module")
def flagger_objects() -> list[dict[str, Any]]:
    def build(opts: Any) -> None:
        _mesh_security(FLAGGER_SETTINGS, opts)

    return run_with_provider(build).kubernetes_objects()


def test_the_loadtester_runs_commands_only_for_the_flagger_controller(
    flagger_objects: list[dict[str, Any]],
) -> None:
    # The loadtester runs `bash -c <metadata.cmd>` for whoever POSTs a webhook payload.
    def webhook(principal: str | None) -> bool:
        return _allowed(flagger_objects, "delivery", "loadtester", req(principal, "/", "POST"))

    assert webhook(FLAGGER)
    for other in (WEB, PROM, LOADTESTER, GATEWAY, None):
        assert not webhook(other), other
    # Anything else in Flagger's namespace is default-deny too.
    assert not _allowed(flagger_objects, "delivery", "flagger", req(WEB, "/metrics"))


def test_the_loadtester_reaches_the_canary_pods_only(
    flagger_objects: list[dict[str, Any]],
) -> None:
    # Flagger's load and acceptance tests go to `shop-canary` (pods `app: shop`), without a
    # token, on any path: the JWT DENY must not stop them there.
    for method, path in (("GET", "/api/orders"), ("POST", "/api/orders"), ("GET", "/")):
        assert _allowed(flagger_objects, "store", "shop", req(LOADTESTER, path, method))
    # The primary (live traffic) and other services never trust it.
    assert not _allowed(flagger_objects, "store", "shop-primary", req(LOADTESTER, "/api/orders"))
    assert not _allowed(flagger_objects, "front", "web", req(LOADTESTER, "/"))
    # Nor does the canary trust other identities of Flagger's namespace.
    assert not _allowed(flagger_objects, "store", "shop", req(FLAGGER, "/api/orders"))


def test_prometheus_may_only_get_the_metrics_paths(flagger_objects: list[dict[str, Any]]) -> None:
    for app in ("shop", "shop-primary"):
        # Scraping works although the JWT protects every path of the service ...
        assert _allowed(flagger_objects, "store", app, req(PROM, "/stats"))
        # ... and opens nothing else to Prometheus' identity.
        assert not _allowed(flagger_objects, "store", app, req(PROM, "/api/orders"))
        assert not _allowed(flagger_objects, "store", app, req(PROM, "/stats", "POST"))
    # Other workloads of Prometheus' namespace are not trusted at all.
    grafana = "cluster.local/ns/monitoring/sa/grafana"
    assert not _allowed(flagger_objects, "store", "shop", req(grafana, "/stats"))
    # A service that is not scraped does not let Prometheus in.
    assert not _allowed(flagger_objects, "front", "web", req(PROM, "/stats"))


def test_the_quota_service_is_scraped_on_its_metrics_path() -> None:
    endpoint = MetricsEndpoint(namespace="store", service="ratelimit", port_name="http-metrics")

    def build(opts: Any) -> None:
        _mesh_security(FLAGGER_SETTINGS, opts, metrics_endpoints=[endpoint])

    objects = run_with_provider(build).kubernetes_objects()
    assert _allowed(objects, "store", "ratelimit", req(PROM, "/metrics"))
    assert not _allowed(objects, "store", "ratelimit", req(PROM, "/json"))


def test_a_region_without_flagger_trusts_no_flagger_identity(render) -> None:  # type: ignore[no-untyped-def]
    objects = render.kubernetes_objects()
    flagger_ns = SETTINGS.traffic.flagger_namespace
    loadtester = workload_principal(flagger_ns, "flagger-loadtester")
    assert not any(o["metadata"].get("namespace") == flagger_ns for o in objects)
    assert not any(f"/ns/{flagger_ns}/" in str(o) for o in objects)
    for namespace, app in (("revenue", "revenue-engine"), ("markets", "market-data")):
        assert not _allowed(objects, namespace, app, req(loadtester, "/api/v1/revenue/x"))


def test_prometheus_service_account_format() -> None:
    assert settings_error(security={"prometheusServiceAccounts": ["prometheus"]}) == (
        'meshstack:security.prometheusServiceAccounts[0] = "prometheus": must be '
        "`<namespace>/<serviceAccount>`"
    )


def test_prometheus_service_accounts_cannot_be_empty() -> None:
    assert settings_error(security={"prometheusServiceAccounts": []}).startswith(
        "meshstack:security.prometheusServiceAccounts = []: "
    )


def test_the_flagger_chart_identities_match_the_principals() -> None:
    # The controller's account is the flagger chart's fullname (release `flagger`), the
    # loadtester's exists only with `rbac.create` (else it runs as `default`).
    assert FLAGGER_RELEASE == FLAGGER_SERVICE_ACCOUNT
    assert delivery_specs.LOADTESTER_RELEASE == LOADTESTER_SERVICE_ACCOUNT
    assert delivery_specs.loadtester_values()["rbac"]["create"] is True


def _flagger_namespace(render: Any) -> str | None:
    return next(
        (
            str(c["namespace"])
            for c in render.helm_charts()
            if c["name"] == delivery_specs.LOADTESTER_RELEASE
        ),
        None,
    )


def _principals(spec: dict[str, Any]) -> list[str]:
    return [
        principal
        for rule in spec.get("rules", [])
        for source in rule.get("from", [])
        for key in ("principals", "notPrincipals")
        for principal in source["source"].get(key, [])
    ]


def test_stacks_trust_identities_of_the_region_never_namespaces(stack_renders: Any) -> None:
    for stack, render in stack_renders.items():
        settings = load_settings(load_stack_config(stack)[0])
        flagger_ns = _flagger_namespace(render)
        known = {
            *render.outputs["workloadNamespaces"],
            "istio-ingress",
            *(a.split("/")[0] for a in settings.security.prometheus_service_accounts),
            *([flagger_ns] if flagger_ns else []),
            # The hub's Kiali, and the trace readers the settings name, read Jaeger.
            *([settings.observability_namespace] if settings.observability.is_hub else []),
            *(a.split("/")[0] for a in settings.observability.jaeger.query_service_accounts),
        }
        for obj in render.kubernetes_objects():
            if obj["kind"] != "AuthorizationPolicy":
                continue
            for rule in obj["spec"].get("rules", []):
                for source in rule.get("from", []):
                    assert not {"namespaces", "notNamespaces"} & set(source["source"]), (
                        stack,
                        obj["metadata"]["name"],
                    )
            for principal in _principals(obj["spec"]):
                if principal == "*":
                    # Any mesh identity: only Jaeger's OTLP intake (every region's proxies
                    # export spans there) and its plaintext-only Ingress rule.
                    assert obj["metadata"]["name"] == jaeger_access.POLICY_NAME, stack
                    continue
                assert principal.split("/")[2] in known, (stack, obj["metadata"]["name"])


def test_stacks_loadtester_admits_only_the_flagger_controller(every_render: Any) -> None:
    seen = 0
    for stack, render in every_render.items():
        flagger_ns = _flagger_namespace(render)
        if flagger_ns is None:
            continue
        seen += 1
        objects = render.kubernetes_objects()
        controller = workload_principal(flagger_ns, FLAGGER_SERVICE_ACCOUNT)
        callers = {
            p
            for o in objects
            if o["kind"] == "AuthorizationPolicy"
            for p in _principals(o["spec"])
            if "*" not in p  # a pattern (Jaeger's "any mesh identity"), not a caller
        }
        assert _allowed(objects, flagger_ns, "loadtester", req(controller, "/", "POST")), stack
        for caller in (callers - {controller}) | {None}:
            assert not _allowed(objects, flagger_ns, "loadtester", req(caller, "/", "POST")), (
                stack,
                caller,
            )
    assert seen, "a fixture runs Flagger"


# --- item 23: one issuer per identity provider, mesh-wide --------------------------------------


def test_a_service_names_a_declared_identity_provider() -> None:
    assert settings_error(services=service(jwt={"provider": "corp"})) == (
        'meshstack:services[0] (a).jwt.provider = "corp": must name one of identityProviders (auth)'
    )


def test_an_issuer_is_declared_once() -> None:
    providers = {**PROVIDERS, "again": {"issuer": ISSUER, "jwksUri": f"{ISSUER}/other.json"}}
    assert settings_error(identityProviders=providers) == (
        f'meshstack:identityProviders.again.issuer = "{ISSUER}": is already the issuer of '
        "identity provider 'auth'; declare each issuer once"
    )


def test_request_principals_are_spelled_with_the_provider_issuer() -> None:
    # The issuer ends in a slash, so its tokens' principals are `<iss>/<sub>` with two:
    # a principal written with one matches no token (us-east-1's market-feed rule did).
    slash = {"auth": {"issuer": f"{ISSUER}/", "jwksUri": JWKS}}
    rule = {"requestPrincipals": [f"{ISSUER}/feed"]}
    assert settings_error(
        identityProviders=slash, services=service(jwt=JWT, authorization=[rule])
    ) == (
        f'meshstack:services[0] (a).authorization[0].requestPrincipals[0] = "{ISSUER}/feed": '
        f"must be `{ISSUER}//<subject>` (issuer of identity provider 'auth') or start with "
        "`*`: no token has another `iss`"
    )
    accepted = {"requestPrincipals": [f"{ISSUER}//feed", "*"]}
    assert make_settings(
        identityProviders=slash, services=service(jwt=JWT, authorization=[accepted])
    ).services


def test_a_token_of_a_mesh_provider_is_accepted_in_every_region() -> None:
    def region(name: str) -> list[dict[str, Any]]:
        settings = make_settings(
            region=name,
            services=[
                {
                    "name": "api",
                    "namespace": "shop",
                    "jwt": JWT,
                    "authorization": [
                        {"requestPrincipals": [f"{ISSUER}/feed"], "paths": ["/api/*"]}
                    ],
                }
            ],
        )

        def build(opts: Any) -> None:
            _mesh_security(settings, opts)

        return run_with_provider(build).kubernetes_objects()

    token = {"iss": ISSUER, "sub": "feed", "aud": "api"}  # JWT's audience
    for objects in (region("one"), region("two")):
        assert _allowed(objects, "shop", "api", req(GATEWAY, "/api/x", token=token))
        # The same subject from an issuer spelled otherwise is no identity at all.
        other = {**token, "iss": f"{ISSUER}/"}
        assert not _allowed(objects, "shop", "api", req(GATEWAY, "/api/x", token=other))


def test_stacks_accept_every_issuer_of_a_provider_in_every_region(every_render: Any) -> None:
    # Envoy's jwt_authn compares `iss` byte for byte: a provider (its JWKS) spelled with
    # two issuers would make its tokens valid in some regions and 401 in the others.
    issuers: dict[str, set[str]] = {}
    workloads: list[tuple[list[dict[str, Any]], str, str, str, list[str]]] = []
    for render in every_render.values():
        objects = render.kubernetes_objects()
        for obj in objects:
            if obj["kind"] != "RequestAuthentication":
                continue
            app = obj["spec"]["selector"]["matchLabels"].get("app")
            if app is None:
                continue  # the ingress gateway's quota-client identity (tests/ratelimit)
            for rule in obj["spec"]["jwtRules"]:
                issuers.setdefault(rule["jwksUri"], set()).add(rule["issuer"])
                workloads.append(
                    (
                        objects,
                        obj["metadata"]["namespace"],
                        app,
                        rule["jwksUri"],
                        rule.get("audiences") or [],
                    )
                )
    assert workloads, "a fixture authenticates JWTs"
    for objects, namespace, app, jwks, audiences in workloads:
        for issuer in issuers[jwks]:
            token = {"iss": issuer, "sub": "someone", **({"aud": audiences} if audiences else {})}
            assert _authenticated(objects, namespace, app, token) == token, (app, issuer)


def test_stack_files_declare_the_same_identity_providers() -> None:
    declared = {
        path.name: yaml.safe_load(path.read_text())["config"].get("meshstack:identityProviders")
        for path in sorted(PROJECT_DIR.glob("Pulumi.*.yaml"))
    }
    assert declared
    first = next(iter(declared.values()))
    assert first, "the mesh declares its identity providers"
    for name, providers in declared.items():
        assert providers == first, f"{name}: identityProviders differ from the other stacks"


def test_stacks_admit_the_loadtester_on_canary_pods_only(every_render: Any) -> None:
    seen = 0
    for stack, render in every_render.items():
        flagger_ns = _flagger_namespace(render)
        if flagger_ns is None:
            continue
        objects = render.kubernetes_objects()
        loadtester = workload_principal(flagger_ns, LOADTESTER_SERVICE_ACCOUNT)
        canaries = {
            (o["metadata"]["namespace"], o["metadata"]["name"])
            for o in objects
            if o["kind"] == "Canary"
        }
        workloads = {
            (o["metadata"]["namespace"], o["spec"]["selector"]["matchLabels"]["app"])
            for o in objects
            if o["kind"] == "AuthorizationPolicy"
            and "app" in o["spec"].get("selector", {}).get("matchLabels", {})
        }
        assert canaries, stack
        # The quota service, Redis, primaries and static services included.
        for namespace, app in workloads:
            admitted = _allowed(objects, namespace, app, req(loadtester, "/", "POST", port=8081))
            assert admitted == ((namespace, app) in canaries), (stack, namespace, app)
            seen += admitted
    assert seen, "a fixture's canary admits the loadtester"


def test_claim_conditions_and_request_principals_as_istio_decides_them() -> None:
    """The evaluator's token semantics (tools/verify/authorization.py): a claim condition
    matches when one item of a list claim does (`scope` split on spaces), `notValues`
    excludes, a token counts only for an issuer and audience a RequestAuthentication of the
    workload names, any other token is rejected (401) before the policies, even where an
    identity rule would admit the peer, and request principals need a token."""
    issuer = "https://auth.meshstack.example.com"
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": {"name": "api-jwt", "namespace": "shop"},
            "spec": {
                "selector": {"matchLabels": {"app": "api"}},
                "jwtRules": [{"issuer": issuer, "audiences": ["api"]}],
            },
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "api-allow", "namespace": "shop"},
            "spec": {
                "selector": {"matchLabels": {"app": "api"}},
                "rules": [
                    {
                        "from": [{"source": {"requestPrincipals": [f"{issuer}/*"]}}],
                        "when": [
                            {"key": "request.auth.claims[groups]", "values": ["ops"]},
                            {"key": "request.auth.claims[role]", "notValues": ["guest"]},
                        ],
                    },
                    {
                        "to": [{"operation": {"paths": ["/read"]}}],
                        "when": [{"key": "request.auth.claims[scope]", "values": ["read"]}],
                    },
                    {
                        "from": [{"source": {"principals": [GATEWAY]}}],
                        "to": [{"operation": {"paths": ["/open"]}}],
                    },
                ],
            },
        },
    ]
    token = {
        "iss": issuer,
        "sub": "ana",
        "aud": ["api", "web"],
        "groups": ["dev", "ops"],
        "role": "admin",
    }

    def allowed(path: str = "/x", **request: Any) -> bool:
        return _allowed(objects, "shop", "api", req(GATEWAY, path, **request))

    assert allowed(token=token), "one of the groups is ops"
    assert not allowed(token={**token, "groups": ["dev"]})
    assert not allowed(token={**token, "role": "guest"}), "notValues excludes"
    assert not allowed(), "request principals need a token"
    reader = {**token, "groups": ["dev"]}  # not admitted by the groups rule
    assert allowed("/read", token={**reader, "scope": "write read"}), "scope is space-delimited"
    assert not allowed("/read", token={**reader, "scope": "readonly"})
    assert allowed("/open"), "the gateway's identity opens /open without a token"
    for bad in ({**token, "iss": issuer + "/"}, {**token, "aud": "web"}):
        assert not allowed("/open", token=bad), "a token no rule accepts is a 401 first"
    nested = {"key": "request.auth.claims[realm][roles]", "values": ["x"]}
    objects[1]["spec"]["rules"][0]["when"] = [nested]
    with pytest.raises(ValueError, match="nested claims"):
        allowed(token=token)
