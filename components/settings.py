"""The typed, frozen, validated settings of one region stack.

`__main__.py` reads Pulumi config once, at the edge, and builds `StackSettings` with
`load_settings`; everything below receives the model (or the part of it it needs) and never
reads config or the stack name. Field names are snake_case in Python and camelCase in the
stack files (`meshstack:meshId`), which is Pulumi's convention for config keys.

Every field documents its default and why it is the default. A bad value raises
`SettingsError` with one line naming the key path, the value and what is allowed, before
any resource is registered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from components.alerts.settings import AlertsSettings, AppMetrics, DashboardSettings
from components.guardrails.settings import GuardrailSettings
from components.istio.rules import check_istio_revisions, check_namespace_revisions
from components.istio.settings import (
    UNREVISIONED,
    UNREVISIONED_NAME,
    IstioRevision,
    IstioRevisionSettings,
    IstioSettings,
)
from components.observability.prometheus_url import check_prometheus_url
from components.observability.settings import ObservabilitySettings
from components.ratelimit.settings import (
    RateLimitSettings,
    ServiceRateLimit,
    check_quota_clients_can_be_identified,
    check_quota_scope_hosts,
)
from components.security.rules import (
    accepts_writes,
    check_allow_rules_can_match,
    check_gateway_rules_routed,
    check_grpc_protected_paths,
    check_identity_providers,
    check_jwt_providers,
    check_mtls_exceptions_admit_plaintext,
    check_rule_ports_are_extra_ports,
)
from components.security.settings import (
    AllowRule,
    IdentityProvider,
    JwtSettings,
    SecuritySettings,
)
from components.settings_errors import validation_issues
from components.settings_types import (
    ChartSource,
    ClusterLocalHost,
    DnsLabel,
    LabelValue,
    OptionalDnsLabel,
    Port,
    RuleViolationError,
    SettingsError,
    SettingsModel,
    check_unique,
)
from components.traffic.rules import check_service_traffic, check_stack_traffic
from components.traffic.settings import ServiceRef, ServiceTraffic, TrafficSettings
from components.versions import ISTIO_VERSION

__all__ = [
    "CONFIG_NAMESPACE",
    "ChartSource",
    "MeshService",
    "RuleViolationError",
    "ServiceVersion",
    "SettingsError",
    "StackSettings",
    "load_settings",
]

CONFIG_NAMESPACE: Final = "meshstack"
"""Pulumi config namespace of the project (the `name` in Pulumi.yaml)."""

SECRET_KEYS: Final = frozenset({"kubeconfig"})
"""Config keys read as Pulumi secrets by `__main__.py`, never copied into the settings."""


class ServiceVersion(SettingsModel):
    """One version (DestinationRule subset) of a mesh service."""

    name: DnsLabel = Field(description="Subset name, e.g. `stable`, `canary`, `v1`.")
    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        description=(
            "Pod labels that select this version. Default: `{version: <name>}`, the label "
            "Istio's telemetry reads for `destination_version`."
        ),
    )

    min_replicas: int = Field(
        default=2,
        ge=1,
        description=(
            "Fewest pods this version runs (the Deployment's or HPA's minimum). The program "
            "does not scale it; the outlier detection rules read it: Envoy ejects a host only "
            "while 100 x (ejected + 1) / hosts <= maxEjectionPercent, so a subset of 1 pod "
            "needs maxEjectionPercent 100. For a progressive service: the Deployment's "
            "minimum (Flagger's primary and canary each run it). Default 2, the fewest at "
            "which the default 50% cap can eject."
        ),
    )

    @model_validator(mode="after")
    def _default_labels(self) -> ServiceVersion:
        if not self.labels:
            object.__setattr__(self, "labels", {"version": self.name})
        return self


class MeshService(SettingsModel):
    """A service in the mesh. The mesh scales with this list.

    The program does not create the application's Deployment; it routes, secures and
    observes the Deployment named `name` in `namespace`, whose pods carry `app: <name>`.
    """

    name: DnsLabel = Field(
        description=(
            "Service (and Deployment) name. The Deployment is the application's; this "
            "program does not create it."
        )
    )
    namespace: DnsLabel = Field(description="Workload namespace; created with injection on.")
    port: Port = Field(
        default=8080,
        ge=1,
        le=65535,
        description=(
            "Service port. Default 8080. Not one of the ports Istio's sidecar reserves "
            "(15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090)."
        ),
    )
    protocol: Literal["http", "http2", "grpc"] = Field(
        default="http",
        description=(
            "Application protocol, used to name the port (`http-…`/`grpc-…`) so Istio does "
            "not fall back to opaque TCP. Default `http`."
        ),
    )
    versions: tuple[ServiceVersion, ...] = Field(
        default=(ServiceVersion(name="stable"),),
        min_length=1,
        description="Versions (subsets) of the service. Default: one `stable` version.",
    )
    rate_limit: ServiceRateLimit = Field(
        default=ServiceRateLimit(),
        description="Per-pod limit and per-path limits. Default: the stack's local limit.",
    )
    jwt: JwtSettings | None = Field(
        default=None,
        description=(
            "JWT identity provider it accepts tokens of, and where one is required "
            "(docs/security.md). Default: none, no tokens."
        ),
    )
    authorization: tuple[AllowRule, ...] = Field(
        default=(),
        description="ALLOW rules on top of default-deny (docs/security.md). Default: none.",
    )
    delivery: Literal["static", "progressive"] = Field(
        default="static",
        description="`static`: the program routes it; `progressive`: Flagger does. Default static.",
    )
    calls: tuple[ServiceRef, ...] = Field(
        default=(), description="Services it calls (`<namespace>/<name>`), for Sidecar scoping."
    )
    traffic: ServiceTraffic = Field(
        default_factory=ServiceTraffic, description="Routing and resilience (docs/traffic.md)."
    )
    metrics: AppMetrics | None = Field(
        default=None,
        description=(
            "Set (even to `{}`) to scrape the application's own metrics with a "
            "ServiceMonitor. Default: unset, off."
        ),
    )

    @model_validator(mode="after")
    def _unique_versions(self) -> MeshService:
        check_unique(("versions",), "name", [v.name for v in self.versions])
        check_service_traffic(
            self.traffic,
            delivery=self.delivery,
            versions={v.name for v in self.versions},
            protocol=self.protocol,
            accepts_writes=accepts_writes(self.protocol, self.authorization),
        )
        check_grpc_protected_paths(self.protocol, self.jwt)
        check_allow_rules_can_match(self.protocol, self.jwt, self.authorization)
        check_rule_ports_are_extra_ports(self.port, self.authorization)
        check_gateway_rules_routed(self.traffic.expose is not None, self.authorization)
        return self


class StackSettings(SettingsModel):
    """Everything one region stack needs, validated before any resource is registered."""

    region: DnsLabel = Field(
        description="Region this stack deploys to, e.g. `us-east-1`. Required.",
    )
    mesh_id: DnsLabel = Field(
        default="meshstack",
        description=(
            "`global.meshID`: the same in every region so the clusters form one mesh "
            "(shared trust domain and telemetry labels). Default `meshstack`."
        ),
    )
    cluster_name: OptionalDnsLabel = Field(
        default="",
        description=(
            "`global.multiCluster.clusterName`, the `source_cluster`/`destination_cluster` "
            "metric label. Default: the region."
        ),
    )
    network: OptionalDnsLabel = Field(
        default="",
        description=(
            "`global.network` of this cluster; regions are separate networks joined by "
            "east-west gateways. Default: `network-<region>`."
        ),
    )
    kube_context: str = Field(
        default="",
        description=(
            "kubeconfig context of this region's cluster. Default: empty, the kubeconfig's "
            "current context."
        ),
    )
    render_yaml_to_directory: str = Field(
        default="",
        description=(
            "When set, the Kubernetes provider writes manifests here instead of applying them "
            "(no cluster: no context or kubeconfig is passed, nothing is read), Secrets in plain "
            "text (Redis password, Kiali's signing key): never under version control, never on "
            "a deployed stack. Chart v4 without a cluster renders for Kubernetes 1.20, below "
            "the Jaeger chart's `kubeVersion`: the hub cannot be rendered so. Default: off."
        ),
    )
    istio_revision: str = Field(
        default="",
        description=(
            "Replaced by `istioRevisions` (docs/upgrades.md): one revision could not be "
            "upgraded without deleting the control plane its sidecars use. Setting it is an "
            "error that says what to write instead."
        ),
    )
    istio_revisions: tuple[IstioRevisionSettings, ...] = Field(
        default=(),
        description=(
            "istiod revisions side by side, each `{name, version, tags}`, for canary upgrades "
            "of the control plane (docs/upgrades.md). Default: none, one unrevisioned istiod "
            "(release `istiod`) at the newest pinned Istio, namespaces labelled "
            "`istio-injection: enabled`."
        ),
    )
    namespace_revisions: dict[DnsLabel, DnsLabel] = Field(
        default_factory=dict,
        description=(
            "Workload namespace → the revision tag (or revision) that injects it, labelled "
            "`istio.io/rev`; needs `istioRevisions`. Default: none, every namespace is "
            "untagged (`istio-injection: enabled`) and follows the `default` tag."
        ),
    )
    access_logging: bool = Field(
        default=True,
        description=(
            "Envoy access logs to stdout as JSON, switched by the mesh-wide Telemetry "
            "(per-namespace overrides in `observability.telemetry`). Default on: the first "
            "thing an operator needs when a request fails, and cheap next to tracing."
        ),
    )
    proxy_stats_inclusion_regexps: tuple[str, ...] = Field(
        default=(
            r".*outlier_detection.*",
            r".*upstream_rq_pending_overflow.*",
            r".*upstream_cx_overflow.*",
            r".*circuit_breakers.*",
            r".*http_local_rate_limit.*",
            r".*ratelimit.*",
        ),
        description=(
            "Envoy stats exported beyond Istio's standard metrics. Default: outlier "
            "ejections, circuit-breaker overflows and local/global rate-limit counters, "
            "which the alerts and dashboard read; Envoy exports none of them otherwise."
        ),
    )
    istiod_replicas: int = Field(
        default=2,
        ge=2,
        le=20,
        description=(
            "Minimum istiod replicas (HPA floor). Default 2, the minimum: with one replica "
            "the PodDisruptionBudget blocks node drains."
        ),
    )
    istiod_max_replicas: int = Field(
        default=5,
        ge=2,
        le=50,
        description="istiod HPA ceiling (>= `istiodReplicas`). Default 5 (chart default).",
    )
    gateway_replicas: int = Field(
        default=2,
        ge=2,
        le=50,
        description="Minimum ingress/egress gateway replicas (HPA floor). Default 2, as istiod.",
    )
    gateway_max_replicas: int = Field(
        default=5,
        ge=2,
        le=100,
        description="Gateway HPA ceiling (>= `gatewayReplicas`). Default 5 (chart default).",
    )
    egress_gateway: bool = Field(
        default=True,
        description="Install the egress gateway. Default on: outbound traffic has one exit.",
    )
    observability_namespace: DnsLabel = Field(
        default="observability",
        description=(
            "Namespace of the tracing and mesh-console components (Jaeger, Kiali). Default "
            "`observability`: kept apart from istio-system so its quotas and policies are "
            "its own."
        ),
    )
    prometheus_url: Annotated[str, AfterValidator(check_prometheus_url)] = Field(
        default="http://prometheus-operated.monitoring.svc.cluster.local:9090",
        pattern=r"^https?://[^\s/]+(:\d+)?(/\S*)?$",
        description=(
            "Prometheus that scrapes the mesh, read by Flagger's analysis and Kiali. Default: "
            "the `prometheus-operated` Service the Prometheus Operator creates in `monitoring`. "
            "An in-cluster host must name its namespace (`<service>.<namespace>.svc[.cluster."
            "local]`); the program then adds a mesh-wide DestinationRule that turns mTLS off "
            "towards it, because Prometheus's sidecar does not intercept its port "
            "(docs/observability.md)."
        ),
    )
    east_west_gateway: bool = Field(
        default=True,
        description=(
            "Install the east-west gateway (`networkGateway`, port 15443) and the "
            "`cross-network-gateway` Gateway (AUTO_PASSTHROUGH of `*.local`, mTLS passed "
            "through). Default on: every region is its own network, and cross-region "
            "traffic (spokes' spans to the hub, failover) can only flow through it."
        ),
    )
    east_west_gateway_service_annotations: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Annotations of the east-west gateway's LoadBalancer Service, e.g. to make it "
            "an internal load balancer reachable only over the regions' private network. "
            "Default: none (the cloud's default load balancer)."
        ),
    )
    cluster_local_hosts: tuple[ClusterLocalHost, ...] = Field(
        default=(),
        description=(
            "Hosts whose callers only reach the endpoints in their own region "
            "(`meshConfig.serviceSettings` clusterLocal), e.g. "
            "`admin-service.revenue.svc.cluster.local` or `*.batch.svc.cluster.local`. "
            "Mesh-wide: each istiod applies only its own list, to its own proxies, so a host "
            "is kept local only where the calling region lists it; every stack file must "
            "list the same hosts (a test compares them). Default: none. Each region adds its "
            "own infrastructure (the ratelimit service and Redis, Flagger's loadtester), which "
            "only its own proxies call, see `cluster_local_service_hosts`: in a multi-primary "
            "mesh a Service with the same name in several regions is otherwise one "
            "load-balanced service."
        ),
    )
    workload_namespaces: tuple[DnsLabel, ...] = Field(
        default=(),
        description=(
            "Extra workload namespaces with injection enabled, beyond those of `services`. "
            "Default: none."
        ),
    )
    identity_providers: dict[DnsLabel, IdentityProvider] = Field(
        default_factory=dict,
        description=(
            "The mesh's JWT identity providers by name, referenced by `services[].jwt."
            "provider`. Mesh-wide: every stack file declares the same ones (a test compares "
            "them), so a token's `iss` is accepted in every region. Default: none."
        ),
    )
    services: tuple[MeshService, ...] = Field(
        default=(),
        description="The mesh services of this region. Default: none.",
    )
    rate_limit: RateLimitSettings = Field(
        default=RateLimitSettings(),
        description="Local limits (on) and per-client quotas (off) (docs/security.md).",
    )
    security: SecuritySettings = Field(
        default=SecuritySettings(),
        description="mTLS exceptions, Prometheus' identity (docs/security.md).",
    )
    guardrails: GuardrailSettings = Field(
        default_factory=GuardrailSettings,
        description="ResourceQuota and LimitRange per namespace (docs/security.md). Default on.",
    )
    traffic: TrafficSettings = Field(
        default_factory=TrafficSettings, description="Gateways, bounds (docs/traffic.md)."
    )
    alerts: AlertsSettings = Field(
        default_factory=AlertsSettings,
        description="Alert thresholds, scrape settings and runbooks (docs/alerts.md).",
    )
    dashboard: DashboardSettings = Field(
        default_factory=DashboardSettings,
        description="The Grafana mesh dashboard ConfigMap (docs/alerts.md).",
    )
    observability: ObservabilitySettings = Field(
        default_factory=ObservabilitySettings,
        description="Tracing, Telemetry, Jaeger, Kiali and the observability hub. Default: "
        "this region is its own hub with Badger-backed Jaeger and token-auth Kiali.",
    )
    chart_source: ChartSource = Field(
        default=ChartSource(),
        description=(
            "Where every Helm chart comes from: `{kind: upstream}` (default: the charts' own "
            "repositories), `{kind: oci, location: oci://<registry>/<path>}` or `{kind: "
            "directory, location: <dir>}` for air-gapped clusters (README, chart sources)."
        ),
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> StackSettings:
        if self.istio_revision:
            raise RuleViolationError(
                ("istioRevision",),
                self.istio_revision,
                f"is replaced by istioRevisions: write istioRevisions: [{{name: "
                f"{self.istio_revision}, version: {ISTIO_VERSION}, tags: [default]}}] "
                f"(docs/upgrades.md)",
            )
        check_istio_revisions(self.istio_revisions)
        check_namespace_revisions(self.namespace_revisions, self.istio_revisions, self.namespaces)
        if self.istiod_max_replicas < self.istiod_replicas:
            raise RuleViolationError(
                ("istiodMaxReplicas",),
                self.istiod_max_replicas,
                f"must be >= istiodReplicas ({self.istiod_replicas})",
            )
        if self.gateway_max_replicas < self.gateway_replicas:
            raise RuleViolationError(
                ("gatewayMaxReplicas",),
                self.gateway_max_replicas,
                f"must be >= gatewayReplicas ({self.gateway_replicas})",
            )
        seen: set[tuple[str, str]] = set()
        for index, service in enumerate(self.services):
            key = (service.namespace, service.name)
            if key in seen:
                raise RuleViolationError(
                    ("services", index, "name"),
                    service.name,
                    f"must be unique in namespace {service.namespace!r}; it is repeated",
                )
            seen.add(key)
        if self.observability_namespace in self.namespaces:
            raise RuleViolationError(
                ("observabilityNamespace",),
                self.observability_namespace,
                "must not be a workload namespace; Jaeger and Kiali own it",
            )
        for index, override in enumerate(self.observability.telemetry.namespaces):
            if override.namespace not in self.namespaces:
                raise RuleViolationError(
                    ("observability", "telemetry", "namespaces", index, "namespace"),
                    override.namespace,
                    "must be a workload namespace of this region",
                )
        check_stack_traffic(self.traffic, self.services)
        check_mtls_exceptions_admit_plaintext(self.security.mtls_exceptions, self.services)
        check_identity_providers(self.identity_providers)
        check_jwt_providers(self.identity_providers, self.services)
        check_quota_clients_can_be_identified(
            self.rate_limit.quota,
            [self.identity_providers[s.jwt.provider].issuer for s in self.services if s.jwt],
        )
        check_quota_scope_hosts(
            self.rate_limit.quota, [h for g in self.traffic.gateways for h in g.hosts]
        )
        return self

    @property
    def istio(self) -> IstioSettings:
        """The slice IstioMesh is built from: the flat istio keys, defaults applied."""
        return IstioSettings(
            mesh_id=self.mesh_id,
            cluster_name=self.effective_cluster_name,
            network=self.effective_network,
            revisions=tuple(
                IstioRevision("" if r.name == UNREVISIONED_NAME else r.name, r.version, r.tags)
                for r in self.istio_revisions
            )
            or (UNREVISIONED,),
            revisioned=bool(self.istio_revisions),
            namespace_revisions=dict(self.namespace_revisions),
            workload_namespaces=self.namespaces,
            proxy_stats_inclusion_regexps=self.proxy_stats_inclusion_regexps,
            cluster_local_hosts=self.cluster_local_service_hosts,
            istiod_replicas=self.istiod_replicas,
            istiod_max_replicas=self.istiod_max_replicas,
            gateway_replicas=self.gateway_replicas,
            gateway_max_replicas=self.gateway_max_replicas,
            egress_gateway=self.egress_gateway,
            east_west_gateway=self.east_west_gateway,
            east_west_gateway_service_annotations=dict(self.east_west_gateway_service_annotations),
            chart_source=self.chart_source,
        )

    @property
    def effective_cluster_name(self) -> str:
        """`clusterName`, defaulting to the region."""
        return self.cluster_name or self.region

    @property
    def effective_network(self) -> str:
        """`network`, defaulting to `network-<region>`."""
        return self.network or f"network-{self.region}"

    @property
    def cluster_local_service_hosts(self) -> tuple[str, ...]:
        """Hosts that must never be load-balanced to another region, sorted.

        In a multi-primary mesh a Service with the same name and namespace in several
        clusters is one service, load-balanced across them. Per-region infrastructure
        must stay local: the ratelimit service of another region serves another domain
        with another Redis, and Flagger's loadtester must load this region's canary.
        """
        hosts = {f"*.{self.traffic.flagger_namespace}.svc.cluster.local"}
        if self.rate_limit.quota.enabled:
            hosts.add(f"*.{self.rate_limit.quota.namespace}.svc.cluster.local")
        return tuple(sorted(hosts | set(self.cluster_local_hosts)))

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every workload namespace, sorted: those of the services, the extra ones, and the
        quota service's when it is enabled."""
        quota = self.rate_limit.quota
        extra = {quota.namespace} if quota.enabled else set()
        return tuple(
            sorted({s.namespace for s in self.services} | set(self.workload_namespaces) | extra)
        )


