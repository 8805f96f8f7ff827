"""Rate limit area: the per-pod local limit in every sidecar and per-client quotas.

`settings.py` holds `rateLimit` and `services[i].rateLimit`; `specs.py` is the pure
builders (EnvoyFilters, the envoyproxy/ratelimit config, its Deployments and policies);
`component.py` is `RateLimiter`, whose metrics endpoint region.py hands to MeshAlerts.
Only the settings are imported here: the root settings model imports this package, and
the component would pull Pulumi and the Istio area into it.
"""

from components.ratelimit.settings import (
    LocalRateLimitSettings,
    QuotaSettings,
    RateLimitSettings,
    ServiceRateLimit,
)

__all__ = ["LocalRateLimitSettings", "QuotaSettings", "RateLimitSettings", "ServiceRateLimit"]
