"""SidecarScopes: one `Sidecar` per injected namespace, limiting what its proxies know.

Without a Sidecar every proxy receives the configuration of every service in the mesh, so
memory and push time grow with the mesh; with one, a proxy gets its own namespace, the
control plane, observability and the services its namespace declares in `calls`. The
injected system namespaces the program creates (Flagger's, the hub's observability
namespace) get one too, with the hosts their workloads call; gateway namespaces get none
(a gateway must see every host it routes to).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.naming import MANAGED_BY
from components.traffic import specs

if TYPE_CHECKING:
    # Types only: the root model imports this package, so importing it (or the mesh's
    # modules, which import it) at runtime would be a cycle.
    from components.istio.component import IstioMesh
    from components.service_graph import ServiceGraph
    from components.settings import MeshService

TOKEN: Final = "meshstack:traffic:SidecarScopes"
SIDECAR_NAME: Final = "default"
"""One namespace-wide Sidecar (no workload selector) per namespace; Istio uses the oldest
if there are several, so the program owns exactly one, named as Istio's docs name it."""


class SystemNamespace(NamedTuple):
    """An injected namespace the program creates for its own workloads."""

    key: str
    """Stable part of the Sidecar's Pulumi name, e.g. `flagger`."""
    name: pulumi.Output[str]
    """The namespace, once created."""
    egress_hosts: tuple[str, ...]
    """`<namespace>/<host>` entries its workloads call beyond itself, the control plane and
    observability."""


def _sidecar(
    ns: str,
    callees: list[MeshService],
    observability_namespace: str,
    istio_namespace: str,
    extra_hosts: Sequence[str] = (),
) -> dict[str, Any]:
    return specs.sidecar_spec(
        ns,
        callees,
        istio_namespace=istio_namespace,
        observability_namespace=observability_namespace,
        extra_hosts=extra_hosts,
    )


def _system_sidecar(
    system: SystemNamespace, observability_namespace: str, names: list[Any]
) -> dict[str, Any]:
    ns, istio_namespace = (str(n) for n in names)
    return _sidecar(ns, [], observability_namespace, istio_namespace, system.egress_hosts)


class SidecarScopes(pulumi.ComponentResource):
    """Sidecars for every workload namespace and injected system namespace of the stack."""

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        namespaces: Sequence[str],
        *,
        graph: ServiceGraph,
        observability_namespace: str,
        system_namespaces: Sequence[SystemNamespace] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`namespaces`: every workload namespace; `graph` says whom each one's services
        call; `observability_namespace` is where Jaeger and Kiali run;
        `system_namespaces`: the other injected namespaces the program creates."""
        super().__init__(TOKEN, name, None, opts)
        for ns in namespaces:
            callees = [graph.service(callee) for callee in graph.namespace_callees(ns)]
            spec = mesh.namespace.apply(partial(_sidecar, ns, callees, observability_namespace))
            CustomResource(
                f"{name}-{ns}",
                api_version="networking.istio.io/v1",
                kind="Sidecar",
                metadata={
                    "name": SIDECAR_NAME,
                    "namespace": mesh.workload_namespace(ns).metadata.name,
                    "labels": dict(MANAGED_BY),
                },
                spec=spec,
                opts=mesh.custom_resource_options(self),
            )
        for system in system_namespaces:
            CustomResource(
                f"{name}-{system.key}",
                api_version="networking.istio.io/v1",
                kind="Sidecar",
                metadata={
                    "name": SIDECAR_NAME,
                    "namespace": system.name,
                    "labels": dict(MANAGED_BY),
                },
                spec=pulumi.Output.all(system.name, mesh.namespace).apply(
                    partial(_system_sidecar, system, observability_namespace)
                ),
                opts=mesh.custom_resource_options(self),
            )
        self.register_outputs({})
