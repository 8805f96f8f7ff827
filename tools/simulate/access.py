"""Who may call Jaeger, from the settings alone, and what Jaeger's sidecar as istiod
configures it does with each caller (Envoy's RBAC semantics on its `virtualInbound`
listener, `rbac.py`).

The promise (docs/observability.md, "Jaeger answers only its callers"), for a hub:

- OTLP 4317 / 4318: any mesh identity (every proxy of every region exports its spans);
- gRPC query 16685: Kiali's identity only;
- HTTP query 16686: `GET` from the identities of `jaeger.queryServiceAccounts`, and, with
  `jaeger.ingressHost`, plaintext (no identity) from `jaeger.ingressSourceIpBlocks`, any
  method (the Ingress authenticates first);
- every other port of the chart's Service, and every other caller: denied.

Callers, each with its identity as its sidecar's certificate carries it (`spiffe://<trust
domain>/ns/<namespace>/sa/<account>`; the program keeps Istio's trust domain) or none
for plaintext: each query reader, Kiali, another pod of each of their namespaces
(`default` account), every mesh service of the stack (its identity is the same in every
region: spokes reach Jaeger through the east-west gateway's mTLS passthrough), the ingress
gateway, plaintext from an address outside the Ingress blocks and from the first and last
address of each block, and a meshed pod inside a block.

Pure: settings and a listener in, calls, records and mismatch lines out.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from components.constants import ingress_gateway_principal, workload_principal
from components.istio.tracing import OTLP_GRPC_PORT, OTLP_HTTP_PORT
from components.naming import service_fqdn
from components.observability.jaeger_values import (
    QUERY_GRPC_PORT,
    QUERY_HTTP_PORT,
    RELEASE,
    jaeger_fullname,
    pod_labels,
)
from components.observability.kiali_values import SERVICE_ACCOUNT as KIALI_SERVICE_ACCOUNT
from components.settings import StackSettings
from tools.simulate import rbac, registry

SPIFFE: Final = "spiffe://"
GRPC_PORTS: Final = frozenset({OTLP_GRPC_PORT, QUERY_GRPC_PORT})
REQUESTS: Final = {
    OTLP_GRPC_PORT: ("POST", "/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
    OTLP_HTTP_PORT: ("POST", "/v1/traces"),
    QUERY_GRPC_PORT: ("POST", "/jaeger.api_v2.QueryService/FindTraces"),
    QUERY_HTTP_PORT: ("GET", "/api/traces"),
}
"""The request each port's clients send (gRPC is a POST)."""
OUTSIDE_CANDIDATES: Final = ("10.1.0.2", "172.16.0.2", "192.168.0.2", "100.64.0.2")
"""Pod addresses for callers; the first outside every Ingress block is used (no block may
be every address, and these lie in both halves of the address space)."""


@dataclass(frozen=True)
class AccessCall:
    """One request to Jaeger's pod and whether the settings admit it."""

    caller: str
    principal: str | None
    """The caller certificate's URI SAN; None: plaintext."""
    source_ip: str
    port: int
    method: str
    path: str
    allowed: bool
    why: str

    def connection(self) -> rbac.Connection:
        if self.principal is None:
            alpn: tuple[str, ...] = ()
        elif self.port in GRPC_PORTS:
            alpn = ("istio-h2",)
        elif self.port in (OTLP_HTTP_PORT, QUERY_HTTP_PORT):
            alpn = ("istio-http/1.1",)
        else:
            alpn = ("istio-peer-exchange", "istio")
        return rbac.Connection(
            self.port, self.source_ip, self.principal, alpn, self.method, self.path
        )


def identity(namespace: str, account: str) -> str:
    """A workload certificate's URI SAN."""
    return SPIFFE + workload_principal(namespace, account)


def jaeger_proxy(settings: StackSettings) -> str:
    """The registry's id of Jaeger's sidecar (`registry.JAEGER_PROXY`)."""
    return f"{settings.observability_namespace}/{registry.JAEGER_PROXY}"


def jaeger_host(settings: StackSettings) -> str:
    return service_fqdn(jaeger_fullname(RELEASE), settings.observability_namespace)


def _networks(settings: StackSettings) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(b) for b in settings.observability.jaeger.ingress_source_ip_blocks]


def outside_address(settings: StackSettings) -> str:
    networks = _networks(settings)
    for candidate in OUTSIDE_CANDIDATES:
        ip = ipaddress.ip_address(candidate)
        if not any(ip.version == n.version and ip in n for n in networks):
            return candidate
    raise ValueError("every candidate pod address lies in jaeger.ingressSourceIpBlocks")


