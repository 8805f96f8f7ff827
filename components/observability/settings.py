"""Settings of the observability area: tracing, Telemetry, Jaeger, Kiali and the hub.

One structured key, `meshstack:observability`, typed here and composed into
`StackSettings.observability`. Every field documents its default and why; cross-field
rules raise `RuleViolationError` so the one-line error names the offending key.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, model_validator

from components.naming import is_dns_subdomain
from components.settings_types import (
    DnsLabel,
    OptionalDnsLabel,
    OptionalUrl,
    PromDuration,
    Quantity,
    Resources,
    RuleViolationError,
    SettingsModel,
    Url,
    check_unique,
)

_STACK_NAME: Final = re.compile(r"^[A-Za-z0-9_.-]+$")
"""A Pulumi stack name without organization and project (which are the running stack's)."""

_SERVICE_ACCOUNT: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
)
"""`<namespace>/<serviceAccount>`, as `security.prometheusServiceAccounts` spells an identity."""


def _host(value: str) -> str:
    if value and not is_dns_subdomain(value):
        raise ValueError("must be a DNS host name (lowercase letters, digits, '-' and '.')")
    return value


OptionalHost = Annotated[str, AfterValidator(_host)]
"""A DNS host name for an Ingress rule, or empty for "no Ingress"."""


def check_ingress_tls(ingress_host: str, tls_secret: str) -> None:
    """A UI published through an Ingress is served over TLS only (logins, tokens, traces)."""
    if ingress_host and not tls_secret:
        raise RuleViolationError(
            ("ingressTlsSecret",),
            tls_secret,
            "must name the TLS Secret for ingressHost; a UI Ingress is served over TLS only",
        )


class JaegerStorage(SettingsModel):
    """Where Jaeger keeps spans."""

    type: Literal["badger", "elasticsearch", "opensearch", "memory"] = Field(
        default="badger",
        description=(
            "Span store. Default `badger`: local, persistent (a PersistentVolumeClaim) and "
            "needs no other system; `elasticsearch`/`opensearch` are external and the only "
            "stores that allow more than one replica; `memory` loses every trace on restart."
        ),
    )
    size: Quantity = Field(
        default="20Gi",
        description="Badger volume size (a quantity). Default 20Gi: three days of spans at "
        "100% sampling for a few thousand requests per second, compressed.",
    )
    storage_class: OptionalDnsLabel = Field(
        default="",
        description="StorageClass of the Badger volume. Default: the cluster's default class.",
    )
    retention: PromDuration = Field(
        default="72h",
        description="How long Badger keeps spans (`ttl.spans`, a duration). Default 72h, "
        "Jaeger's default: long enough to debug a weekend incident on Monday.",
    )
    server_urls: tuple[Url, ...] = Field(
        default=(),
        description=(
            "Elasticsearch/OpenSearch URLs; required for those types, forbidden otherwise. "
            "Default: none."
        ),
    )
    index_prefix: DnsLabel = Field(
        default="jaeger",
        description="Index prefix in Elasticsearch/OpenSearch. Default `jaeger`.",
    )
    credentials_secret: OptionalDnsLabel = Field(
        default="",
        description=(
            "Secret in the observability namespace with keys `username` and `password` for "
            "Elasticsearch/OpenSearch; read as environment variables, never put into values. "
            "Default: none (no authentication)."
        ),
    )
    max_traces: int = Field(
        default=100_000,
        ge=1,
        description="Memory store bound (`max_traces`). Default 100000, so memory cannot "
        "grow without limit.",
    )

    @property
    def external(self) -> bool:
        """Whether spans live outside the Jaeger pod, so replicas may share them."""
        return self.type in ("elasticsearch", "opensearch")

    @model_validator(mode="after")
    def _urls_for_external_stores(self) -> JaegerStorage:
        if self.external and not self.server_urls:
            raise RuleViolationError(
                ("serverUrls",), [], f"must list at least one URL for type {self.type!r}"
            )
        if not self.external and self.server_urls:
            raise RuleViolationError(
                ("serverUrls",),
                list(self.server_urls),
                "must be empty unless type is 'elasticsearch' or 'opensearch'",
            )
        return self