# --- building the model from Pulumi config ------------------------------------------------


def _field_expects_text(annotation: Any) -> bool:
    """Whether a config value for this field is plain text rather than JSON.

    Pulumi hands the program every config value as a string; structured values arrive as
    JSON. Strings must not go through JSON parsing, or a meshId of `123` would turn into
    a number.
    """
    return annotation is str


def load_settings(raw: Mapping[str, str]) -> StackSettings:
    """Build the settings from raw config strings keyed `meshstack:<key>`.

    Keys of other namespaces (`kubernetes:…`, `pulumi:…`) are ignored; an unknown key of
    ours is an error, so a typo cannot silently fall back to a default.
    """
    fields_by_alias = {
        (info.alias or name): info for name, info in StackSettings.model_fields.items()
    }
    data: dict[str, Any] = {}
    for full_key, text in raw.items():
        namespace, _, key = full_key.partition(":")
        if namespace != CONFIG_NAMESPACE or key in SECRET_KEYS:
            continue
        info = fields_by_alias.get(key)
        if info is not None and _field_expects_text(info.annotation):
            data[key] = text
            continue
        try:
            data[key] = json.loads(text)
        except json.JSONDecodeError:
            data[key] = text
    try:
        return StackSettings.model_validate(data)
    except ValidationError as error:
        issues = validation_issues(error, StackSettings, CONFIG_NAMESPACE, data)
        raise SettingsError("\n".join(line for _, line in issues), issues) from None
