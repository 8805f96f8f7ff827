"""Pure builders of the guardrail objects: ResourceQuota and LimitRange specs per namespace."""

from __future__ import annotations

from typing import Any, Final

from components.guardrails.settings import GuardrailSettings

QUOTA_NAME: Final = "meshstack-quota"

LIMIT_RANGE_NAME: Final = "meshstack-limits"


def resource_quota_spec(guardrails: GuardrailSettings) -> dict[str, Any]:
    """ResourceQuota spec: pods and the sums of requests and limits."""
    return {
        "hard": {
            "pods": str(guardrails.pods),
            "requests.cpu": guardrails.requests.cpu,
            "requests.memory": guardrails.requests.memory,
            "limits.cpu": guardrails.limits.cpu,
            "limits.memory": guardrails.limits.memory,
        }
    }


def limit_range_spec(guardrails: GuardrailSettings) -> dict[str, Any]:
    """LimitRange spec: per-container defaults and the per-container maximum."""
    return {
        "limits": [
            {
                "type": "Container",
                "defaultRequest": guardrails.default_request.model_dump(),
                "default": guardrails.default_limit.model_dump(),
                "max": guardrails.max.model_dump(),
            }
        ]
    }
