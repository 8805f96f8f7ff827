"""Where the mesh's Prometheus is, from `prometheusUrl`: its in-cluster Service, if any.

Flagger (every region) and Kiali (the hub) query that Prometheus from meshed pods, so the
program must know the Service's namespace: to check the URL names it, and to turn mTLS off
towards it (`PrometheusAccess`).
"""

from __future__ import annotations

import re
from typing import Final

_URL_HOST: Final = re.compile(r"^https?://(?P<host>\[[^\]]+\]|[^\s/:]+)")
_IN_CLUSTER_SERVICE: Final = re.compile(
    r"^(?P<service>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
    r"(\.svc(\.cluster\.local)?)?$"
)


def prometheus_service_host(url: str) -> str | None:
    """The in-cluster Service FQDN of a Prometheus URL, or None for a host outside the cluster.

    `<service>.<namespace>`, `<service>.<namespace>.svc` and the full
    `<service>.<namespace>.svc.cluster.local` all resolve to a Kubernetes Service through the
    pod's DNS search path (the FQDN is what a DestinationRule host matches); longer names and
    IP addresses are external hosts. A two-label external name would get an inert rule for a
    Service that does not exist, which is harmless; a missed Service would fail every canary.
    """
    found = _URL_HOST.match(url)
    host = found.group("host").lower() if found else ""
    service = _IN_CLUSTER_SERVICE.match(host)
    if service is None:
        return None
    return f"{service.group('service')}.{service.group('namespace')}.svc.cluster.local"


def check_prometheus_url(url: str) -> str:
    """`prometheusUrl` must say which namespace its Service is in.

    Flagger and Kiali run in different namespaces, so a bare Service name would resolve to a
    different (usually missing) Service for each; and the program must know the Service's
    namespace to turn off mTLS towards it (`PrometheusAccess`).
    """
    found = _URL_HOST.match(url)
    host = found.group("host") if found else ""
    if host and "." not in host and not host.startswith("["):
        raise ValueError(
            f"host {host!r} must name the namespace (`<service>.<namespace>.svc.cluster.local`): "
            "Flagger and Kiali resolve it from different namespaces"
        )
    return url
