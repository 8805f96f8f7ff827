"""RateLimiter: local per-pod limits in every sidecar, and per-client quotas at the gateway.

The builders live in `components.ratelimit.specs`; this component only creates the
resources. Local part: one EnvoyFilter per service (token bucket in the inbound sidecar).
Quota part (`rateLimit.quota.enabled`): envoyproxy/ratelimit and Redis in their own
injected namespace, the descriptor ConfigMap, the Redis password (a Pulumi secret from
`pulumi_random`) in a Secret, and two EnvoyFilters on the ingress gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import yaml
from pulumi_kubernetes.apiextensions import CustomResource

from components.constants import ingress_gateway_principal, workload_apps
from components.istio.component import IstioMesh
from components.kube import MetricsEndpoint
from components.ratelimit import gateway, specs

if TYPE_CHECKING:
    from components.ratelimit.settings import QuotaSettings, RateLimitSettings
    from components.settings import MeshService

TOKEN: Final = "meshstack:ratelimit:RateLimiter"
ENVOY_FILTER_API: Final = "networking.istio.io/v1alpha3"
SECURITY_API: Final = "security.istio.io/v1"


class RateLimiter(pulumi.ComponentResource):
    """Rate limits of one region.

    Children: EnvoyFilter `<service>-local-ratelimit` per service (when
    `rateLimit.local.enabled`); with `rateLimit.quota.enabled`: RandomPassword, Secret
    `ratelimit-redis`, ConfigMap `ratelimit-config`, ServiceAccounts, Deployments and
    Services `ratelimit` and `redis`, a PodDisruptionBudget `ratelimit`, two
    AuthorizationPolicies opening only gateway→ratelimit and ratelimit→Redis, and in the
    ingress gateway's namespace
    EnvoyFilters `ratelimit-filter` and `ratelimit-actions` and, with token issuers, the
    RequestAuthentication `ratelimit-client-identity`.
    """

    metrics_endpoint: MetricsEndpoint | None
    """The ratelimit service's Prometheus port (its over-limit counters), which MeshAlerts
    scrapes; None without quotas. A plain value, known before deploy, not an Output."""

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        rate_limit: RateLimitSettings,
        *,
        services: Sequence[MeshService],
        token_issuers: Sequence[gateway.TokenIssuer] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`token_issuers`: the JWT issuers whose verified `rateLimit.quota.clientClaim`
        identifies a quota client at the gateway; without any, every request is anonymous."""
        super().__init__(TOKEN, name, None, opts)
        if rate_limit.local.enabled:
            for service in services:
                ns_name = mesh.workload_namespace(service.namespace).metadata.name
                # A Flagger primary's pods are `app: <name>-primary`: they get their own filter.
                for app in workload_apps(service.name, service.delivery == "progressive"):
                    filter_name = f"{app}-local-ratelimit"
                    CustomResource(
                        f"{name}-{service.namespace}-{app}-local",
                        api_version=ENVOY_FILTER_API,
                        kind="EnvoyFilter",
                        metadata={"name": filter_name, "namespace": ns_name},
                        spec=specs.local_ratelimit_spec(
                            app,
                            service.port,
                            rate_limit.local,
                            service.rate_limit,
                            proxy_minors=mesh.proxy_minors,
                            grpc=service.protocol == "grpc",
                        ),
                        opts=mesh.custom_resource_options(self),
                    )

        quota = rate_limit.quota
        self.metrics_endpoint = None
        if quota.enabled:
            self.metrics_endpoint = MetricsEndpoint(
                quota.namespace, specs.RATELIMIT_NAME, specs.metrics_port_name()
            )
            self._quota(name, mesh, quota, tuple(token_issuers))

        # No Outputs: nothing reads the filter names or the quota service's address.
        self.register_outputs({})

    def _quota(
        self,
        name: str,
        mesh: IstioMesh,
        quota: QuotaSettings,
        issuers: tuple[gateway.TokenIssuer, ...],
    ) -> None:
        ns = mesh.workload_namespace(quota.namespace).metadata.name
        child = pulumi.ResourceOptions(parent=self)

        def metadata(object_name: str) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=object_name,
                namespace=ns,
                labels={"app.kubernetes.io/part-of": "meshstack-ratelimit"},
            )

        password = random.RandomPassword(
            f"{name}-redis-password", length=32, special=False, opts=child
        )
        secret = k8s.core.v1.Secret(
            f"{name}-redis-secret",
            metadata=metadata(specs.REDIS_SECRET_NAME),
            type="Opaque",
            string_data={specs.REDIS_SECRET_KEY: password.result},
            opts=child,
        )
        config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=metadata(specs.CONFIG_MAP_NAME),
            data={
                specs.CONFIG_FILE: yaml.safe_dump(specs.ratelimit_config(quota), sort_keys=False)
            },
            opts=child,
        )
        for account in (specs.RATELIMIT_NAME, specs.REDIS_NAME):
            k8s.core.v1.ServiceAccount(
                f"{name}-{account}-sa",
                metadata=metadata(account),
                automount_service_account_token=False,
                opts=child,
            )

        # Pods are admitted once, so both Deployments wait for istiod as well: created
        # before the sidecar injector's webhook exists, their pods would start without a
        # sidecar and stay so until the next rollout (their AuthorizationPolicies void, the
        # https ServiceMonitor failing against a plaintext port).
        def after(*resources: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=[mesh.control_plane, *resources])

        # Specs are plain dicts (schema-checked by the tests); the SDK types them as deep
        # TypedDicts, hence the casts.
        k8s.apps.v1.Deployment(
            f"{name}-redis",
            metadata=metadata(specs.REDIS_NAME),
            spec=cast(Any, specs.redis_deployment_spec()),
            opts=after(secret),
        )
        k8s.core.v1.Service(
            f"{name}-redis-service",
            metadata=metadata(specs.REDIS_NAME),
            spec=cast(Any, specs.redis_service_spec()),
            opts=child,
        )
        ratelimit = k8s.apps.v1.Deployment(
            f"{name}-ratelimit",
            metadata=metadata(specs.RATELIMIT_NAME),
            spec=cast(Any, specs.ratelimit_deployment_spec(quota)),
            opts=after(secret, config),
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-ratelimit-pdb",
            metadata=metadata(specs.RATELIMIT_NAME),
            spec=cast(Any, specs.ratelimit_disruption_budget_spec()),
            opts=child,
        )
        ratelimit_service = k8s.core.v1.Service(
            f"{name}-ratelimit-service",
            metadata=metadata(specs.RATELIMIT_NAME),
            spec=cast(Any, specs.ratelimit_service_spec()),
            opts=child,
        )
        quota_path: list[pulumi.Resource] = [ratelimit, ratelimit_service]
        for policy, spec in specs.ratelimit_allow_specs(
            quota.namespace, ingress_gateway_principal()
        ).items():
            quota_path.append(
                self._custom(
                    f"{name}-{policy}",
                    SECURITY_API,
                    "AuthorizationPolicy",
                    name=policy,
                    namespace=ns,
                    spec=spec,
                    mesh=mesh,
                )
            )

        # The gateway calls the quota service only once it answers: the filter waits for
        # the ratelimit Deployment to be ready (Pulumi awaits its rollout), its Service and
        # the policies that let the gateway (and ratelimit, Redis) in. Live earlier, every
        # request would meet an unreachable service on the first `pulumi up`.
        selector = mesh.ingress_selector
        self._custom(
            f"{name}-gateway-filter",
            ENVOY_FILTER_API,
            "EnvoyFilter",
            name="ratelimit-filter",
            namespace=mesh.ingress_namespace,
            spec=selector.apply(
                lambda s: gateway.gateway_filter_spec(
                    quota, s, quota.namespace, proxy_minors=mesh.proxy_minors
                )
            ),
            mesh=mesh,
            depends_on=quota_path,
        )
        if issuers:
            self._custom(
                f"{name}-client-identity",
                SECURITY_API,
                "RequestAuthentication",
                name=gateway.CLIENT_IDENTITY_NAME,
                namespace=mesh.ingress_namespace,
                spec=selector.apply(lambda s: gateway.client_identity_spec(quota, s, issuers)),
                mesh=mesh,
            )
        self._custom(
            f"{name}-gateway-actions",
            ENVOY_FILTER_API,
            "EnvoyFilter",
            name="ratelimit-actions",
            namespace=mesh.ingress_namespace,
            spec=selector.apply(
                lambda s: gateway.gateway_actions_spec(quota, s, proxy_minors=mesh.proxy_minors)
            ),
            mesh=mesh,
        )

    def _custom(
        self,
        resource_name: str,
        api_version: str,
        kind: str,
        *,
        name: str,
        namespace: pulumi.Input[str],
        spec: pulumi.Input[dict[str, Any]],
        mesh: IstioMesh,
        depends_on: Sequence[pulumi.Resource] = (),
    ) -> CustomResource:
        opts = mesh.custom_resource_options(self)
        if depends_on:
            opts = pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=list(depends_on))
            )
        return CustomResource(
            resource_name,
            api_version=api_version,
            kind=kind,
            metadata={"name": name, "namespace": namespace},
            spec=spec,
            opts=opts,
        )
