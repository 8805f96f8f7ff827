"""SidecarScopes: one `Sidecar` per workload namespace, limiting what its proxies know.

Without a Sidecar every proxy receives the configuration of every service in the mesh, so
memory and push time grow with the mesh; with one, a proxy gets its own namespace, the
control plane, observability and the services its namespace declares in `calls`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final

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


def _sidecar(
    ns: str, callees: list[MeshService], observability_namespace: str, istio_namespace: str
) -> dict[str, Any]:
    return specs.sidecar_spec(
        ns,
        callees,
        istio_namespace=istio_namespace,
        observability_namespace=observability_namespace,
    )


class SidecarScopes(pulumi.ComponentResource):
    """Sidecars for every workload namespace of the stack."""

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        namespaces: Sequence[str],
        *,
        graph: ServiceGraph,
        observability_namespace: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`namespaces`: every workload namespace; `graph` says whom each one's services
        call; `observability_namespace` is where Jaeger and Kiali run."""
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
        self.register_outputs({})
