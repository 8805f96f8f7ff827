"""MeshSecurity: mTLS, JWT authentication and default-deny authorization for one region.

The builders live in `components.security.specs`; this component only creates the
resources: the mesh-wide STRICT PeerAuthentication in the root namespace, the narrow
exceptions from settings, per-service RequestAuthentications, and per-namespace and
per-service AuthorizationPolicies (`security.istio.io/v1`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.constants import ingress_gateway_principal, workload_apps, workload_principal
from components.istio.component import IstioMesh
from components.kube import MetricsEndpoint
from components.security import specs
from components.service_graph import ServiceGraph, ServiceId

if TYPE_CHECKING:
    from components.security.settings import IdentityProvider, SecuritySettings

TOKEN: Final = "meshstack:security:MeshSecurity"
API_VERSION: Final = "security.istio.io/v1"


@dataclass(frozen=True)
class FlaggerNamespace:
    """Flagger's namespace in a region that runs Flagger (it has progressive services)."""

    name: str
    """The namespace's name, for the controller's and the loadtester's identities."""
    metadata_name: pulumi.Output[str]
    """`metadata.name` of the Namespace resource, so the policies are created after it."""


class MeshSecurity(pulumi.ComponentResource):
    """Secure defaults for the whole region, with only the exceptions settings name.

    Children: PeerAuthentication `default` (STRICT) in the root namespace; one
    PeerAuthentication per `security.mtlsExceptions` entry; in every workload namespace
    the `allow-nothing`, `allow-public-paths` and (where Prometheus scrapes)
    `allow-metrics-scraping` AuthorizationPolicies; per service with `jwt` a
    RequestAuthentication and a DENY policy for token-less requests on protected paths;
    per service with `authorization` an ALLOW policy; per route backend the routing
    service's callers on the routed paths and its JWT requirement there; on the canary
    pods of a progressive service the loadtester; in Flagger's namespace default-deny
    with the loadtester open to the Flagger controller only.
    """

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        security: SecuritySettings,
        *,
        graph: ServiceGraph,
        namespaces: Sequence[str],
        identity_providers: Mapping[str, IdentityProvider],
        flagger: FlaggerNamespace | None,
        metrics_endpoints: Sequence[MetricsEndpoint] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`graph` holds the services to secure, `namespaces` every workload namespace
        (each default-deny); `identity_providers` the mesh's JWT issuers by the name
        `jwt.provider` uses; `flagger` is Flagger's namespace, None in a region without
        Flagger (nothing then trusts a Flagger identity); `metrics_endpoints` are other
        components' Services Prometheus scrapes on `/metrics` (the quota service)."""
        super().__init__(TOKEN, name, None, opts)
        scrapers = sorted(
            workload_principal(*account.split("/", 1))
            for account in security.prometheus_service_accounts
        )
        metrics_paths: dict[str, set[str]] = {}
        for service in graph.services.values():
            if service.metrics is not None:
                metrics_paths.setdefault(service.namespace, set()).add(service.metrics.path)
        for endpoint in metrics_endpoints:
            metrics_paths.setdefault(endpoint.namespace, set()).add(specs.METRICS_PATH)
        loadtester = specs.loadtester_principal(flagger.name) if flagger else None
        exposed = {
            service_id
            for service_id, service in graph.services.items()
            if service.traffic.expose is not None
        }
        # An endpoint route of X to Y is applied by the caller's sidecar (or the gateway):
        # Y sees X's callers, so they are allowed on Y for the routed paths, and X's JWT
        # requirement is carried over to those paths of Y.
        routed: dict[ServiceId, list[specs.RoutedFrom]] = {}
        for service_id, service in graph.services.items():
            sources = specs.caller_principals(graph.callers(service_id))
            if service_id in exposed:
                sources = sorted({*sources, ingress_gateway_principal()})
            for backend, routes in graph.routed_backends(service_id).items():
                routed.setdefault(backend, []).append(
                    specs.RoutedFrom(
                        namespace=service.namespace,
                        name=service.name,
                        paths=tuple(specs.route_path(r.prefix, r.exact) for r in routes),
                        principals=tuple(sources),
                        jwt=service.jwt,
                    )
                )

        self._resource(
            f"{name}-mesh-mtls",
            "PeerAuthentication",
            specs.MESH_WIDE_NAME,
            namespace=mesh.namespace,
            spec=specs.mesh_peer_authentication_spec(),
            mesh=mesh,
        )
        for exception in security.mtls_exceptions:
            self._resource(
                f"{name}-mtls-{exception.namespace}-{exception.name}",
                "PeerAuthentication",
                exception.name,
                namespace=exception.namespace,
                spec=specs.exception_peer_authentication_spec(exception),
                mesh=mesh,
            )
        for ns in namespaces:
            ns_name = mesh.workload_namespace(ns).metadata.name
            for policy_name, spec in specs.namespace_policies(
                security.public_paths,
                scrapers=scrapers,
                metrics_paths=metrics_paths.get(ns, ()),
            ).items():
                self._resource(
                    f"{name}-{ns}-{policy_name}",
                    "AuthorizationPolicy",
                    policy_name,
                    namespace=ns_name,
                    spec=spec,
                    mesh=mesh,
                )
        if flagger is not None:
            for policy_name, spec in specs.flagger_namespace_policies(flagger.name).items():
                self._resource(
                    f"{name}-flagger-{policy_name}",
                    "AuthorizationPolicy",
                    policy_name,
                    namespace=flagger.metadata_name,
                    spec=spec,
                    mesh=mesh,
                )
        for service_id, service in graph.services.items():
            ns_name = mesh.workload_namespace(service.namespace).metadata.name
            principals = specs.caller_principals(graph.callers(service_id))
            progressive = service.delivery == "progressive"
            for app in workload_apps(service.name, progressive):
                # Flagger's load and acceptance tests go to `<name>-canary`, whose pods keep
                # `app: <name>`; the primary never needs the loadtester.
                canary_pods = progressive and app == service.name
                for policy in specs.service_policies(
                    app,
                    jwt=service.jwt,
                    rules=service.authorization,
                    caller_principals=principals,
                    public_paths=security.public_paths,
                    providers=identity_providers,
                    scrapers=scrapers if service.metrics is not None else (),
                    loadtester=loadtester if canary_pods else None,
                    exposed=service_id in exposed,
                    routed=routed.get(service_id, ()),
                ):
                    self._resource(
                        f"{name}-{service.namespace}-{policy.name}",
                        policy.kind,
                        policy.name,
                        namespace=ns_name,
                        spec=policy.spec,
                        mesh=mesh,
                    )

        # No outputs: nothing reads the mode (always STRICT) or the admitted identities.
        self.register_outputs({})

    def _resource(
        self,
        resource_name: str,
        kind: str,
        name: str,
        *,
        namespace: pulumi.Input[str],
        spec: dict[str, Any],
        mesh: IstioMesh,
    ) -> CustomResource:
        return CustomResource(
            resource_name,
            api_version=API_VERSION,
            kind=kind,
            metadata={"name": name, "namespace": namespace},
            spec=spec,
            opts=mesh.custom_resource_options(self),
        )
