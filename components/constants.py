"""Mesh-wide constants several areas agree on, and nothing else.

Names every area must spell the same way: the control-plane and gateway namespaces, the
workload identities AuthorizationPolicies match, Flagger's `-primary` suffix, the label
that keeps a pod out of the sidecar PodMonitor, the sidecar's resources and the ports it
reserves for itself. This module imports nothing of the project, so any module can import
it without a cycle.
"""

from __future__ import annotations

from typing import Final

TRUST_DOMAIN: Final = "cluster.local"
"""Istio's default trust domain; the program does not set `meshConfig.trustDomain`."""

ISTIO_NAMESPACE: Final = "istio-system"
INGRESS_NAMESPACE: Final = "istio-ingress"
EGRESS_NAMESPACE: Final = "istio-egress"
INGRESS_GATEWAY_NAME: Final = "istio-ingressgateway"
EGRESS_GATEWAY_NAME: Final = "istio-egressgateway"
EASTWEST_GATEWAY_NAME: Final = "istio-eastwestgateway"

PROXY_RESOURCES: Final = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "2", "memory": "1Gi"},
}
"""Sidecars: the chart's defaults, stated so the policy pack sees requests and limits."""

PRIMARY_SUFFIX: Final = "-primary"
"""Flagger runs a progressive service's stable pods as `<name>-primary`, relabelled
`app: <name>-primary`, next to the canary pods that keep `app: <name>`."""

FLAGGER_SERVICE_ACCOUNT: Final = "flagger"
"""Service account of the Flagger controller: the flagger chart names it after its fullname,
which is the release name `flagger` (flagger-1.44.0 `_helpers.tpl`
`flagger.serviceAccountName`, `serviceAccount.create: true`)."""

LOADTESTER_SERVICE_ACCOUNT: Final = "flagger-loadtester"
"""Service account of Flagger's loadtester: with `rbac.create` on, the loadtester chart
creates one named after its fullname, the release `flagger-loadtester` (0.38.0
`rbac.yaml`); without it the pod runs as its namespace's `default`."""

LOADTESTER_APP: Final = "loadtester"
"""`app` label of the loadtester's pods (the chart's name, `deployment.yaml`)."""

CANARY_SUFFIX: Final = "-canary"
"""Flagger's Service of a progressive service's canary pods: `<name>-canary`, labelled
`app: <name>-canary`, selecting the canary pods (`app: <name>`)."""

PROMETHEUS_IGNORE_LABEL: Final = "istio-prometheus-ignore"
"""Pod label (any value) that opts a pod out of the sidecar PodMonitor, as in Istio's
`samples/addons/extras/prometheus-operator.yaml`: for pods whose 15090 Prometheus cannot
reach, e.g. behind a chart's NetworkPolicy."""


def workload_principal(namespace: str, service_account: str) -> str:
    """The mTLS identity of a workload, as AuthorizationPolicy `principals` match it."""
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def ingress_gateway_principal() -> str:
    """Identity of the ingress gateway: the chart names its service account after the
    release (`INGRESS_GATEWAY_NAME`), in the gateway's namespace."""
    return workload_principal(INGRESS_NAMESPACE, INGRESS_GATEWAY_NAME)


def workload_apps(name: str, progressive: bool) -> tuple[str, ...]:
    """The `app` label values of a service's pods: with Flagger, also the primary's."""
    return (name, f"{name}{PRIMARY_SUFFIX}") if progressive else (name,)


def pod_services(name: str, progressive: bool) -> tuple[str, ...]:
    """The `app` labels of Services that together select each of a service's pods once.

    Static: the service's own Service. Progressive: Flagger's `<name>-primary` (primary
    pods) and `<name>-canary` (canary pods), never the apex `<name>`, which selects the
    primary pods too (fluxcd/flagger `pkg/router/kubernetes_default.go`).
    """
    return (f"{name}{PRIMARY_SUFFIX}", f"{name}{CANARY_SUFFIX}") if progressive else (name,)


ISTIO_RESERVED_PORTS: Final = {
    15000: "Envoy admin",
    15001: "outbound capture",
    15004: "debug",
    15006: "inbound capture",
    15008: "HBONE mTLS tunnel",
    15009: "HBONE on a secure network",
    15020: "merged Prometheus telemetry",
    15021: "health checks",
    15053: "DNS proxy",
    15090: "Envoy Prometheus telemetry",
}
"""Ports the sidecar itself listens on (istio.io, "Ports used by Istio"): iptables sends
15008, 15020, 15021 and 15090 straight to Envoy and redirects all other inbound traffic to
15006, so an application port among them is never reached through the mesh, nor are its
AuthorizationPolicy rules or mTLS exceptions applied to it."""


SKIP_SERVICE_AWAIT: Final = {"pulumi.com/skipAwait": "true"}
"""Annotation of a Service whose readiness nothing waits for. pulumi-kubernetes calls a
Service with a selector ready only 10 s after its Endpoints last changed
(`provider/pkg/await/service.go`, with no provider-wide switch: pulumi-kubernetes#1421); a
chart's dependents wait for every object of the chart, so the settle lands on their path
too. The Deployment behind such a Service is still awaited (its pods Ready), which is the
readiness its dependents need; see README "Benchmark" for each Service it is set on."""
