"""MeshAlerts: how Prometheus scrapes the mesh, what it alerts on, and the Grafana dashboard.

A thin component over the pure builders in `components.alerts.rules` and
`components.alerts.dashboard`: it wraps their dicts in Prometheus Operator custom resources
(`monitoring.coreos.com/v1`) and a ConfigMap. The Prometheus Operator and Grafana are not
installed here; the objects carry the labels their default selectors look for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import pulumi
import pulumi_kubernetes as k8s

from components.alerts import monitors, rules
from components.alerts.dashboard import DASHBOARD_FILE, GRAFANA_DASHBOARD_LABEL, dashboard_json
from components.constants import pod_services
from components.istio.component import IstioMesh
from components.kube import MetricsEndpoint
from components.naming import MANAGED_BY

if TYPE_CHECKING:
    from components.alerts.settings import AlertsSettings, DashboardSettings
    from components.settings import MeshService

TOKEN: Final = "meshstack:alerts:MeshAlerts"

FORMER_TOKEN: Final = "meshstack:observability:MeshAlerts"
"""The token before the alerts area had its own package: the alias lets an existing stack
adopt its MeshAlerts (and every child URN under it) instead of replacing them."""

MONITORING_API: Final = "monitoring.coreos.com/v1"

SIDECAR_MONITOR_NAME: Final = "meshstack-envoy-stats"
ISTIOD_MONITOR_NAME: Final = "meshstack-istiod"
RATELIMIT_MONITOR_NAME: Final = "meshstack-ratelimit"
RULE_NAME: Final = "meshstack-mesh-alerts"
DASHBOARD_CONFIGMAP_NAME: Final = "meshstack-mesh-dashboard"


class MeshAlerts(pulumi.ComponentResource):
    """Scrape configuration, alert rules and dashboard of one region's mesh.

    Children: a PodMonitor for every sidecar's Envoy metrics and a ServiceMonitor for istiod
    (both in the mesh's root namespace), one ServiceMonitor per service with `metrics` set
    (in the service's namespace), with per-client quotas one ServiceMonitor for the
    ratelimit service's counters (in its namespace), a PrometheusRule with the mesh alerts,
    and, unless disabled, the dashboard ConfigMap in the dashboard namespace. Custom
    resources wait for the control plane like every Istio-side object; thresholds come
    from settings.
    """

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        alerts: AlertsSettings,
        *,
        services: Sequence[MeshService],
        dashboard: DashboardSettings,
        ratelimit_metrics: MetricsEndpoint | None,
        runbook_base_url: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`services` with `metrics` get a ServiceMonitor; `ratelimit_metrics` is the
        RateLimiter's endpoint (None without quotas); `runbook_base_url` is where the alerts'
        runbooks are (`alerts.runbookBaseUrl` or the one `__main__.py` derives)."""
        super().__init__(
            TOKEN,
            name,
            None,
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=FORMER_TOKEN)])
            ),
        )
        labels = {**MANAGED_BY, **alerts.prometheus_selector_labels}

        def metadata(k8s_name: str, namespace: pulumi.Input[str]) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=k8s_name, namespace=namespace, labels=labels)

        k8s.apiextensions.CustomResource(
            f"{name}-sidecars",
            api_version=MONITORING_API,
            kind="PodMonitor",
            metadata=metadata(SIDECAR_MONITOR_NAME, mesh.namespace),
            spec=monitors.sidecar_pod_monitor_spec(alerts),
            opts=mesh.custom_resource_options(self),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-istiod",
            api_version=MONITORING_API,
            kind="ServiceMonitor",
            metadata=metadata(ISTIOD_MONITOR_NAME, mesh.namespace),
            spec=mesh.namespace.apply(lambda ns: monitors.istiod_service_monitor_spec(alerts, ns)),
            opts=mesh.custom_resource_options(self),
        )
        for service in services:
            if service.metrics is None:
                continue
            # Named after its Service, in the Service's namespace: unique without a suffix
            # that could push a 63-character name over the limit.
            monitor_name = service.name
            k8s.apiextensions.CustomResource(
                f"{name}-{service.namespace}-{service.name}-metrics",
                api_version=MONITORING_API,
                kind="ServiceMonitor",
                metadata=metadata(
                    monitor_name, mesh.workload_namespace(service.namespace).metadata.name
                ),
                spec=monitors.app_service_monitor_spec(
                    alerts,
                    service.name,
                    service.namespace,
                    service.metrics,
                    service_apps=pod_services(service.name, service.delivery == "progressive"),
                ),
                opts=mesh.custom_resource_options(self),
            )
        if ratelimit_metrics is not None:
            k8s.apiextensions.CustomResource(
                f"{name}-ratelimit",
                api_version=MONITORING_API,
                kind="ServiceMonitor",
                metadata=metadata(
                    RATELIMIT_MONITOR_NAME,
                    mesh.workload_namespace(ratelimit_metrics.namespace).metadata.name,
                ),
                spec=monitors.ratelimit_service_monitor_spec(alerts, ratelimit_metrics),
                opts=mesh.custom_resource_options(self),
            )
        k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version=MONITORING_API,
            kind="PrometheusRule",
            metadata=metadata(RULE_NAME, mesh.namespace),
            spec=rules.prometheus_rule_spec(alerts, runbook_base_url=runbook_base_url),
            opts=mesh.custom_resource_options(self),
        )
        if dashboard.enabled:
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=DASHBOARD_CONFIGMAP_NAME,
                    namespace=dashboard.namespace,
                    labels={**MANAGED_BY, **GRAFANA_DASHBOARD_LABEL},
                ),
                data={DASHBOARD_FILE: dashboard_json()},
                opts=pulumi.ResourceOptions(parent=self),
            )

        # No Outputs: nothing reads the objects' names; they are fixed (RULE_NAME,
        # DASHBOARD_CONFIGMAP_NAME) or the services' own.
        self.register_outputs({})
