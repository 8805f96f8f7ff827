"""Settings of the namespace guard rails: a ResourceQuota and a LimitRange per namespace.

`GuardrailSettings` is `meshstack:guardrails`. Every injected pod also runs an
`istio-proxy` sidecar whose requests and limits come from istiod's
`global.proxy.resources` (`constants.PROXY_RESOURCES`), not from the LimitRange; the
rules here make sure the quota and the LimitRange leave room for it.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, model_validator

from components.constants import PROXY_RESOURCES
from components.settings_types import (
    QUANTITY_FACTORS,
    Quantity,
    RuleViolationError,
    SettingsModel,
    parse_quantity,
)


class Resources(SettingsModel):
    """A CPU and memory pair."""

    cpu: Quantity = Field(description="CPU, e.g. `250m`.")
    memory: Quantity = Field(description="Memory, e.g. `256Mi`.")


class GuardrailSettings(SettingsModel):
    """`meshstack:guardrails`: quota and container defaults of every workload namespace."""

    enabled: bool = Field(
        default=True,
        description="Create the ResourceQuota and LimitRange. Default on.",
    )
    pods: int = Field(
        default=30,
        ge=1,
        le=10_000,
        description="Pods per namespace. Default 30: two versions of a few services, scaled.",
    )
    requests: Resources = Field(
        default=Resources(cpu="12", memory="12Gi"),
        description=(
            "Quota on the sum of requests. Default 12 CPU / 12Gi: `pods` pods at the "
            "default request plus their sidecar's request (30 x 350m, 30 x 384Mi)."
        ),
    )
    limits: Resources = Field(
        default=Resources(cpu="96", memory="48Gi"),
        description=(
            "Quota on the sum of limits. Default 96 CPU / 48Gi: `pods` pods at the default "
            "limit plus their sidecar's limit (30 x 3 CPU, 30 x 1.5Gi); the sidecar's CPU "
            "limit (2) dominates."
        ),
    )
    default_request: Resources = Field(
        default=Resources(cpu="250m", memory="256Mi"),
        description="Request of a container that sets none. Default 250m / 256Mi.",
    )
    default_limit: Resources = Field(
        default=Resources(cpu="1", memory="512Mi"),
        description="Limit of a container that sets none. Default 1 CPU / 512Mi.",
    )
    max: Resources = Field(
        default=Resources(cpu="4", memory="4Gi"),
        description=(
            "Largest limit of one container. Default 4 CPU / 4Gi; must stay above the "
            "sidecar's limit (2 CPU / 1Gi) or every injected pod is rejected."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> GuardrailSettings:
        for resource in ("cpu", "memory"):
            request = parse_quantity(getattr(self.default_request, resource))
            limit = parse_quantity(getattr(self.default_limit, resource))
            largest = parse_quantity(getattr(self.max, resource))
            if request > limit:
                raise RuleViolationError(
                    ("defaultRequest", resource),
                    getattr(self.default_request, resource),
                    f"must be <= defaultLimit.{resource} ({getattr(self.default_limit, resource)})",
                )
            if limit > largest:
                raise RuleViolationError(
                    ("defaultLimit", resource),
                    getattr(self.default_limit, resource),
                    f"must be <= max.{resource} ({getattr(self.max, resource)})",
                )
        self._check_room_for_sidecars()
        return self

    def _check_room_for_sidecars(self) -> None:
        for resource in ("cpu", "memory"):
            proxy_limit = PROXY_RESOURCES["limits"][resource]
            if parse_quantity(getattr(self.max, resource)) < parse_quantity(proxy_limit):
                raise RuleViolationError(
                    ("max", resource),
                    getattr(self.max, resource),
                    f"must be >= the istio-proxy limit ({proxy_limit}) or injected pods "
                    "are rejected",
                )
            for kind, default in (
                ("requests", self.default_request),
                ("limits", self.default_limit),
            ):
                per_pod = parse_quantity(getattr(default, resource)) + parse_quantity(
                    PROXY_RESOURCES[kind][resource]
                )
                quota = getattr(getattr(self, kind), resource)
                if parse_quantity(quota) < per_pod * self.pods:
                    raise RuleViolationError(
                        (kind, resource),
                        quota,
                        f"must fit {self.pods} pods of one default container plus the "
                        f"istio-proxy sidecar ({self.pods} x {_format(per_pod)})",
                    )


def _format(value: Decimal) -> str:
    """A number of base units, readably: `0.35`, `402653184` -> `384Mi`."""
    mebibytes = value / QUANTITY_FACTORS["Mi"]
    if value >= QUANTITY_FACTORS["Mi"] and mebibytes == mebibytes.to_integral_value():
        return f"{mebibytes:f}Mi"
    return f"{value.normalize():f}"