class JaegerSettings(SettingsModel):
    """The Jaeger v2 all-in-one deployment of the hub."""

    replicas: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Jaeger replicas. Default 1: Badger and memory stores are single-writer; "
        "more replicas need an external store.",
    )
    storage: JaegerStorage = Field(
        default_factory=JaegerStorage, description="Span store. Default: Badger on a PVC."
    )
    ingress_host: OptionalHost = Field(
        default="",
        description=(
            "Host of an Ingress to the query UI. Default: none, the UI stays in-cluster. "
            "Adds a PeerAuthentication that admits the (out-of-mesh) Ingress controller's "
            "plaintext on port 16686 only. The Jaeger UI has no login of its own and shows "
            "every traced URL and header, so an Ingress requires `ingressTlsSecret` and an "
            "authentication setting (`ingressAuthUrl` or `ingressBasicAuthSecret`)."
        ),
    )
    ingress_class: DnsLabel = Field(
        default="nginx",
        description=(
            "IngressClass of that Ingress. Default `nginx`. The authentication settings are "
            "ingress-nginx annotations: the class must be served by ingress-nginx."
        ),
    )
    ingress_tls_secret: OptionalDnsLabel = Field(
        default="",
        description=(
            "TLS Secret (`kubernetes.io/tls`, in the observability namespace) for the "
            "Ingress host; required with `ingressHost`. Default: none."
        ),
    )
    ingress_auth_url: OptionalUrl = Field(
        default="",
        description=(
            "External authentication of the Ingress (`nginx.ingress.kubernetes.io/auth-url`, "
            "e.g. oauth2-proxy's `/oauth2/auth`): every request is admitted only if this URL "
            "answers 2xx. Default: none; with `ingressHost`, this or `ingressBasicAuthSecret` "
            "is required."
        ),
    )
    ingress_auth_signin: OptionalUrl = Field(
        default="",
        description=(
            "Where the Ingress sends an unauthenticated browser (`auth-signin`, e.g. "
            "oauth2-proxy's `/oauth2/start`); only with `ingressAuthUrl`. Default: none "
            "(a 401)."
        ),
    )
    ingress_basic_auth_secret: OptionalDnsLabel = Field(
        default="",
        description=(
            "Secret with an htpasswd `auth` key for basic authentication of the Ingress "
            "(`auth-type: basic`); the alternative to `ingressAuthUrl`. Default: none."
        ),
    )
    ingress_source_ip_blocks: tuple[str, ...] = Field(
        default=(),
        description=(
            "Addresses (IPs or CIDR blocks) the Ingress controller's connections come from: "
            "its pods' subnet, or the nodes' addresses for a `hostNetwork` controller. The "
            "controller runs outside the mesh, so its plaintext requests carry no identity "
            "and Jaeger's policy knows them by the connection's peer address "
            "(`source.ipBlocks`): only plaintext from these blocks reaches port 16686. "
            "Required with `ingressHost`. Default: none (no plaintext caller is admitted)."
        ),
    )
    query_service_accounts: tuple[str, ...] = Field(
        default=("monitoring/kube-prometheus-stack-grafana",),
        description=(
            "Meshed workloads that may read traces through the HTTP query API (port 16686, "
            "`GET` only), as `<namespace>/<serviceAccount>`. Default: kube-prometheus-stack's "
            "Grafana, whose Jaeger data source calls `/api/...` on 16686; it must run with a "
            "sidecar (the identity comes from its mTLS certificate). Kiali (gRPC 16685) and "
            "the Ingress have their own rules; every other caller of 16686/16685 is denied. "
            "Empty: no in-cluster reader besides Kiali."
        ),
    )
    resources: Resources = Field(
        default_factory=Resources,
        description=(
            "Jaeger container resources (quantities). Default 250m/512Mi requests, 2/2Gi limits."
        ),
    )

    @model_validator(mode="after")
    def _ingress_has_tls_and_authentication(self) -> JaegerSettings:
        check_ingress_tls(self.ingress_host, self.ingress_tls_secret)
        if self.ingress_auth_url and self.ingress_basic_auth_secret:
            raise RuleViolationError(
                ("ingressBasicAuthSecret",),
                self.ingress_basic_auth_secret,
                "must be empty when ingressAuthUrl is set; choose one authentication",
            )
        if self.ingress_auth_signin and not self.ingress_auth_url:
            raise RuleViolationError(
                ("ingressAuthSignin",),
                self.ingress_auth_signin,
                "needs ingressAuthUrl (the sign-in page only serves external authentication)",
            )
        if self.ingress_host and not (self.ingress_auth_url or self.ingress_basic_auth_secret):
            raise RuleViolationError(
                ("ingressAuthUrl",),
                self.ingress_auth_url,
                "must be set (or ingressBasicAuthSecret) when ingressHost is set: the Jaeger "
                "UI has no login and shows every traced request",
            )
        return self

    @model_validator(mode="after")
    def _query_callers(self) -> JaegerSettings:
        for index, account in enumerate(self.query_service_accounts):
            if not _SERVICE_ACCOUNT.match(account):
                raise RuleViolationError(
                    ("queryServiceAccounts", index),
                    account,
                    "must be `<namespace>/<serviceAccount>`",
                )
        for index, block in enumerate(self.ingress_source_ip_blocks):
            try:
                network = ipaddress.ip_network(block, strict=True)
            except ValueError:
                raise RuleViolationError(
                    ("ingressSourceIpBlocks", index),
                    block,
                    "must be an IP address or a CIDR block without host bits (10.0.0.0/16)",
                ) from None
            if network.prefixlen == 0:
                raise RuleViolationError(
                    ("ingressSourceIpBlocks", index),
                    block,
                    "must not be every address: it would admit any plaintext caller to the "
                    "unauthenticated query API",
                )
        if self.ingress_host and not self.ingress_source_ip_blocks:
            raise RuleViolationError(
                ("ingressSourceIpBlocks",),
                [],
                "must list the Ingress controller's source addresses when ingressHost is set: "
                "its plaintext has no identity, and every other plaintext caller is denied",
            )
        if self.ingress_source_ip_blocks and not self.ingress_host:
            raise RuleViolationError(
                ("ingressSourceIpBlocks",),
                list(self.ingress_source_ip_blocks),
                "must be empty without ingressHost: port 16686 is then mTLS-only and no "
                "plaintext caller can arrive",
            )
        return self

    @model_validator(mode="after")
    def _single_writer(self) -> JaegerSettings:
        if self.replicas > 1 and not self.storage.external:
            raise RuleViolationError(
                ("replicas",),
                self.replicas,
                f"must be 1 with storage type {self.storage.type!r} (each replica would keep "
                "its own part of every trace); use elasticsearch or opensearch to scale",
            )
        return self


