"""Alerts area: how Prometheus scrapes the mesh, what it alerts on, the Grafana dashboard.

`settings.py` holds `alerts`, `dashboard` and `services[i].metrics`; `rules.py` and
`dashboard.py` are the pure builders (alert rules, monitor specs, dashboard JSON);
`component.py` is `MeshAlerts`, which region.py creates with the RateLimiter's
metrics endpoint. Only the settings are imported here: the root settings model imports
this package, and the component would pull Pulumi and the Istio area into it.
"""

from components.alerts.settings import AlertsSettings, AppMetrics, DashboardSettings

__all__ = ["AlertsSettings", "AppMetrics", "DashboardSettings"]