def block_edges(settings: StackSettings) -> list[str]:
    """The first and last usable address of each Ingress block."""
    edges: list[str] = []
    for network in _networks(settings):
        hosts = [network[0]] if network.num_addresses <= 2 else [network[1], network[-2]]
        edges += [str(h) for h in hosts if str(h) not in edges]
    return edges


def promised(
    settings: StackSettings, principal: str | None, source_ip: str, port: int, method: str
) -> tuple[bool, str]:
    """Whether the settings admit the request, and the promise it falls under."""
    jaeger = settings.observability.jaeger
    readers = {identity(*a.split("/", 1)) for a in jaeger.query_service_accounts}
    kiali = identity(settings.observability_namespace, KIALI_SERVICE_ACCOUNT)
    if port in (OTLP_GRPC_PORT, OTLP_HTTP_PORT):
        if principal is None:
            return False, "OTLP takes mesh identities only (mTLS)"
        return True, "OTLP from any mesh identity"
    if port == QUERY_GRPC_PORT:
        return principal == kiali, "gRPC query: Kiali only"
    if port == QUERY_HTTP_PORT:
        if principal is None:
            ip = ipaddress.ip_address(source_ip)
            inside = any(ip.version == n.version and ip in n for n in _networks(settings))
            admitted = bool(jaeger.ingress_host) and inside
            return admitted, "HTTP query plaintext: the Ingress controller's blocks only"
        if principal in readers:
            return method == "GET", "HTTP query: queryServiceAccounts, GET only"
        return False, "HTTP query: queryServiceAccounts (GET) and the Ingress only"
    return False, "no other port of Jaeger is opened"


Caller = tuple[str, str, tuple[int, ...], tuple[str, ...]]
"""A meshed caller: name, certificate URI SAN, ports it calls, methods it sends to 16686."""


def _callers(settings: StackSettings) -> list[Caller]:
    """Each meshed caller: the readers, Kiali, their namespaces' other pods, every mesh
    service of the stack and the ingress gateway."""
    jaeger = settings.observability.jaeger
    obs = settings.observability_namespace
    query = (QUERY_HTTP_PORT, QUERY_GRPC_PORT)
    accounts = [tuple(a.split("/", 1)) for a in jaeger.query_service_accounts]
    callers: list[Caller] = [
        (f"{ns}/{sa} (query reader)", identity(ns, sa), (*query, OTLP_HTTP_PORT), ("GET", "POST"))
        for ns, sa in accounts
    ]
    callers.append(
        (
            f"{obs}/{KIALI_SERVICE_ACCOUNT} (Kiali)",
            identity(obs, KIALI_SERVICE_ACCOUNT),
            (*query, OTLP_GRPC_PORT),
            ("GET",),
        )
    )
    named = {c[1] for c in callers}
    for namespace in sorted({ns for ns, _ in accounts} | {obs}):
        other = identity(namespace, "default")
        if other not in named:
            callers.append(
                (f"{namespace}/default (another pod)", other, (*query, OTLP_GRPC_PORT), ("GET",))
            )
    for service in settings.services:
        principal = identity(service.namespace, service.name)
        if principal not in named:
            callers.append(
                (
                    f"{service.namespace}/{service.name} (mesh workload, any region)",
                    principal,
                    (*query, OTLP_GRPC_PORT),
                    ("GET",),
                )
            )
    callers.append(
        (
            "ingress gateway",
            SPIFFE + ingress_gateway_principal(),
            (*query, OTLP_HTTP_PORT),
            ("GET",),
        )
    )
    return callers


def jaeger_calls(settings: StackSettings) -> list[AccessCall]:
    """Every call the hub's settings promise or forbid on Jaeger's pod; none off a hub."""
    if not settings.observability.is_hub:
        return []
    calls: list[AccessCall] = []

    def add(caller: str, principal: str | None, ip: str, port: int, method: str = "") -> None:
        default_method, path = REQUESTS.get(port, ("POST", "/"))
        method = method or default_method
        allowed, why = promised(settings, principal, ip, port, method)
        calls.append(AccessCall(caller, principal, ip, port, method, path, allowed, why))

    pod_ip = outside_address(settings)
    for name, principal, ports, methods in _callers(settings):
        for port in ports:
            for method in methods if port == QUERY_HTTP_PORT else ("",):
                add(name, principal, pod_ip, port, method)
    # Kiali holds the widest grant besides OTLP; the chart's other ports are open to no one.
    obs = settings.observability_namespace
    kiali = identity(obs, KIALI_SERVICE_ACCOUNT)
    for _, port, _ in registry.JAEGER_CHART_PORTS:
        if port not in REQUESTS:
            add(f"{obs}/{KIALI_SERVICE_ACCOUNT} (Kiali, another port)", kiali, pod_ip, port)
    for port in (QUERY_HTTP_PORT, OTLP_HTTP_PORT):
        add(f"plaintext from {pod_ip} (outside the Ingress blocks)", None, pod_ip, port)
    edges = block_edges(settings)
    for ip in edges:
        caller = f"plaintext from {ip} (Ingress block)"
        for port, method in (
            (QUERY_HTTP_PORT, "GET"),
            (QUERY_HTTP_PORT, "POST"),
            (QUERY_GRPC_PORT, ""),
            (OTLP_GRPC_PORT, ""),
        ):
            add(caller, None, ip, port, method)
    if edges and settings.services:
        service = settings.services[0]
        add(
            f"{service.namespace}/{service.name} (meshed, at {edges[0]} in an Ingress block)",
            identity(service.namespace, service.name),
            edges[0],
            QUERY_HTTP_PORT,
        )
    return calls


