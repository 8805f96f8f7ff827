"""guardrails area: a ResourceQuota and a LimitRange in every workload namespace.

Owns `NamespaceGuardrails`, its pure spec builders (`specs`) and `GuardrailSettings`, which
checks that the quota leaves room for each pod's istio-proxy sidecar.
"""

from components.guardrails.component import NamespaceGuardrails
from components.guardrails.settings import GuardrailSettings

__all__ = ["GuardrailSettings", "NamespaceGuardrails"]
