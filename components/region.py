"""RegionMesh: everything one region runs, composed from the area components.

The only place that knows how the parts fit together: which component receives which,
in what order they are created. `__main__.py` builds the settings and the provider and
hands both here.
"""

from __future__ import annotations

from typing import Final

import pulumi

from components.alerts import MeshAlerts
from components.istio import IstioMesh
from components.settings import StackSettings

TOKEN: Final = "meshstack:region:RegionMesh"


class RegionMesh(pulumi.ComponentResource):
    """One region of the mesh: Istio, and the components later issues add on top of it."""

    istio_namespace: pulumi.Output[str]
    """Control-plane namespace."""
    workload_namespaces: pulumi.Output[list[str]]
    """Workload namespaces with injection enabled."""
    istio_version: pulumi.Output[str]
    """Installed Istio version."""
    mesh_id: pulumi.Output[str]
    """Mesh id shared by all regions."""
    ingress_address: pulumi.Output[str]
    """Where public traffic enters this region; known after deploy."""

    def __init__(
        self, name: str, settings: StackSettings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        self.mesh = IstioMesh(f"{name}-istio", settings, opts=pulumi.ResourceOptions(parent=self))
        self.alerts = MeshAlerts(
            f"{name}-alerts", self.mesh, settings, opts=pulumi.ResourceOptions(parent=self)
        )

        self.istio_namespace = self.mesh.namespace
        self.workload_namespaces = self.mesh.workload_namespaces
        self.istio_version = self.mesh.version
        self.mesh_id = self.mesh.mesh_id
        self.ingress_address = self.mesh.ingress_address
        self.register_outputs(
            {
                "istio_namespace": self.istio_namespace,
                "workload_namespaces": self.workload_namespaces,
                "istio_version": self.istio_version,
                "mesh_id": self.mesh_id,
                "ingress_address": self.ingress_address,
            }
        )
