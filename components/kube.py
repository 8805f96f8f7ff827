"""Small builders of core Kubernetes objects the components share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.naming import MANAGED_BY


def namespace(
    resource_name: str,
    name: str,
    labels: Mapping[str, str],
    *,
    parent: pulumi.Resource,
) -> k8s.core.v1.Namespace:
    """A namespace the program owns but never deletes (deletion cascades to its contents)."""
    return k8s.core.v1.Namespace(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=name,
            labels={**MANAGED_BY, **labels},
        ),
        opts=pulumi.ResourceOptions(parent=parent, retain_on_delete=True),
    )


@dataclass(frozen=True)
class MetricsEndpoint:
    """A Service port Prometheus scrapes: what a component that serves metrics hands to the
    component that configures scraping (e.g. the ratelimit service to MeshAlerts)."""

    namespace: str
    service: str
    """`metadata.name` of the Service."""
    port_name: str
    """Name of the Service port that serves `/metrics`."""
