"""MeshSecurity: mTLS, JWT authentication and default-deny authorization for one region.

The builders live in `components.security.specs`; this component only creates the
resources: the mesh-wide STRICT PeerAuthentication in the root namespace, the narrow
exceptions from settings, per-service RequestAuthentications, and per-namespace and
per-service AuthorizationPolicies (`security.istio.io/v1`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.constants import ingress_gateway_principal, workload_apps
from components.istio.component import IstioMesh
from components.security import specs
from components.service_graph import ServiceGraph, ServiceId

if TYPE_CHECKING:
    from components.security.settings import SecuritySettings

TOKEN: Final = "meshstack:security:MeshSecurity"
API_VERSION: Final = "security.istio.io/v1"


class MeshSecurity(pulumi.ComponentResource):
    """Secure defaults for the whole region, with only the exceptions settings name.

    Children: PeerAuthentication `default` (STRICT) in the root namespace; one
    PeerAuthentication per `security.mtlsExceptions` entry; in every workload namespace
    the `allow-nothing`, `allow-trusted-namespaces` and `allow-public-paths`
    AuthorizationPolicies; per service with `jwt` a RequestAuthentication and a DENY
    policy for token-less requests on protected paths; per service with `authorization`
    an ALLOW policy; per route backend the routing service's callers on the routed paths
    and its JWT requirement there.
    """

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        security: SecuritySettings,
        *,
        graph: ServiceGraph,
        namespaces: Sequence[str],
        observability_namespace: str,
        flagger_namespace: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`graph` holds the services to secure, `namespaces` every workload namespace
        (each default-deny); Jaeger and Kiali's namespace and Flagger's are trusted like
        `security.trustedSourceNamespaces`."""
        super().__init__(TOKEN, name, None, opts)
        trusted = sorted(
            {
                *security.trusted_source_namespaces,
                observability_namespace,
                # Flagger's load tester sends the canary's acceptance and load traffic.
                flagger_namespace,
            }
        )
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
                trusted, security.public_paths
            ).items():
                self._resource(
                    f"{name}-{ns}-{policy_name}",
                    "AuthorizationPolicy",
                    policy_name,
                    namespace=ns_name,
                    spec=spec,
                    mesh=mesh,
                )
        for service_id, service in graph.services.items():
            ns_name = mesh.workload_namespace(service.namespace).metadata.name
            principals = specs.caller_principals(graph.callers(service_id))
            for app in workload_apps(service.name, service.delivery == "progressive"):
                for policy in specs.service_policies(
                    app,
                    jwt=service.jwt,
                    rules=service.authorization,
                    caller_principals=principals,
                    trusted_namespaces=trusted,
                    public_paths=security.public_paths,
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

        # No outputs: nothing reads the mode (always STRICT) or the trusted namespaces.
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
