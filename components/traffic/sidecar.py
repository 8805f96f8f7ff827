"""SidecarScopes: one `Sidecar` per workload namespace, limiting what its proxies know.

Without a Sidecar every proxy receives the configuration of every service in the mesh, so
memory and push time grow with the mesh; with one, a proxy gets its own namespace, the
control plane, observability and the services its namespace declares in `calls`.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Final

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.istio.component import IstioMesh
from components.naming import MANAGED_BY
from components.service_graph import ServiceGraph
from components.settings import MeshService, StackSettings
from components.traffic import specs

TOKEN: Final = "meshstack:traffic:SidecarScopes"
SIDECAR_NAME: Final = "default"
"""One namespace-wide Sidecar (no workload selector) per namespace; Istio uses the oldest
if there are several, so the program owns exactly one, named as Istio's docs name it."""


def _sidecar(
    ns: str,
    callees: list[MeshService],
    settings: StackSettings,
    istio_namespace: str,
) -> dict[str, Any]:
    return specs.sidecar_spec(
        ns,
        callees,
        istio_namespace=istio_namespace,
        observability_namespace=settings.observability_namespace,
    )


class SidecarScopes(pulumi.ComponentResource):
    """Sidecars for every workload namespace of the stack."""

    egress_hosts: pulumi.Output[dict[str, list[str]]]
    """Egress hosts allowed per namespace."""

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        mesh: IstioMesh,
        *,
        graph: ServiceGraph,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        hosts: dict[str, pulumi.Output[list[str]]] = {}
        for ns in settings.namespaces:
            callees = [graph.service(callee) for callee in graph.namespace_callees(ns)]
            spec = mesh.namespace.apply(partial(_sidecar, ns, callees, settings))
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
            hosts[ns] = spec.apply(lambda s: list(s["egress"][0]["hosts"]))
        self.egress_hosts = (
            pulumi.Output.all(**hosts).apply(dict) if hosts else pulumi.Output.from_input({})
        )
        self.register_outputs({"egress_hosts": self.egress_hosts})
