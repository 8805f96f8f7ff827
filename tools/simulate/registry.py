"""configgen's input for one stack: the Istio objects the stack applies, the objects Flagger
writes for each Canary, the mesh config the default istiod runs with, and the service registry
the workloads would create (what istiod's Kubernetes controller builds from Services and pods).

Where this differs from a cluster (the simulation's output repeats it):
- Flagger's objects are the ones its Istio router's `Reconcile` writes before any analysis
  (fluxcd/flagger `pkg/router/istio.go`): VirtualService `<name>` with the Canary's hosts,
  gateways, timeout, retries and CORS, `<name>-primary` weight 100 and `<name>-canary` 0;
  DestinationRules `<name>-primary` and `<name>-canary` with the Canary's trafficPolicy.
- Pods are the fewest the settings declare (`versions[].minReplicas`), with addresses from
  10.x; a progressive service's pods are the primary's (`app: <name>-primary`, as Flagger's
  primary Deployment labels them), its canary Deployment scaled to zero.
- One cluster (the registry is the region's own); remote regions' endpoints are absent.
- Jaeger (a hub's `jaeger` release): one sidecar-injected pod with the chart's pod labels and
  service account, behind the chart's Service ports (`jaeger_workload`), so istiod writes
  the inbound listener whose authorization the simulation judges.

Pure: parsed documents and settings in, a JSON-ready dict out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from components.constants import INGRESS_NAMESPACE
from components.observability import jaeger_values
from components.settings import MeshService, StackSettings
from tools.simulate.expect import INGRESS, prometheus_target

ISTIO_GROUPS: Final = ("networking.istio.io/", "security.istio.io/", "telemetry.istio.io/")
PORT_PREFIX: Final = {"http": "http", "http2": "http2", "grpc": "grpc"}
JAEGER_PROXY: Final = "jaeger"
"""Proxy id of Jaeger's sidecar: `<namespace>/jaeger`."""
JAEGER_CHART_PORTS: Final = (
    ("config-rest", 5778, ""),
    ("http-zipkin", 9411, "http"),
    ("grpc-http", 14250, "grpc"),
    ("c-tchan-trft", 14267, ""),
    ("http-c-binary-trft", 14268, "http"),
    ("otlp-grpc", 4317, "grpc"),
    ("otlp-http", 4318, "http"),
    ("http-query", 16686, ""),
    ("grpc-query", 16685, ""),
    ("internal-metrics", 8888, "http"),
    ("span-metrics", 8889, "http"),
)
"""The TCP ports of the jaeger chart's Service (name, port, appProtocol), as chart 4.11.1's
`templates/jaeger/jaeger-service.yaml` renders them; its UDP agent ports carry no HTTP and
get no listener. tests/test_charts.py holds this against the expanded chart."""
ISTIO_PROTOCOLS: Final = {"http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "tcp": "TCP"}


def istio_protocol(name: str, app_protocol: str = "") -> str:
    """The protocol istiod gives a Service port: `appProtocol`, else the name's prefix before
    `-`; anything else is "" (istiod sniffs it)."""
    return ISTIO_PROTOCOLS.get((app_protocol or name.split("-", 1)[0]).lower(), "")


@dataclass(frozen=True)
class JaegerWorkload:
    """Jaeger's pod and Service as the chart renders them for the release's values."""

    namespace: str
    service: str
    labels: dict[str, str]
    service_account: str
    ports: tuple[tuple[str, int, str], ...] = JAEGER_CHART_PORTS


def jaeger_workload(helm_releases: Iterable[Mapping[str, Any]]) -> JaegerWorkload | None:
    """The chart's names for the `jaeger` release (none without one): the Deployment's pod
    labels are `jaeger.selectorLabels` (`app.kubernetes.io/name`: `nameOverride` or the
    chart's name; `app.kubernetes.io/instance`: the release), `app.kubernetes.io/component:
    all-in-one` and `jaeger.podLabels`; its service account and Service are
    `jaeger.fullname`."""
    for release in helm_releases:
        if not release or release.get("name") != jaeger_values.RELEASE:
            continue
        values = release.get("values") or {}
        name_override = str(values.get("nameOverride") or "")
        fullname = jaeger_values.jaeger_fullname(
            release["name"], name_override, str(values.get("fullnameOverride") or "")
        )
        labels = {
            "app.kubernetes.io/name": (name_override or jaeger_values.CHART_NAME)[:63],
            "app.kubernetes.io/instance": release["name"],
            "app.kubernetes.io/component": "all-in-one",
            **{
                str(k): str(v)
                for k, v in ((values.get("jaeger") or {}).get("podLabels") or {}).items()
            },
        }
        return JaegerWorkload(str(release["namespace"]), fullname, labels, fullname)
    return None


def istio_objects(manifests: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The Istio objects of a render (networking, security, telemetry)."""
    return [
        dict(doc)
        for doc in manifests
        if doc and str(doc.get("apiVersion", "")).startswith(ISTIO_GROUPS)
    ]


def flagger_objects(canary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The VirtualService and DestinationRules Flagger's Istio router reconciles for a Canary
    before any analysis (flagger pkg/router/istio.go `Reconcile`, `makeDestination`)."""
    name = canary["spec"]["targetRef"]["name"]
    namespace = canary["metadata"]["namespace"]
    service = canary["spec"]["service"]
    hosts = list(service.get("hosts") or [])
    if name not in hosts and "*" not in hosts:
        hosts.append(name)
    gateways = list(service.get("gateways") or []) or ["mesh"]

    def destination(host: str, weight: int) -> dict[str, Any]:
        dest: dict[str, Any] = {"host": host}
        given = service.get("gateways") or []
        if service.get("portDiscovery") and (given and given[0] != "mesh"):
            dest["port"] = {"number": service["port"]}
        return {"destination": dest, "weight": weight}

    route: dict[str, Any] = {
        "route": [destination(f"{name}-primary", 100), destination(f"{name}-canary", 0)]
    }
    for key in ("match", "timeout", "retries", "corsPolicy", "headers"):
        if service.get(key):
            route[key] = service[key]
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": hosts, "gateways": gateways, "http": [route]},
        }
    ]
    for host in (f"{name}-canary", f"{name}-primary"):
        spec: dict[str, Any] = {"host": host}
        if service.get("trafficPolicy"):
            spec["trafficPolicy"] = service["trafficPolicy"]
        objects.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": host, "namespace": namespace},
                "spec": spec,
            }
        )
    return objects


