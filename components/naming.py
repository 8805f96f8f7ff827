"""Kubernetes naming rules shared by the settings model and the components.

Pulumi names (URNs) and Kubernetes `metadata.name` are different things: Pulumi names are
derived from the component name, Kubernetes names from settings. Both must be valid and
unique; these helpers are the one place that knows the Kubernetes rules.
"""

from __future__ import annotations

import re
from typing import Final

CLUSTER_DOMAIN: Final = "cluster.local"
"""Kubernetes cluster domain; Istio's trust domain default matches it."""

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "pulumi"}
"""Label on every object the program creates itself, so operators can tell them apart."""

DNS_LABEL_MAX: Final = 63
DNS_SUBDOMAIN_MAX: Final = 253

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def is_dns_label(value: str) -> bool:
    """RFC 1123 label: what Kubernetes requires of namespace and Service names."""
    return len(value) <= DNS_LABEL_MAX and bool(_DNS_LABEL.match(value))


def is_dns_subdomain(value: str) -> bool:
    """RFC 1123 subdomain: what Kubernetes requires of most other object names."""
    return len(value) <= DNS_SUBDOMAIN_MAX and bool(_DNS_SUBDOMAIN.match(value))


def dns_label(*parts: str) -> str:
    """Join parts with '-' into a Kubernetes name, failing loudly if it is not valid.

    Names are never truncated silently: two long names truncated to the same prefix would
    collide, so an over-long name is a settings error the caller must surface.
    """
    name = "-".join(p for p in parts if p)
    if not is_dns_label(name):
        raise ValueError(
            f"{name!r} is not a valid Kubernetes name "
            f"(lowercase letters, digits and '-', at most {DNS_LABEL_MAX} characters)"
        )
    return name


def service_fqdn(name: str, namespace: str) -> str:
    """Fully qualified in-cluster host of a Service, as Istio and Envoy name it."""
    return f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"
