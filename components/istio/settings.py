"""IstioSettings: the slice of the stack settings that IstioMesh and its values builders read.

The config keys stay flat at the root of the stack settings (`meshstack:meshId`,
`meshstack:istiodReplicas`, …); `StackSettings.istio` gathers them, with the defaults of
`clusterName` and `network` already applied, so the mesh and `components.istio.values`
never see the rest of the stack. `IstioRevisionSettings` is one entry of
`meshstack:istioRevisions`, the control-plane revisions of a canary upgrade
(docs/upgrades.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pydantic import Field

from components.settings_types import ChartSource, DnsLabel, SettingsModel
from components.versions import ISTIO_VERSION, ISTIO_VERSIONS

DEFAULT_TAG: Final = "default"
"""The revision tag Istio treats specially: its webhook also injects namespaces labelled
`istio-injection: enabled` (untagged ones), and gateways follow it."""


class IstioRevisionSettings(SettingsModel):
    """One istiod revision of `meshstack:istioRevisions`: a control plane of its own."""

    name: DnsLabel = Field(
        max_length=30,
        description=(
            "Revision name: the Helm release `istiod-<name>` and the `istio.io/rev` label of "
            "its proxies. Convention: the version with dashes, e.g. `1-30-4`. `default` is the "
            "unrevisioned istiod (release `istiod`) of a stack without `istioRevisions`, "
            "which a stack declares first to upgrade from it. Required."
        ),
    )
    version: str = Field(
        description=(
            f"Istio release it runs, one pinned in components/versions.py "
            f"({', '.join(ISTIO_VERSIONS)}). Required."
        ),
    )
    tags: tuple[DnsLabel, ...] = Field(
        default=(),
        description=(
            "Revision tags pointing at it, e.g. `[default, stable]`. Exactly one revision "
            "carries `default`: untagged namespaces and the gateways go there. Default: none."
        ),
    )


@dataclass(frozen=True)
class IstioRevision:
    """An istiod revision as the mesh installs it."""

    name: str
    """`revision` of the istiod chart; empty for the unrevisioned install (`istiod`),
    which `istioRevisions` calls `default`."""
    version: str
    """Pinned Istio release (`components.versions.ISTIO_VERSIONS`)."""
    tags: tuple[str, ...] = ()
    """Revision tags pointing at it; each becomes a `istio-revision-tag-<tag>` webhook."""


UNREVISIONED_NAME: Final = "default"
"""What `istioRevisions` calls the unrevisioned istiod (Istio labels it `istio.io/rev:
default` too)."""

UNREVISIONED: Final = IstioRevision("", ISTIO_VERSION, (DEFAULT_TAG,))
"""What a stack without `istioRevisions` runs: one istiod, release `istiod`, no tags,
namespaces labelled `istio-injection: enabled`."""


@dataclass(frozen=True)
class IstioSettings:
    """What the Istio control plane and gateways of one region are built from."""

    mesh_id: str
    """`global.meshID`, the same in every region."""
    cluster_name: str
    """`global.multiCluster.clusterName` (the setting, else the region)."""
    network: str
    """`global.network` of this cluster (the setting, else `network-<region>`)."""
    revisions: tuple[IstioRevision, ...]
    """istiod revisions side by side; `(UNREVISIONED,)` without `istioRevisions`."""
    revisioned: bool
    """`istioRevisions` is declared: every tag, `default` included, is a webhook the program
    owns, and an unrevisioned istiod among the revisions injects only through it. Moving the
    `default` tag is then always an in-place update of that one webhook (docs/upgrades.md)."""
    namespace_revisions: Mapping[str, str]
    """Workload namespace → the tag (or revision) injecting it; others are untagged."""
    workload_namespaces: tuple[str, ...]
    """Workload namespaces the mesh creates with injection enabled, sorted."""
    proxy_stats_inclusion_regexps: tuple[str, ...]
    """Envoy stats exported beyond Istio's standard metrics."""
    cluster_local_hosts: tuple[str, ...]
    """Hosts kept in this region (`meshConfig.serviceSettings` clusterLocal), sorted."""
    istiod_replicas: int
    istiod_max_replicas: int
    gateway_replicas: int
    gateway_max_replicas: int
    egress_gateway: bool
    """Install the egress gateway."""
    east_west_gateway: bool
    """Install the east-west gateway and the cross-network Gateway."""
    east_west_gateway_service_annotations: Mapping[str, str]
    """Annotations of the east-west gateway's LoadBalancer Service."""
    chart_source: ChartSource
    """Where every Helm chart of the region comes from (`meshstack:chartSource`)."""

    @property
    def default_revision(self) -> IstioRevision:
        """Where untagged namespaces and the gateways go: the revision tagged `default`."""
        return next(r for r in self.revisions if DEFAULT_TAG in r.tags)

    @property
    def crd_version(self) -> str:
        """Istio release of the one `base` chart (CRDs): the newest installed, as Istio's
        canary upgrade requires (new CRDs serve old control planes, not the reverse)."""
        return max((r.version for r in self.revisions), key=_version_key)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
