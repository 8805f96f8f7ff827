"""PrometheusAccess: lets meshed clients (Flagger, Kiali) reach the Prometheus they query.

The documented Prometheus runs with an Istio sidecar that only writes certificates: inbound
capture is off (`traffic.sidecar.istio.io/includeInboundPorts: ""`), so port 9090 answers
plain HTTP. The injector still labels the pod `security.istio.io/tlsMode: istio` unless the
pod sets another value (injection-template.yaml), and istiod then gives every meshed client
an mTLS transport socket towards it: for the headless `prometheus-operated` Service
unconditionally (pilot `push_context.go` BestEffortInferServiceMTLSMode takes the mesh-wide
STRICT mode for a passthrough service whose endpoints are all meshed; `cluster_tls.go`
keeps the mTLS socket on ORIGINAL_DST clusters), and for a ClusterIP Service through the
`tlsMode-istio` socket match. Flagger's sidecar would open TLS to a plaintext port, every
metric query would fail and every canary roll back; Kiali would show nothing.

A DestinationRule with `tls.mode: DISABLE` is user-supplied TLS, which istiod applies as is
(`buildUpstreamTLSSettings`: no transport socket, plaintext) and never overrides with auto
mTLS. It sits in the mesh root namespace and is exported everywhere, so it is the rule for
every client namespace (Flagger's, the observability namespace, any other) that has none
of its own for that host.
"""

from __future__ import annotations

from typing import Any, Final

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.constants import ISTIO_NAMESPACE
from components.istio.component import IstioMesh
from components.observability.prometheus_url import prometheus_service_host

TOKEN: Final = "meshstack:observability:PrometheusAccess"

RULE_NAME: Final = "prometheus-plaintext"
"""Name of the DestinationRule in the root namespace."""


def plaintext_destination_rule(prometheus_url: str) -> dict[str, Any] | None:
    """The DestinationRule that makes meshed clients talk plaintext to Prometheus.

    None when the URL's host is outside the cluster (no sidecar there to confuse).
    """
    host = prometheus_service_host(prometheus_url)
    if host is None:
        return None
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": RULE_NAME, "namespace": ISTIO_NAMESPACE},
        "spec": {
            "host": host,
            # A root-namespace rule is every namespace's fallback only when exported to all.
            "exportTo": ["*"],
            "trafficPolicy": {"tls": {"mode": "DISABLE"}},
        },
    }


class PrometheusAccess(pulumi.ComponentResource):
    """The mesh-wide DestinationRule towards the configured Prometheus (module docstring).

    Children: one DestinationRule in the root namespace, after istiod (its CRD and
    webhook); none when Prometheus is outside the cluster.
    """

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        prometheus_url: str,
        *,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        rule = plaintext_destination_rule(prometheus_url)
        if rule is not None:
            CustomResource(
                f"{name}-plaintext",
                api_version=rule["apiVersion"],
                kind=rule["kind"],
                metadata={"name": RULE_NAME, "namespace": mesh.namespace},
                spec=rule["spec"],
                opts=mesh.custom_resource_options(self),
            )
        # No outputs: nothing reads one.
        self.register_outputs({})