def _verdict(allowed: bool) -> str:
    return "ALLOW" if allowed else "DENY"


def judge(
    stack: str, settings: StackSettings, listeners: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One record per call on Jaeger's inbound listener, and one line per mismatch."""
    listener = rbac.inbound_listener(listeners)
    host = jaeger_host(settings)
    records: list[dict[str, Any]] = []
    lines: list[str] = []
    for call in jaeger_calls(settings):
        decision = rbac.inbound_decision(listener, call.connection())
        mismatch = (
            [f"settings promise {_verdict(call.allowed)}, the sidecar would {decision.text()}"]
            if decision.allowed != call.allowed
            else []
        )
        records.append(
            {
                **asdict(call),
                "host": host,
                "service": jaeger_proxy(settings),
                "expected": _verdict(call.allowed),
                "istio": {
                    "allowed": decision.allowed,
                    "chain": decision.chain,
                    "decidedBy": decision.decided_by,
                },
                "actualText": decision.text(),
                "mismatch": mismatch,
            }
        )
        if mismatch:
            lines.append(
                f"simulate: MISMATCH {stack}: {call.caller} -> {host}:{call.port} "
                f"{call.method} {call.path}: settings promise {_verdict(call.allowed)} "
                f"({call.why}); Istio would {decision.text()}"
            )
    return records, lines


def markdown(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """behaviour.md's section on Jaeger's callers (none without records)."""
    if not records:
        return []
    lines = [
        "",
        "## Who may call Jaeger",
        "",
        "Each caller's request on Jaeger's sidecar (`virtualInbound`, the filter chain and "
        "RBAC filters istiod generated), decided with Envoy's RBAC semantics "
        "(tools/simulate/rbac.py) and checked against the settings.",
        "",
        "| caller | identity | request | settings | Istio does | as promised |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        who = r["principal"] or f"none (plaintext from {r['source_ip']})"
        request = f"{r['port']} {r['method']} {r['path']}"
        verdict = "yes" if not r["mismatch"] else "**no**"
        actual = str(r["actualText"]).replace("|", "\\|")
        lines.append(
            f"| {r['caller']} | {who} | {request} | {r['expected']}: {r['why']} | "
            f"{actual} | {verdict} |"
        )
    return lines


def widened_policy(
    manifests: list[dict[str, Any]], settings: StackSettings
) -> tuple[list[dict[str, Any]], str] | None:
    """A copy of the render whose ALLOW policy on Jaeger's pod admits a whole namespace
    where it named one account: the first exact principal becomes `<ns>/sa/*`. None when
    no such policy or principal exists."""
    broken = copy.deepcopy(manifests)
    labels = pod_labels()
    for doc in broken:
        if doc.get("kind") != "AuthorizationPolicy":
            continue
        if doc["metadata"].get("namespace") != settings.observability_namespace:
            continue
        spec = doc.get("spec") or {}
        selected = (spec.get("selector") or {}).get("matchLabels") or {}
        if spec.get("action", "ALLOW") != "ALLOW" or any(
            labels.get(k) != v for k, v in selected.items()
        ):
            continue
        for index, rule in enumerate(spec.get("rules") or []):
            for source in rule.get("from") or []:
                principals = (source.get("source") or {}).get("principals") or []
                for position, principal in enumerate(principals):
                    if "*" not in principal and "/sa/" in principal:
                        wide = principal.rsplit("/sa/", 1)[0] + "/sa/*"
                        principals[position] = wide
                        name = f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"
                        return broken, (
                            f"AuthorizationPolicy {name} rule {index}: principal {principal} "
                            f"widened to {wide}"
                        )
    return None
