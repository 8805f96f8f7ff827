"""Rate limit area: the per-pod local limit in every sidecar and per-client quotas.

`settings.py` holds `rateLimit` and `services[i].rateLimit`; `specs.py` is the pure
builders (local EnvoyFilters, the envoyproxy/ratelimit config, its Deployments and
policies); `gateway.py` builds the quota's objects at the ingress gateway (client
identity from a verified JWT claim, the ratelimit filter and its actions);
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
