"""Every chart and image version the program deploys, pinned in one place.

Bumping a version is a one-line change here, reviewed through `pulumi preview`. Nothing
in the program may use `latest` or an unpinned chart: the policy pack and the tests
enforce it. The `# renovate:` markers let Renovate propose bumps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class HelmChart:
    """A Helm chart pinned to one version in one repository."""

    chart: str
    version: str
    repository: str
    directory: str = ""
    """Name of the unpacked chart in a chart directory, before `-<version>`. Default: the
    chart name; the generic names `base`, `gateway` and `loadtester` are unpacked as
    `istio-base`, `istio-gateway` and `flagger-loadtester` (`meshstack:chartSource`)."""
    oci_repository: str = ""
    """The publisher's own OCI registry, if it has one (`oci://<host>/<path>`; the chart is
    `<oci_repository>/<chart>`), used by `meshstack:chartSource.kind: upstream-oci`."""

    @property
    def folder(self) -> str:
        """`<directory>-<version>`: the chart's folder in a chart directory."""
        return f"{self.directory or self.chart}-{self.version}"


ISTIO_VERSION: Final = "1.30.4"
"""Istio release installed by every region without `istioRevisions`; charts and proxies
share this version. 1.30.4 is the security release ISTIO-SECURITY-2026-006 (Envoy CVEs on
RBAC path matching and normalisation, which the AuthorizationPolicies rely on)."""

ISTIO_UPGRADE_VERSIONS: Final = ("1.31.0",)
"""Releases pinned for a canary revision next to the installed one (docs/upgrades.md); drop
one once no stack's `meshstack:istioRevisions` uses it."""


def _numeric(version: str) -> tuple[int, ...]:
    """`1.30.4` → (1, 30, 4): releases compare by number, not as text (1.9 < 1.10)."""
    return tuple(int(part) for part in version.split("."))


ISTIO_VERSIONS: Final = tuple(
    sorted({ISTIO_VERSION, *ISTIO_UPGRADE_VERSIONS}, key=_numeric, reverse=True)
)
"""Istio releases a control-plane revision may run (`meshstack:istioRevisions`), newest
first: the installed release and the upgrade releases, so a region can run a new release as
a canary revision next to the old one (docs/upgrades.md). Derived, so an update of
ISTIO_VERSION alone (the update bot's patch bump) keeps the installed release pinned."""


def istio_minor(version: str) -> str:
    """`1.31.0` → `1.31`: EnvoyFilters are scoped to the proxy minors whose patches were
    checked, so an upgrade cannot silently apply version-coupled patches to another Envoy."""
    return ".".join(version.split(".")[:2])


ISTIO_REPOSITORY: Final = "https://blob.istio.io/istio-release/charts"
"""Istio's Helm repository. From 1.31 Istio publishes nowhere else: the former
`istio-release.storage.googleapis.com` is retired after the scream tests ending 2026-12-09
(Istio 1.31 upgrade notes, "Deprecation of GCP infrastructure and hosting",
https://istio.io/latest/news/releases/1.31.x/announcing-1.31/upgrade-notes/)."""

ISTIO_OCI_REPOSITORY: Final = "oci://ghcr.io/istio/release/charts"
"""Istio's OCI registry (same notes): `<registry>/<chart>` at the chart version."""


@dataclass(frozen=True)
class IstioCharts:
    """The three charts of one Istio release: they are only ever installed at one version."""

    base: HelmChart
    istiod: HelmChart
    gateway: HelmChart


def istio_charts(version: str) -> IstioCharts:
    """The `base`, `istiod` and `gateway` charts of a pinned Istio release."""
    if version not in ISTIO_VERSIONS:
        raise ValueError(f"Istio {version} is not pinned; pinned: {', '.join(ISTIO_VERSIONS)}")
    return IstioCharts(
        HelmChart("base", version, ISTIO_REPOSITORY, "istio-base", ISTIO_OCI_REPOSITORY),
        HelmChart("istiod", version, ISTIO_REPOSITORY, oci_repository=ISTIO_OCI_REPOSITORY),
        HelmChart("gateway", version, ISTIO_REPOSITORY, "istio-gateway", ISTIO_OCI_REPOSITORY),
    )


# The installed release's charts; the update bot follows ISTIO_VERSION (renovate.json).
ISTIO_BASE: Final = istio_charts(ISTIO_VERSION).base
ISTIOD: Final = istio_charts(ISTIO_VERSION).istiod
ISTIO_GATEWAY: Final = istio_charts(ISTIO_VERSION).gateway

# renovate: datasource=helm registryUrl=https://flagger.app
FLAGGER: Final = HelmChart("flagger", "1.44.0", "https://flagger.app")
# renovate: datasource=helm registryUrl=https://flagger.app
FLAGGER_LOADTESTER: Final = HelmChart(
    "loadtester", "0.38.0", "https://flagger.app", "flagger-loadtester"
)

# renovate: datasource=helm registryUrl=https://kiali.org/helm-charts
KIALI_SERVER: Final = HelmChart("kiali-server", "2.29.0", "https://kiali.org/helm-charts")

# renovate: datasource=helm registryUrl=https://jaegertracing.github.io/helm-charts
JAEGER: Final = HelmChart("jaeger", "4.11.1", "https://jaegertracing.github.io/helm-charts")

# envoyproxy/ratelimit has no releases since v1.4.0 (2020); every `main` commit is pushed
# as an image tagged with its short commit SHA. f2fb1577 is the commit whose config loader
# the tests check the generated config against (reference/ratelimit); Istio's sample pins
# the older 30a4ce1a. Commit tags do not compare as versions, so the update bot proposes no
# bump (renovate.json disables it): update by hand to a newer main commit's tag, together
# with the reference config loader the tests use.
# renovate: datasource=docker depName=envoyproxy/ratelimit
RATELIMIT_IMAGE: Final = "docker.io/envoyproxy/ratelimit:f2fb1577"
# renovate: datasource=docker depName=redis
REDIS_IMAGE: Final = "docker.io/library/redis:7.4.5-alpine"


def pinned() -> dict[str, str]:
    """Every pinned chart (`<chart>`: version) and image (`<name>`: reference), for operators.

    Exported as the stack output `versions`, so `pulumi stack output versions` answers
    "what runs in this region" without reading the code.
    """
    charts = (ISTIO_BASE, ISTIOD, ISTIO_GATEWAY, FLAGGER, FLAGGER_LOADTESTER, KIALI_SERVER, JAEGER)
    versions = {f"chart/{chart.chart}": chart.version for chart in charts}
    versions |= {"image/ratelimit": RATELIMIT_IMAGE, "image/redis": REDIS_IMAGE}
    return dict(sorted(versions.items()))