def mesh_config(helm_releases: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """`meshConfig` of the default istiod (the release named `istiod`; with several
    revisions, the one without a revision)."""
    istiods = [r for r in helm_releases if r and r.get("chart", "").endswith("istiod")]
    istiods = istiods or [
        r
        for r in helm_releases
        if r and str(r.get("chart", "")).rstrip("/").split("/")[-1].startswith("istiod")
    ]
    default = [r for r in istiods if not (r.get("values") or {}).get("revision")] or istiods
    if not default:
        raise ValueError("helm.yaml has no istiod release")
    values = default[0].get("values") or {}
    config = dict(values.get("meshConfig") or {})
    global_values = values.get("global") or {}
    if "trustDomain" not in config and global_values.get("trustDomain"):
        config["trustDomain"] = global_values["trustDomain"]
    return config


class Addresses:
    """Pod and Service addresses, handed out in order."""

    def __init__(self) -> None:
        self._pod = 0
        self._vip = 0

    def pod(self) -> str:
        self._pod += 1
        return f"10.1.{self._pod // 250}.{self._pod % 250 + 1}"

    def vip(self) -> str:
        self._vip += 1
        return f"10.96.{self._vip // 250}.{self._vip % 250 + 1}"


def _port(service: MeshService, port: int | None = None) -> dict[str, Any]:
    return {
        "name": PORT_PREFIX[service.protocol],
        "port": port or service.port,
        "protocol": {"http": "HTTP", "http2": "HTTP2", "grpc": "GRPC"}[service.protocol],
    }


def _svc(
    name: str,
    namespace: str,
    ports: list[dict[str, Any]],
    *,
    pods: list[dict[str, str]],
    addresses: Addresses,
    account: str,
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "address": addresses.vip(),
        "ports": ports,
        "endpoints": [
            {"ip": addresses.pod(), "labels": labels, "serviceAccount": account} for labels in pods
        ],
    }


def registry_input(
    settings: StackSettings,
    manifests: list[dict[str, Any]],
    helm_releases: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[str]]:
    """configgen's input and the list of objects added beyond the render (for the output)."""
    objects = istio_objects(manifests)
    added: list[str] = []
    for doc in manifests:
        if doc and doc.get("kind") == "Canary":
            written = flagger_objects(doc)
            objects += written
            added += [
                f"{o['kind']} {o['metadata']['namespace']}/{o['metadata']['name']} "
                "(as Flagger writes it)"
                for o in written
            ]
    addresses = Addresses()
    services: list[dict[str, Any]] = []
    proxies: list[dict[str, Any]] = []
    progressive = {
        f"{d['metadata']['namespace']}/{d['spec']['targetRef']['name']}"
        for d in manifests
        if d and d.get("kind") == "Canary"
    }
    for service in settings.services:
        ref = f"{service.namespace}/{service.name}"
        ports = [_port(service)]
        if ref in progressive:
            fewest = min(v.min_replicas for v in service.versions)
            primary = [{"app": f"{service.name}-primary"} for _ in range(fewest)]
            entry = _svc(
                service.name,
                service.namespace,
                ports,
                pods=primary,
                addresses=addresses,
                account=service.name,
            )
            services.append(entry)
            primary_svc = dict(entry, name=f"{service.name}-primary", address=addresses.vip())
            services.append(primary_svc)
            services.append(
                _svc(
                    f"{service.name}-canary",
                    service.namespace,
                    ports,
                    pods=[],
                    addresses=addresses,
                    account=service.name,
                )
            )
            labels = {"app": f"{service.name}-primary"}
            ip = entry["endpoints"][0]["ip"]
        else:
            pods = [
                {"app": service.name, **dict(v.labels)}
                for v in service.versions
                for _ in range(v.min_replicas)
            ]
            entry = _svc(
                service.name,
                service.namespace,
                ports,
                pods=pods,
                addresses=addresses,
                account=service.name,
            )
            services.append(entry)
            labels = entry["endpoints"][0]["labels"]
            ip = entry["endpoints"][0]["ip"]
        proxies.append(
            {
                "id": ref,
                "type": "sidecar",
                "namespace": service.namespace,
                "labels": labels,
                "ip": ip,
            }
        )
    # The ingress gateway (its chart's labels), Prometheus (no sidecar), Flagger, Kiali.
    ingress_labels = {"app": "istio-ingressgateway", "istio": "ingressgateway"}
    for release in helm_releases:
        if release and release.get("name") == "istio-ingressgateway":
            ingress_labels = dict((release.get("values") or {}).get("labels") or ingress_labels)
    ingress_ns = INGRESS_NAMESPACE
    gateway = _svc(
        "istio-ingressgateway",
        ingress_ns,
        [
            {"name": "http2", "port": 80, "protocol": "HTTP2", "targetPort": 80},
            {"name": "https", "port": 443, "protocol": "HTTPS", "targetPort": 443},
        ],
        pods=[ingress_labels],
        addresses=addresses,
        account="istio-ingressgateway",
    )
    services.append(gateway)
    proxies.append(
        {
            "id": INGRESS,
            "type": "router",
            "namespace": ingress_ns,
            "labels": ingress_labels,
            "ip": gateway["endpoints"][0]["ip"],
        }
    )
    namespace, name, port = prometheus_target(settings)
    services.append(
        _svc(
            name,
            namespace,
            [{"name": "http-web", "port": port, "protocol": "HTTP"}],
            pods=[{"app.kubernetes.io/name": "prometheus"}],
            addresses=addresses,
            account="prometheus",
        )
    )
    if progressive:
        flagger_ns = settings.traffic.flagger_namespace
        flagger = _svc(
            "flagger",
            flagger_ns,
            [{"name": "http", "port": 8080, "protocol": "HTTP"}],
            pods=[{"app.kubernetes.io/name": "flagger"}],
            addresses=addresses,
            account="flagger",
        )
        services.append(flagger)
        proxies.append(
            {
                "id": f"{flagger_ns}/flagger",
                "type": "sidecar",
                "namespace": flagger_ns,
                "labels": flagger["endpoints"][0]["labels"],
                "ip": flagger["endpoints"][0]["ip"],
            }
        )
    if settings.observability.role == "hub":
        obs_ns = settings.observability_namespace
        kiali = _svc(
            "kiali",
            obs_ns,
            [{"name": "http", "port": 20001, "protocol": "HTTP"}],
            pods=[{"app": "kiali"}],
            addresses=addresses,
            account="kiali",
        )
        services.append(kiali)
        proxies.append(
            {
                "id": f"{obs_ns}/kiali",
                "type": "sidecar",
                "namespace": obs_ns,
                "labels": kiali["endpoints"][0]["labels"],
                "ip": kiali["endpoints"][0]["ip"],
            }
        )
    jaeger = jaeger_workload(helm_releases)
    if jaeger is not None:
        pod = _svc(
            jaeger.service,
            jaeger.namespace,
            [
                {"name": name, "port": port, "protocol": istio_protocol(name, app)}
                for name, port, app in jaeger.ports
            ],
            pods=[jaeger.labels],
            addresses=addresses,
            account=jaeger.service_account,
        )
        services.append(pod)
        proxies.append(
            {
                "id": f"{jaeger.namespace}/{JAEGER_PROXY}",
                "type": "sidecar",
                "namespace": jaeger.namespace,
                "labels": jaeger.labels,
                "ip": pod["endpoints"][0]["ip"],
            }
        )
    return (
        {
            "configs": yaml.safe_dump_all(objects, sort_keys=False),
            "meshConfig": yaml.safe_dump(mesh_config(helm_releases), sort_keys=False),
            "services": services,
            "proxies": proxies,
        },
        added,
    )
