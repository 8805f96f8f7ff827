"""Helm installs: one way to install a pinned chart, with lifecycle safety built in.

Helm charts are installed with the Pulumi Kubernetes provider's Chart v4 (not Release v3):
Chart v4 renders the chart and manages each object as its own Pulumi resource, so
`pulumi preview` on a pull request shows object-level diffs, policy packs see every
object, and Helm's `helm.sh/resource-policy: keep` becomes RetainOnDelete. Its costs are
known and handled here: it runs no Helm hooks (none of our charts needs one at install),
and it always renders as a fresh install, which is why istiod and base set
`base.validationFailurePolicy: Fail` (see `components.istio.values`). Where the charts come from is
the stack's `meshstack:chartSource` (`chart_reference`); `tools/charts.py` renders them
offline exactly as installed here (`build/<stack>/charts.yaml`).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s

from components.settings_types import ChartSource
from components.versions import HelmChart

RETAINED_TYPES: Final = frozenset(
    {
        "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
        "kubernetes:core/v1:Namespace",
    }
)
"""Object types the program never deletes: deleting a CRD deletes every object of its
kind cluster-wide, deleting a namespace deletes everything in it."""


def retain_crds_and_namespaces(
    args: pulumi.ResourceTransformArgs,
) -> pulumi.ResourceTransformResult | None:
    """Transform that marks CRDs and namespaces rendered by a chart RetainOnDelete.

    Chart v4 already honours `helm.sh/resource-policy: keep`; this also covers charts
    that ship CRDs without that annotation (Flagger's `crds/`).
    """
    if args.type_ not in RETAINED_TYPES:
        return None
    return pulumi.ResourceTransformResult(
        props=args.props,
        opts=pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(retain_on_delete=True)),
    )


def chart_reference(chart: HelmChart, source: ChartSource) -> tuple[str, str]:
    """Chart v4's `chart` and repository for `chart` from `source`.

    `upstream`: the chart name in its own repository. `upstream-oci`: the publisher's OCI
    registry `<registry>/<chart>` where it has one, else as `upstream`. `oci`:
    `<prefix>/<chart>` (Chart v4 pulls `oci://` references at `version`, no repository).
    `directory`: the local path `<location>/<chart folder>` (e.g. `charts/istio-base-1.30.4`);
    Chart v4 loads a local chart as it is, so the folder name carries the version.
    """
    if source.kind == "upstream-oci" and chart.oci_repository:
        return f"{chart.oci_repository}/{chart.chart}", ""
    if source.kind == "oci":
        return f"{source.location}/{chart.chart}", ""
    if source.kind == "directory":
        return str(PurePosixPath(source.location) / chart.folder), ""
    return chart.chart, chart.repository


def install_chart(
    resource_name: str,
    chart: HelmChart,
    *,
    release: str,
    namespace: pulumi.Input[str],
    values: pulumi.Input[dict[str, Any]],
    parent: pulumi.Resource,
    source: ChartSource,
    depends_on: list[pulumi.Resource] | None = None,
) -> k8s.helm.v4.Chart:
    """Install `chart` at its pinned version as Helm release `release` in `namespace`,
    taking the chart from where `source` says (`chart_reference`)."""
    reference, repository = chart_reference(chart, source)
    return k8s.helm.v4.Chart(
        resource_name,
        chart=reference,
        version=chart.version,
        repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=repository) if repository else None,
        name=release,
        namespace=namespace,
        values=values,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=depends_on or [],
            transforms=[retain_crds_and_namespaces],
        ),
    )
