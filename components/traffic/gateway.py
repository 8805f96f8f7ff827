"""IngressGateways: the `Gateway` objects that admit public hosts at the ingress gateway."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Final

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.naming import MANAGED_BY
from components.traffic import specs
from components.traffic.settings import GatewaySettings

if TYPE_CHECKING:
    # Types only: the root model imports this package, so importing it (or the mesh's
    # modules, which import it) at runtime would be a cycle.
    from components.istio.component import IstioMesh

TOKEN: Final = "meshstack:traffic:IngressGateways"


class IngressGateways(pulumi.ComponentResource):
    """One Gateway per `traffic.gateways` entry, in the ingress gateway's namespace.

    Each serves HTTPS (TLS SIMPLE, the entry's Secret, TLS 1.2+) and answers HTTP with a
    redirect to HTTPS. The selector is the ingress gateway's own pod labels, read from the
    IstioMesh. The TLS Secret must exist in that namespace (Istio reads `credentialName`
    from the gateway's namespace); the program does not create certificates.
    """

    references: pulumi.Output[dict[str, str]]
    """`<namespace>/<name>` of each Gateway by settings name, for VirtualService `gateways`."""

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        gateways: Sequence[GatewaySettings],
        *,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        self.resources: dict[str, CustomResource] = {}
        """The Gateway objects by settings name."""
        for gateway in gateways:
            self.resources[gateway.name] = CustomResource(
                f"{name}-{gateway.name}",
                api_version="networking.istio.io/v1",
                kind="Gateway",
                metadata={
                    "name": gateway.name,
                    "namespace": mesh.ingress_namespace,
                    "labels": dict(MANAGED_BY),
                },
                spec=mesh.ingress_selector.apply(partial(specs.gateway_spec, gateway)),
                opts=mesh.custom_resource_options(self),
            )
        self.references = mesh.ingress_namespace.apply(
            lambda ns: {g.name: f"{ns}/{g.name}" for g in gateways}
        )
        self.register_outputs({"references": self.references})

    def reference(self, gateway: str) -> pulumi.Output[str]:
        """`<namespace>/<name>` of one Gateway."""
        return self.references.apply(lambda refs: refs[gateway])
