"""Verification layer: check generated manifests and Helm values against upstream references.

``validate_manifest`` sends custom resources (groups defined by the reference
CRDs) to the CRD catalog and everything else to the built-in Kubernetes schema
validator, so callers can validate a whole rendered stack with one function.
"""

from __future__ import annotations

from typing import Any

from tools.verify.core import is_custom_resource, validate_core
from tools.verify.crd import default_catalog
from tools.verify.helm_values import validate_helm_values
from tools.verify.reference import reference_dir

__all__ = ["is_custom_resource", "reference_dir", "validate_helm_values", "validate_manifest"]


_SECRET_PLACEHOLDER = "[secret]"
"""`tools.render.SECRET_PLACEHOLDER`: a Pulumi secret input before deploy."""


def validate_manifest(obj: dict[str, Any]) -> list[str]:
    """Human-readable problems with one Kubernetes object; empty when valid.

    A Secret's `data`/`stringData` that is a Pulumi secret input is only the render's
    `[secret]` placeholder before deploy (the Kubernetes SDK makes the whole map secret),
    so it is left out: no schema can check it.
    """
    if obj.get("kind") == "Secret":
        obj = {
            k: v
            for k, v in obj.items()
            if not (k in {"data", "stringData"} and v == _SECRET_PLACEHOLDER)
        }
    if is_custom_resource(obj):
        return default_catalog().validate(obj)
    return validate_core(obj)