class MetricTagOverride(SettingsModel):
    """Tags to add to or remove from an Istio standard metric (Telemetry `metrics.overrides`)."""

    metric: Literal[
        "ALL_METRICS",
        "REQUEST_COUNT",
        "REQUEST_DURATION",
        "REQUEST_SIZE",
        "RESPONSE_SIZE",
        "TCP_OPENED_CONNECTIONS",
        "TCP_CLOSED_CONNECTIONS",
        "TCP_SENT_BYTES",
        "TCP_RECEIVED_BYTES",
        "GRPC_REQUEST_MESSAGES",
        "GRPC_RESPONSE_MESSAGES",
    ] = Field(default="ALL_METRICS", description="Metric to change. Default: all.")
    mode: Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"] = Field(
        default="CLIENT_AND_SERVER", description="Reporter side. Default: both."
    )
    remove_tags: tuple[str, ...] = Field(
        default=(), description="Tags to drop (cardinality control). Default: none."
    )
    add_tags: dict[str, str] = Field(
        default_factory=dict,
        description="Tags to add: name → CEL expression (e.g. `request.host`). Default: none.",
    )

    @model_validator(mode="after")
    def _does_something(self) -> MetricTagOverride:
        if not self.remove_tags and not self.add_tags:
            raise RuleViolationError(
                ("removeTags",), [], "must name a tag to remove, or addTags a tag to add"
            )
        for index, tag in enumerate(self.remove_tags):
            if tag in READ_TAGS:
                raise RuleViolationError(
                    ("removeTags", index),
                    tag,
                    "must not be a tag Kiali, Flagger, the alerts or the dashboard read "
                    f"({', '.join(sorted(READ_TAGS))})",
                )
        return self


READ_TAGS: Final = frozenset(
    {
        "reporter",
        "request_protocol",
        "response_code",
        "response_flags",
        "grpc_response_status",
        "source_workload",
        "source_workload_namespace",
        "source_cluster",
        "destination_service",
        "destination_service_name",
        "destination_service_namespace",
        "destination_workload",
        "destination_workload_namespace",
        "destination_version",
        "destination_cluster",
    }
)
"""Istio metric tags something downstream depends on. Kiali's graph skips every series
without `request_protocol` and `response_code` (kiali graph telemetry); Flagger's built-in
checks, the alerts and the dashboard group by destination and version labels."""


