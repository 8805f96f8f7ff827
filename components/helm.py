"""Helm installs: one way to install a pinned chart, with lifecycle safety built in.

Helm charts are installed with the Pulumi Kubernetes provider's Chart v4 (not Release v3):
Chart v4 renders the chart and manages each object as its own Pulumi resource, so
`pulumi preview` on a pull request shows object-level diffs, policy packs see every
object, and Helm's `helm.sh/resource-policy: keep` becomes RetainOnDelete. Its costs are
known and handled here: it runs no Helm hooks (none of our charts needs one at install),
and it always renders as a fresh install, which is why istiod and base set
`base.validationFailurePolicy: Fail` (see `components.istio.values`).

CRDs and namespaces are never deleted: Chart v4 registers an object annotated
`helm.sh/resource-policy: keep` with RetainOnDelete (the provider's `helm/v4` chart.go,
`preregister`), and every CRD the pinned charts ship carries it. The policy pack's
`crds-and-namespaces-retained`, run over every stack's render with the charts' objects
(`tests/test_charts.py`), fails a chart that ships a CRD or namespace without it. There is
no transform adding RetainOnDelete here: the engine calls a program transform for every
chart object, one at a time, with its full inputs (the Istio CRDs alone are 0.5 MB), which
cost every preview about 0.8 s (README, Benchmark) and changed nothing.

Where the charts come from is the stack's `meshstack:chartSource` (`chart_reference`);
`tools/charts.py` renders them offline exactly as installed here (`build/<stack>/charts.yaml`).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.settings_types import ChartSource
from components.versions import HelmChart


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
        ),
    )
