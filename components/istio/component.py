"""IstioMesh: Istio's control plane and gateways for one region, installed with Helm.

Install order is `base` (CRDs) → `istiod` → the ingress, egress and east-west gateways in
parallel: gateway pods start with the placeholder image `auto` and get their proxy image
from istiod's injection webhook, so each gateway waits for istiod (istio/istio#35789), but
no gateway needs another one, and chaining them would only lengthen every first deploy.
Charts are installed with Chart v4; `components.helm` says why.

With `istioRevisions`, one istiod chart per revision (`istiod-<revision>`, each at its own
pinned version) shares the one `base` chart of the newest version, and each revision tag
is a MutatingWebhookConfiguration waiting for the istiod it points at (docs/upgrades.md).

Other components receive the `IstioMesh` object: `custom_resource_options()` gives the
dependency every Istio custom resource needs, so nobody writes a hand-made `depends_on`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, cast

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apiextensions import CustomResource

from components.constants import ISTIO_NAMESPACE
from components.helm import install_chart
from components.istio import values
from components.istio.settings import DEFAULT_TAG, IstioRevision, IstioSettings
from components.istio.tracing import TracingTarget
from components.kube import namespace
from components.naming import MANAGED_BY
from components.versions import istio_charts, istio_minor

TOKEN: Final = "meshstack:istio:IstioMesh"

UNKNOWN_ADDRESS: Final = "pending: the load balancer has no address yet"
NOT_APPLIED_ADDRESS: Final = "none: renderYamlToDirectory writes manifests, nothing is applied"


def _load_balancer_address(status: Any) -> str:
    ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
    if not ingress:
        return UNKNOWN_ADDRESS
    first = ingress[0]
    return str(getattr(first, "hostname", None) or getattr(first, "ip", None) or UNKNOWN_ADDRESS)


def _read_gateway_service(
    resource_name: str,
    gateway: values.GatewaySpec,
    chart: k8s.helm.v4.Chart,
    parent: pulumi.Resource,
) -> k8s.core.v1.Service:
    """The gateway chart's Service (named after the release), read from the cluster once the
    chart's objects exist. Its ID comes from the chart's `resources` (their IDs, with
    resource references off: `__main__.py`), unknown in a preview that creates or replaces
    any of them, so the engine skips the read there and the address is unknown in that
    preview; otherwise it reads the live Service. A read, not a resource: the chart owns the
    Service."""
    service_id = chart.resources.apply(lambda _: f"{gateway.namespace}/{gateway.release}")
    return k8s.core.v1.Service.get(
        resource_name, service_id, opts=pulumi.ResourceOptions(parent=parent)
    )


def _istiod_values(
    settings: IstioSettings, revision: IstioRevision, tracing: TracingTarget | None
) -> pulumi.Input[dict[str, Any]]:
    """istiod values; with a tracing target they wait for its (Output) address."""
    if tracing is None:
        return values.istiod_values(settings, revision=revision)
    return pulumi.Output.all(tracing.service, tracing.port).apply(
        lambda target: values.istiod_values(
            settings, str(target[0]), int(target[1]), revision=revision
        )
    )


class IstioMesh(pulumi.ComponentResource):
    """Istio 1.30 for one region: namespaces, `base`, `istiod`, ingress and egress gateways.

    Children: the `istio-system`, `istio-ingress`, `istio-egress` and workload namespaces
    (retained on delete, injection enabled where workloads run), and one Helm chart per
    Istio component. Secure defaults: ≥2 istiod and gateway replicas with drain-friendly
    PodDisruptionBudgets, HPAs, requests and limits everywhere, and the validation webhook
    pinned to `Fail`. With `tracing`, meshConfig gets an OTLP `opentelemetry` extension
    provider to that target (the Telemetry API selects it; `components.observability.telemetry`).
    `applied=False` (the provider only renders YAML: `meshstack:renderYamlToDirectory`) reads
    nothing from the cluster.
    """

    namespace: pulumi.Output[str]
    """The control-plane (and mesh root) namespace, `istio-system`."""
    mesh_id: pulumi.Output[str]
    """`global.meshID`, shared by every region."""
    version: pulumi.Output[str]
    """Istio version of the default revision (untagged namespaces, gateways)."""
    revisions: pulumi.Output[dict[str, dict[str, Any]]]
    """Each istiod revision (`default`: the unrevisioned one) → its version and tags."""
    workload_namespaces: pulumi.Output[list[str]]
    """Workload namespaces created with sidecar injection enabled."""
    ingress_namespace: pulumi.Output[str]
    """Namespace of the ingress gateway."""
    ingress_selector: pulumi.Output[dict[str, str]]
    """Pod labels of the ingress gateway, for `Gateway.spec.selector`."""
    ingress_address: pulumi.Output[str]
    """Load-balancer address of the ingress gateway; known after deploy (`applied=False`,
    when the provider only renders YAML: `NOT_APPLIED_ADDRESS`)."""

    def __init__(
        self,
        name: str,
        settings: IstioSettings,
        *,
        tracing: TracingTarget | None = None,
        applied: bool = True,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        self.tracing_target = tracing
        """Where proxies send spans (None: no tracing provider); Telemetry selects it."""
        self.chart_source = settings.chart_source
        """Where every chart of the region comes from; areas install theirs from here too."""
        default_revision = settings.default_revision
        injection = values.injection_labels("")
        self.injection_labels: Mapping[str, str] = injection
        self.proxy_minors: tuple[str, ...] = tuple(
            sorted({istio_minor(r.version) for r in settings.revisions})
        )
        """Istio minors the region's proxies run (two during a minor upgrade): EnvoyFilters
        match exactly these (`match.proxy.proxyVersion`)."""
        """Labels that turn sidecar injection on in an untagged namespace (the default
        revision injects it)."""

        istio_ns = namespace(
            f"{name}-istio-system",
            ISTIO_NAMESPACE,
            values.istio_namespace_labels(settings),
            parent=self,
        )
        self._workload_ns = {
            ns: namespace(
                f"{name}-ns-{ns}",
                ns,
                values.namespace_injection_labels(settings, ns),
                parent=self,
            )
            for ns in settings.workload_namespaces
        }

        base = install_chart(
            f"{name}-base",
            istio_charts(settings.crd_version).base,
            release="istio-base",
            namespace=istio_ns.metadata.name,
            values=values.base_values(settings),
            parent=self,
            source=settings.chart_source,
        )
        istiods: dict[str, pulumi.Resource] = {}
        for revision in settings.revisions:
            release = values.istiod_service(revision)
            istiods[revision.name] = install_chart(
                f"{name}-{release}",
                istio_charts(revision.version).istiod,
                release=release,
                namespace=istio_ns.metadata.name,
                values=_istiod_values(settings, revision, tracing),
                parent=self,
                source=settings.chart_source,
                depends_on=[base],
            )
        # A tag's webhook calls its revision's istiod: it must not exist before that istiod
        # does, or pods of the tagged namespaces could not be created (failurePolicy Fail).
        # Without `istioRevisions` the one unrevisioned istiod injects through its own
        # webhooks; with them every tag, `default` included, is a webhook of the program's.
        tags: dict[str, pulumi.Resource] = {}
        for revision in settings.revisions if settings.revisioned else ():
            for tag in revision.tags:
                webhook = values.revision_tag_webhook(tag, revision)
                tags[tag] = k8s.admissionregistration.v1.MutatingWebhookConfiguration(
                    f"{name}-tag-{tag}",
                    # Plain dicts (schema-checked by the tests); the SDK types them as
                    # deep TypedDicts, hence the casts.
                    metadata=cast(
                        Any,
                        {
                            **webhook["metadata"],
                            "labels": {**MANAGED_BY, **webhook["metadata"]["labels"]},
                        },
                    ),
                    webhooks=cast(Any, webhook["webhooks"]),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[istiods[revision.name]]),
                )
        self.control_plane: pulumi.Resource = tags.get(DEFAULT_TAG, istiods[default_revision.name])
        """What mesh objects and injected workloads wait for: the default revision's istiod
        (CRDs, validation) and, with revisions, the `default` tag's webhook (injection of
        untagged namespaces) that waits for it."""

        gateway_namespaces = {ISTIO_NAMESPACE: istio_ns}
        # Each gateway waits for istiod only (module docstring): they install in parallel.
        gateways: list[k8s.helm.v4.Chart] = []
        for gateway in values.gateways(settings):
            if gateway.namespace not in gateway_namespaces:
                gateway_namespaces[gateway.namespace] = namespace(
                    f"{name}-{gateway.key}-ns", gateway.namespace, injection, parent=self
                )
            chart = install_chart(
                f"{name}-{gateway.key}-gateway",
                istio_charts(default_revision.version).gateway,
                release=gateway.release,
                namespace=gateway_namespaces[gateway.namespace].metadata.name,
                values=values.gateway_values(settings, gateway),
                parent=self,
                source=settings.chart_source,
                depends_on=[self.control_plane],
            )
            gateways.append(chart)
            if gateway.network_gateway:
                CustomResource(
                    f"{name}-cross-network-gateway",
                    api_version="networking.istio.io/v1",
                    kind="Gateway",
                    metadata={
                        "name": values.CROSS_NETWORK_GATEWAY,
                        "namespace": istio_ns.metadata.name,
                    },
                    spec=values.cross_network_gateway_spec(),
                    opts=self.custom_resource_options(self),
                )
        ingress_ns = gateway_namespaces[values.INGRESS.namespace]
        ingress = gateways[0]

        self.namespace = istio_ns.metadata.name.apply(str)
        self.mesh_id = pulumi.Output.from_input(settings.mesh_id)
        self.version = pulumi.Output.from_input(default_revision.version)
        self.revisions = pulumi.Output.from_input(values.revisions_summary(settings))
        self.workload_namespaces = pulumi.Output.all(
            *[ns.metadata.name for ns in self._workload_ns.values()]
        ).apply(lambda names: [str(n) for n in names])
        self.ingress_namespace = ingress_ns.metadata.name.apply(str)
        self.ingress_selector = pulumi.Output.from_input(values.gateway_selector(values.INGRESS))
        # Without a cluster (the provider renders YAML) there is no Service to read: the
        # provider refuses a read when the cluster is unreachable.
        self.ingress_address = (
            _read_gateway_service(
                f"{name}-ingress-service", values.INGRESS, ingress, self
            ).status.apply(_load_balancer_address)
            if applied
            else pulumi.Output.from_input(NOT_APPLIED_ADDRESS)
        )
        self.register_outputs(
            {
                "namespace": self.namespace,
                "mesh_id": self.mesh_id,
                "version": self.version,
                "revisions": self.revisions,
                "workload_namespaces": self.workload_namespaces,
                "ingress_namespace": self.ingress_namespace,
                "ingress_selector": self.ingress_selector,
                "ingress_address": self.ingress_address,
            }
        )

    def workload_namespace(self, name: str) -> k8s.core.v1.Namespace:
        """The Namespace resource of a workload namespace, to depend on or name."""
        if name not in self._workload_ns:
            raise KeyError(f"{name!r} is not a workload namespace of this mesh")
        return self._workload_ns[name]

    def custom_resource_options(self, parent: pulumi.Resource) -> pulumi.ResourceOptions:
        """Options for an Istio custom resource: parented, and after CRDs and webhook exist."""
        return pulumi.ResourceOptions(parent=parent, depends_on=[self.control_plane])

    def admit_ingress_controller(
        self,
        resource_name: str,
        *,
        parent: pulumi.Resource,
        namespace: pulumi.Input[str],
        name: str,
        pod_labels: dict[str, str],
        port: int,
    ) -> CustomResource:
        """A PeerAuthentication letting an out-of-mesh Ingress controller reach one port.

        For components that expose a meshed UI through a Kubernetes Ingress
        (`values.ingress_controller_exception_spec` says why).
        """
        return CustomResource(
            resource_name,
            api_version="security.istio.io/v1",
            kind="PeerAuthentication",
            metadata={"name": name, "namespace": namespace},
            spec=values.ingress_controller_exception_spec(pod_labels, port),
            opts=self.custom_resource_options(parent),
        )