class NamespaceTelemetry(SettingsModel):
    """A per-namespace Telemetry override of sampling and/or access logging."""

    namespace: DnsLabel = Field(description="Workload namespace the override applies to.")
    sampling_percentage: float | None = Field(
        default=None, ge=0, le=100, description="Trace sampling there. Default: the mesh's."
    )
    access_logging: bool | None = Field(
        default=None, description="Access logs on/off there. Default: the mesh's."
    )

    @model_validator(mode="after")
    def _overrides_something(self) -> NamespaceTelemetry:
        if self.sampling_percentage is None and self.access_logging is None:
            raise RuleViolationError(
                ("samplingPercentage",),
                None,
                "must be set, or accessLogging must be; an override must change something",
            )
        return self


class TelemetrySettings(SettingsModel):
    """Mesh-wide Telemetry: tracing sampling, metric tag overrides, namespace overrides."""

    sampling_percentage: float = Field(
        default=100,
        ge=0,
        le=100,
        description="Percentage of requests traced (`randomSamplingPercentage`). Default 100, "
        "the product's target: every canary request can be followed; regions with more "
        "traffic may lower it.",
    )
    metric_overrides: tuple[MetricTagOverride, ...] = Field(
        default=(), description="Tag overrides of Istio's standard metrics. Default: none."
    )
    namespaces: tuple[NamespaceTelemetry, ...] = Field(
        default=(), description="Per-namespace overrides. Default: none."
    )

    @model_validator(mode="after")
    def _one_override_per_namespace(self) -> TelemetrySettings:
        check_unique(("namespaces",), "namespace", [o.namespace for o in self.namespaces])
        return self


class KialiSettings(SettingsModel):
    """The Kiali console of the hub, and what a spoke installs for it."""

    enabled: bool = Field(
        default=True,
        description=(
            "On a spoke, the only Kiali key: `false` installs no KialiRemoteAccess (no "
            "`observability` namespace, no Kiali ServiceAccount, roles or signing key), so "
            "the hub's Kiali cannot read that cluster: no remote-cluster Secret can be made "
            "for it, its Mesh page lists the other clusters only, and that region's "
            "workloads, Istio config and validations are not shown (its traffic still "
            "appears as graph edges as far as the hub's Prometheus has its metrics). "
            "Default on: one Kiali sees every region. On the hub Kiali always runs; "
            "`false` there is refused."
        ),
    )
    auth_strategy: Literal["token", "openid", "anonymous"] = Field(
        default="token",
        description="Login method. Default `token`: a Kubernetes token, so Kiali shows what "
        "the user's RBAC allows. `anonymous` gives everyone full access and needs "
        "`allowAnonymous: true`.",
    )
    allow_anonymous: bool = Field(
        default=False,
        description=(
            "Permit `authStrategy: anonymous` (development only; logged as a warning). Default off."
        ),
    )
    openid_issuer_uri: OptionalUrl = Field(
        default="",
        description="OpenID issuer URL; required for `openid`.",
    )
    openid_client_id: str = Field(
        default="",
        description=(
            "OpenID client id; required for `openid`. The client secret goes into Kiali's "
            "`kiali` Secret (`oidc-secret`), never into settings."
        ),
    )
    view_only_mode: bool = Field(
        default=True,
        description="Kiali shows but cannot change mesh config. Default on: Pulumi owns the "
        "Istio objects, and an edit made in Kiali would be drift the next `pulumi up` reverts.",
    )
    ingress_host: OptionalHost = Field(
        default="",
        description=(
            "Host of an Ingress to Kiali (`server.web_fqdn`, `web_schema: https`). Default: "
            "none, in-cluster only. Requires `ingressTlsSecret`. Adds the same plaintext port "
            "exception as Jaeger's, for port 20001."
        ),
    )
    ingress_class: DnsLabel = Field(
        default="nginx", description="IngressClass of that Ingress. Default `nginx`."
    )
    ingress_tls_secret: OptionalDnsLabel = Field(
        default="",
        description=(
            "TLS Secret (`kubernetes.io/tls`, in the observability namespace) for the "
            "Ingress host; required with `ingressHost`: Kiali builds its https links and the "
            "OpenID redirect from `web_schema: https`. Default: none."
        ),
    )
    tracing_external_url: OptionalUrl = Field(
        default="",
        description="Jaeger UI URL for browser links from Kiali. Default: "
        "`https://<jaeger.ingressHost>` when Jaeger has an Ingress, else none.",
    )
    grafana_internal_url: OptionalUrl = Field(
        default="",
        description=(
            "Grafana URL Kiali calls from the cluster; set both Grafana URLs or neither. "
            "Default: none, Grafana links off."
        ),
    )
    grafana_external_url: OptionalUrl = Field(
        default="",
        description=(
            "Grafana URL for browser links; set both Grafana URLs or neither. Default: none."
        ),
    )

    @model_validator(mode="after")
    def _auth_rules(self) -> KialiSettings:
        check_ingress_tls(self.ingress_host, self.ingress_tls_secret)
        if self.auth_strategy == "anonymous" and not self.allow_anonymous:
            raise RuleViolationError(
                ("authStrategy",),
                self.auth_strategy,
                "gives everyone full access; set allowAnonymous: true to accept that",
            )
        if self.auth_strategy == "openid" and not (
            self.openid_issuer_uri and self.openid_client_id
        ):
            raise RuleViolationError(
                ("openidIssuerUri",),
                self.openid_issuer_uri,
                "must be set together with openidClientId when authStrategy is 'openid'",
            )
        if bool(self.grafana_internal_url) != bool(self.grafana_external_url):
            raise RuleViolationError(
                ("grafanaExternalUrl",),
                self.grafana_external_url,
                "must be set together with grafanaInternalUrl (or both left empty)",
            )
        return self


