"""Validate built-in Kubernetes objects (Namespace, Deployment, ...) strictly.

Built-in kinds have no CRD in the reference data; their OpenAPI schemas come
from the ``kubernetes-validate`` package. We use its ``-strict`` schemas, in
which unknown fields are errors, and report every violation rather than the
first one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache, lru_cache
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the locked dev deps
import kubernetes_validate.utils as kv_utils
import referencing
from referencing import Registry, Resource

from tools.verify.crd import default_catalog, object_ref, validate_metadata

# Kubernetes 1.35 is the oldest minor still maintained upstream in late 2026
# (1.35-1.37; kubernetes-validate 1.37.0 ships schemas up to 1.37). Validating
# against the oldest cluster we may deploy to catches fields that newer releases
# added and older clusters would reject. Istio 1.30's own support matrix is not
# part of the reference data, so check it there before moving this forward.
KUBERNETES_SCHEMA_VERSION = "1.35.0"

_SCHEMA_DIR = f"kubernetes-json-schema/v{KUBERNETES_SCHEMA_VERSION}-local-strict"

# Built-in kinds that are cluster-scoped, so metadata.namespace is forbidden.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "IngressClass",
        "PriorityClass",
        "RuntimeClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "APIService",
        "CSIDriver",
        "VolumeAttachment",
    }
)


def is_custom_resource(obj: dict[str, Any]) -> bool:
    """True when the object's API group is one that the reference CRDs define."""
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.rpartition("/")[0]
    return bool(group) and group in default_catalog().groups


def _schema_file(obj: dict[str, Any]) -> str:
    # Same file naming as kubernetes_validate.utils.validate: the group's first
    # DNS label, e.g. rbac.authorization.k8s.io/v1 -> rbac-v1.
    api_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", str(obj["apiVersion"]))
    return f"{_SCHEMA_DIR}/{str(obj['kind']).lower()}-{api_version}.json"


@lru_cache(maxsize=1)
def _registry() -> Registry[Any]:
    definitions = kv_utils.schema_contents(
        f"{_SCHEMA_DIR}/_definitions.json", KUBERNETES_SCHEMA_VERSION
    )
    return Resource.from_contents(definitions) @ Registry()


@cache
def _validator(schema_file: str) -> jsonschema.protocols.Validator | None:
    try:
        schema = kv_utils.schema_contents(schema_file, KUBERNETES_SCHEMA_VERSION)
    except FileNotFoundError:
        return None
    registry = Resource.from_contents(schema) @ _registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _format_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def validate_core(obj: dict[str, Any]) -> list[str]:
    """Human-readable problems with a built-in object; an empty list means valid."""
    prefix = object_ref(obj)
    if not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
        return [f"{prefix}: apiVersion and kind are required strings"]
    validator = _validator(_schema_file(obj))
    if validator is None:
        return [
            f"{prefix}: apiVersion: no Kubernetes {KUBERNETES_SCHEMA_VERSION} schema for "
            f"apiVersion {obj['apiVersion']!r} kind {obj['kind']!r}"
        ]
    errors: list[str] = []
    try:
        found = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    except referencing.exceptions.Unresolvable as exc:  # a broken schema must not pass
        return [f"{prefix}: cannot resolve schema reference: {exc}"]
    for error in found:
        errors.append(f"{prefix}: {_format_path(error.absolute_path)}: {error.message}")
    # The OpenAPI schema does not check names, label syntax or scope; the API server does.
    namespaced = None if obj["kind"] not in CLUSTER_SCOPED_KINDS else False
    errors.extend(f"{prefix}: {e}" for e in validate_metadata(obj.get("metadata"), namespaced))
    errors.extend(f"{prefix}: {e}" for e in _kind_specific_name(obj))
    return errors


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _kind_specific_name(obj: dict[str, Any]) -> list[str]:
    # Some kinds need stricter names than a DNS subdomain because the name
    # becomes a DNS label: Namespaces (RFC 1123 label) and Services (RFC 1035 label).
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str):
        return []
    pattern = {"Namespace": _DNS1123_LABEL, "Service": _DNS1035_LABEL}.get(str(obj["kind"]))
    if pattern is None or (len(name) <= 63 and pattern.match(name)):
        return []
    label = "RFC 1123" if obj["kind"] == "Namespace" else "RFC 1035"
    return [
        f"metadata.name: Invalid value {name!r}: must be an {label} label (at most 63 characters)"
    ]