class ObservabilitySettings(SettingsModel):
    """Tracing, Telemetry and the mesh console, and which region hosts them."""

    role: Literal["hub", "spoke"] = Field(
        default="hub",
        description="`hub` runs Jaeger and Kiali; a `spoke` sends spans to the hub named by "
        "`hubStack`. Default `hub`: a single region is its own hub.",
    )
    hub_stack: str = Field(
        default="",
        description="Stack name of the hub (`us-east-1`) a spoke reads the hub's endpoints "
        "from, in the organization and project of the spoke's own run (offline: "
        "`organization/meshstack/<hubStack>`). Required for spokes, empty for the hub.",
    )
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings, description="Mesh-wide and per-namespace Telemetry."
    )
    jaeger: JaegerSettings = Field(default_factory=JaegerSettings, description="Hub Jaeger.")
    kiali: KialiSettings = Field(
        default_factory=KialiSettings,
        description="Hub Kiali; on a spoke only `enabled` (its remote access for the hub's Kiali).",
    )

    @property
    def is_hub(self) -> bool:
        """Whether this region runs Jaeger and Kiali."""
        return self.role == "hub"

    @model_validator(mode="after")
    def _hub_reference(self) -> ObservabilitySettings:
        # One form only: a fully qualified name would pin the organization the issue asks
        # to follow, and two forms would let spokes of one org read another org's hub.
        if self.role == "spoke" and "/" in self.hub_stack:
            stack = self.hub_stack.rsplit("/", 1)[-1]
            raise RuleViolationError(
                ("hubStack",),
                self.hub_stack,
                f"must be the hub's stack name ({stack!r}), not organization/project/stack: "
                "the organization and project are those of this run",
            )
        if self.role == "spoke" and not _STACK_NAME.match(self.hub_stack):
            raise RuleViolationError(
                ("hubStack",),
                self.hub_stack,
                "must name the hub's stack (e.g. us-east-1) when role is 'spoke'",
            )
        if self.role == "spoke" and "jaeger" in self.model_fields_set:
            raise RuleViolationError(
                ("jaeger",),
                self.jaeger.model_dump(by_alias=True, exclude_defaults=True),
                "must not be set when role is 'spoke'; only the hub runs Jaeger and Kiali",
            )
        hub_only = sorted(self.kiali.model_fields_set - {"enabled"})
        if self.role == "spoke" and hub_only:
            raise RuleViolationError(
                ("kiali",),
                self.kiali.model_dump(by_alias=True, exclude_defaults=True),
                "must set nothing but `enabled` when role is 'spoke'; only the hub runs "
                "Jaeger and Kiali",
            )
        if self.role == "hub" and not self.kiali.enabled:
            raise RuleViolationError(
                ("kiali", "enabled"),
                False,
                "must be true when role is 'hub': the hub runs the mesh's only Kiali; "
                "`enabled: false` turns off a spoke's remote access for it",
            )
        if self.role == "hub" and self.hub_stack:
            raise RuleViolationError(
                ("hubStack",), self.hub_stack, "must be empty when role is 'hub'"
            )
        return self
