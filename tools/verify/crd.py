"""Validate custom resources against the upstream CRDs, as a strict API server would.

The CRDs in ``shared/reference/crds`` are the contract between the program and
the cluster. ``CrdCatalog.validate`` checks that an object uses a served,
non-deprecated version, that its metadata is acceptable, that every field is
declared by the structural schema (strict field validation), that values match
the OpenAPI value validations, and that the ``x-kubernetes-validations`` CEL
rules hold after defaulting (the API server defaults before it validates).
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2, already required by cel-python
import yaml

from tools.verify.cel import CelRuleError, evaluate_expression, evaluate_rule
from tools.verify.reference import reference_dir

# The C loader parses the 1.3 MB of CRDs several times faster than the pure-Python one.
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

CRD_FILES = ("istio.yaml", "flagger.yaml", "prometheus-operator.yaml", "kiali.yaml")

Schema = dict[str, Any]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

# ObjectMeta fields a client may send; anything else is an unknown field.
_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)
_ENVELOPE = frozenset({"apiVersion", "kind", "metadata"})
_ANNOTATIONS_MAX_BYTES = 256 * 1024
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


@cache
def _pattern(pattern: str) -> Any:
    # The API server matches "pattern" with Go's RE2, whose syntax differs from
    # Python's re (Prometheus uses "^(?i)(abort|warn)?$", which re rejects).
    return re2.compile(pattern)


def _join(path: str, key: str) -> str:
    if _IDENTIFIER.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


@dataclass(frozen=True)
class CrdVersion:
    """One version of one CRD."""

    group: str
    kind: str
    version: str
    namespaced: bool
    served: bool
    deprecated: bool
    schema: Schema = field(repr=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def iter_rule_sites(schema: Any) -> Iterator[tuple[Schema, dict[str, Any]]]:
    """Every ``x-kubernetes-validations`` entry below ``schema``, with its schema node."""
    if isinstance(schema, dict):
        for entry in schema.get("x-kubernetes-validations") or []:
            yield schema, entry
        for value in schema.values():
            yield from iter_rule_sites(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from iter_rule_sites(item)


def is_transition_rule(rule: str) -> bool:
    """Rules that mention ``oldSelf`` only run on update; we validate creation."""
    return re.search(r"\boldSelf\b", rule) is not None


class _Validator:
    """One pass over one object; collects messages in ``errors``."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path or '<root>'}: {message}")

    # -- types ------------------------------------------------------------
    def check_type(self, value: Any, schema: Schema, path: str) -> bool:
        if schema.get("x-kubernetes-int-or-string"):
            if isinstance(value, bool) or not isinstance(value, int | str):
                self.error(path, f"must be an integer or a string, got {_json_type(value)}")
                return False
            return True
        expected = schema.get("type")
        ok = {
            None: True,
            "object": isinstance(value, dict),
            "array": isinstance(value, list),
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
        }.get(expected, False)
        if not ok:
            self.error(path, f"must be of type {expected}, got {_json_type(value)}")
        return ok

    # -- entry point --------------------------------------------------------
    def validate(self, value: Any, schema: Schema, path: str, structural: bool = True) -> None:
        """Validate ``value``; ``structural`` is False inside oneOf/anyOf/allOf/not,
        whose branches only carry value validations (no field declarations)."""
        if value is None:
            if not schema.get("nullable"):
                self.error(path, "must not be null (field is not nullable)")
            return
        if not self.check_type(value, schema, path):
            return
        self.check_value(value, schema, path)
        self.check_junctors(value, schema, path)
        if isinstance(value, dict):
            self.check_object(value, schema, path, structural)
        elif isinstance(value, list):
            self.check_array(value, schema, path, structural)
        if structural:
            self.check_rules(value, schema, path)

    def check_value(self, value: Any, schema: Schema, path: str) -> None:
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(repr(v) for v in schema["enum"])
            self.error(path, f"unsupported value {value!r}: supported values: {allowed}")
        if isinstance(value, str):
            self.check_string(value, schema, path)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            self.check_number(value, schema, path)

    def check_string(self, value: str, schema: Schema, path: str) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.error(path, f"must be at least {schema['minLength']} characters long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.error(path, f"may not be longer than {schema['maxLength']} characters")
        if "pattern" in schema:
            try:
                matched = _pattern(schema["pattern"]).search(value) is not None
            except re2.error as exc:  # an unusable schema must not look like a pass
                self.error(path, f"cannot check pattern {schema['pattern']!r}: {exc}")
            else:
                if not matched:
                    self.error(path, f"{value!r} does not match pattern {schema['pattern']!r}")
        fmt = schema.get("format")
        if fmt == "date-time" and not _valid_datetime(value):
            self.error(path, f"{value!r} is not an RFC 3339 date-time")
        elif fmt == "byte":
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                self.error(path, f"{value!r} is not base64 encoded")

    def check_number(self, value: float, schema: Schema, path: str) -> None:
        fmt = schema.get("format")
        bounds = {"int32": _INT32, "int64": _INT64}.get(fmt or "")
        if bounds and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
            self.error(path, f"{value} does not fit in {fmt}")
        if isinstance(value, float) and not math.isfinite(value):
            self.error(path, "must be a finite number")
        if "minimum" in schema:
            minimum = schema["minimum"]
            exclusive = schema.get("exclusiveMinimum") is True
            if value < minimum or (exclusive and value == minimum):
                op = ">" if exclusive else ">="
                self.error(path, f"must be {op} {minimum}, got {value}")
        if "maximum" in schema:
            maximum = schema["maximum"]
            exclusive = schema.get("exclusiveMaximum") is True
            if value > maximum or (exclusive and value == maximum):
                op = "<" if exclusive else "<="
                self.error(path, f"must be {op} {maximum}, got {value}")
        if "multipleOf" in schema and value % schema["multipleOf"]:
            self.error(path, f"must be a multiple of {schema['multipleOf']}")

    def _passes(self, value: Any, schema: Schema, path: str) -> bool:
        probe = _Validator()
        probe.validate(value, schema, path, structural=False)
        return not probe.errors

    def check_junctors(self, value: Any, schema: Schema, path: str) -> None:
        for sub in schema.get("allOf", []):
            self.validate(value, sub, path, structural=False)
        if "anyOf" in schema and not any(self._passes(value, s, path) for s in schema["anyOf"]):
            self.error(path, f"must match at least one of: {_describe(schema['anyOf'])}")
        if "oneOf" in schema:
            matches = sum(self._passes(value, s, path) for s in schema["oneOf"])
            if matches != 1:
                exclusive = _mutually_exclusive_fields(schema["oneOf"])
                if exclusive and isinstance(value, dict):
                    present = ", ".join(f for f in exclusive if f in value)
                    self.error(
                        path,
                        f"only one of {', '.join(exclusive)} may be set (found {present})",
                    )
                else:
                    self.error(
                        path,
                        f"must match exactly one of: {_describe(schema['oneOf'])} "
                        f"(matched {matches})",
                    )
        if "not" in schema and self._passes(value, schema["not"], path):
            self.error(path, f"must not match {_describe([schema['not']])}")

    def check_object(
        self, value: dict[str, Any], schema: Schema, path: str, structural: bool
    ) -> None:
        for key in schema.get("required", []):
            if key not in value:
                self.error(_join(path, key), "Required value")
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            self.error(path, f"must have at least {schema['minProperties']} properties")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            self.error(path, f"must have at most {schema['maxProperties']} properties")
        if schema.get("x-kubernetes-embedded-resource"):
            for key in ("apiVersion", "kind"):
                if not isinstance(value.get(key), str) or not value.get(key):
                    self.error(_join(path, key), "Required value (embedded resource)")
        properties: dict[str, Schema] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        # An embedded resource always carries apiVersion/kind/metadata.
        envelope = _ENVELOPE if schema.get("x-kubernetes-embedded-resource") else frozenset()
        for key, child in value.items():
            child_path = _join(path, key)
            if key in properties:
                self.validate(child, properties[key], child_path, structural)
            elif isinstance(additional, dict):
                self.validate(child, additional, child_path, structural)
            elif not (additional is True or preserve or not structural or key in envelope):
                self.error(child_path, f'unknown field "{key}"')

    def check_array(self, value: list[Any], schema: Schema, path: str, structural: bool) -> None:
        if "minItems" in schema and len(value) < schema["minItems"]:
            self.error(path, f"must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.error(path, f"must have at most {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                self.validate(item, items, f"{path}[{index}]", structural)
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set" or schema.get("uniqueItems"):
            seen: list[Any] = []
            for index, item in enumerate(value):
                if item in seen:
                    self.error(f"{path}[{index}]", f"Duplicate value: {item!r}")
                seen.append(item)
        elif list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen_keys: set[str] = set()
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                ident = repr([item.get(k) for k in keys])
                if ident in seen_keys:
                    self.error(f"{path}[{index}]", f"Duplicate value: map key {ident}")
                seen_keys.add(ident)

    def check_rules(self, value: Any, schema: Schema, path: str) -> None:
        for entry in schema.get("x-kubernetes-validations", []):
            rule = entry["rule"]
            if is_transition_rule(rule):
                continue
            try:
                ok = evaluate_rule(rule, value)
            except CelRuleError as exc:
                self.error(path, f"Invalid value: {exc}")
                continue
            if not ok:
                self.error(path, f"Invalid value: {_rule_message(entry, value)}")


def _rule_message(entry: dict[str, Any], value: Any) -> str:
    # Like the API server: messageExpression wins when it yields a non-empty
    # string, then message, then a generic text naming the rule.
    expression = entry.get("messageExpression")
    if expression:
        try:
            text = evaluate_expression(expression, value)
        except CelRuleError as exc:
            return f"{entry.get('message') or entry['rule']} (messageExpression failed: {exc})"
        if isinstance(text, str) and text.strip():
            return text
    return str(entry.get("message") or f"failed rule: {entry['rule']}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _mutually_exclusive_fields(options: list[Schema]) -> list[str] | None:
    """Recognise the oneOf that Istio generates for "at most one of these fields":
    ``[{not: {anyOf: [{required: [a]}, ...]}}, {required: [a]}, ...]``."""
    if not options or set(options[0]) != {"not"}:
        return None
    fields: list[str] = []
    for option in options[1:]:
        if set(option) != {"required"} or len(option["required"]) != 1:
            return None
        fields.append(option["required"][0])
    negated = options[0]["not"].get("anyOf", [])
    if [o.get("required") for o in negated] != [[f] for f in fields]:
        return None
    return fields


def _describe(options: Iterable[Schema]) -> str:
    parts = []
    for option in options:
        if list(option) == ["required"]:
            parts.append("{" + ", ".join(option["required"]) + "}")
        elif "not" in option:
            parts.append("none of the alternatives")
        else:
            parts.append(option.get("type", "<schema>"))
    return " | ".join(parts)


def _valid_datetime(value: str) -> bool:
    if not _RFC3339.match(value):
        return False
    try:
        datetime.datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return True


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Return a copy of ``value`` with structural-schema defaults filled in.

    The API server defaults missing fields of objects that are present before it
    validates, and CEL rules such as Flagger's ``size(self.group) == 0`` rely on it.
    """
    if isinstance(value, dict):
        result = dict(value)
        properties: dict[str, Schema] = schema.get("properties", {})
        for key, child in properties.items():
            if key not in result and "default" in child:
                result[key] = copy.deepcopy(child["default"])
        for key, item in result.items():
            if key in properties:
                result[key] = apply_defaults(item, properties[key])
            elif isinstance(schema.get("additionalProperties"), dict):
                result[key] = apply_defaults(item, schema["additionalProperties"])
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def validate_qualified_name(key: str) -> str | None:
    """Kubernetes label/annotation key rules; returns a problem or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return f"key {key!r}: prefix must be a DNS-1123 subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (
            f"key {key!r}: name part must be at most 63 characters of [A-Za-z0-9_.-], "
            "starting and ending with an alphanumeric character"
        )
    return None


def validate_metadata(metadata: Any, namespaced: bool | None) -> list[str]:
    """ObjectMeta checks that apply to every object, custom or built in.

    ``namespaced`` None means the scope is not known, so the namespace is only
    checked for syntax.
    """
    if not isinstance(metadata, dict):
        return ["metadata: Required value (must be an object)"]
    errors: list[str] = []
    for key in metadata:
        if key not in _OBJECT_META_FIELDS:
            errors.append(f'metadata.{key}: unknown field "{key}"')
    name = metadata.get("name")
    if name is None and not metadata.get("generateName"):
        errors.append("metadata.name: Required value")
    elif name is not None and (
        not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name)
    ):
        errors.append(
            f"metadata.name: Invalid value {name!r}: a lowercase RFC 1123 subdomain must consist "
            "of lower case alphanumeric characters, '-' or '.', and must start and end with an "
            "alphanumeric character (at most 253 characters)"
        )
    namespace = metadata.get("namespace")
    if namespaced is not False:
        if not namespace and namespaced:
            errors.append("metadata.namespace: Required value (the kind is namespaced)")
        elif namespace is not None and (
            not isinstance(namespace, str)
            or len(namespace) > 63
            or not _DNS1123_LABEL.match(namespace)
        ):
            errors.append(f"metadata.namespace: Invalid value {namespace!r}: not a DNS-1123 label")
    elif namespace is not None:
        errors.append("metadata.namespace: Forbidden: not allowed on a cluster-scoped kind")
    for section in ("labels", "annotations"):
        entries = metadata.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            errors.append(f"metadata.{section}: must be a map of strings")
            continue
        total = 0
        for key, value in entries.items():
            problem = validate_qualified_name(str(key))
            if problem:
                errors.append(f"metadata.{section}: Invalid {problem}")
            if not isinstance(value, str):
                errors.append(f"metadata.{section}[{key!r}]: value must be a string")
                continue
            total += len(key) + len(value.encode())
            if section == "labels" and (len(value) > 63 or not _LABEL_VALUE.match(value)):
                errors.append(
                    f"metadata.labels[{key!r}]: Invalid value {value!r}: must be at most 63 "
                    "characters of [A-Za-z0-9_.-], starting and ending with an alphanumeric"
                )
        if section == "annotations" and total > _ANNOTATIONS_MAX_BYTES:
            errors.append("metadata.annotations: Too long: must have at most 262144 bytes")
    return errors


def object_ref(obj: dict[str, Any]) -> str:
    """``<kind>/<namespace>/<name>`` prefix used in every message."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    return (
        f"{obj.get('kind', '<no kind>')}/{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    )


class CrdCatalog:
    """The served CRD versions, indexed by (apiVersion, kind)."""

    def __init__(self, crds: Iterable[dict[str, Any]]) -> None:
        self.versions: dict[tuple[str, str], CrdVersion] = {}
        self.kinds: dict[str, list[CrdVersion]] = {}
        for crd in crds:
            spec = crd["spec"]
            for version in spec["versions"]:
                entry = CrdVersion(
                    group=spec["group"],
                    kind=spec["names"]["kind"],
                    version=version["name"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    served=bool(version.get("served", False)),
                    deprecated=bool(version.get("deprecated", False)),
                    schema=(version.get("schema") or {}).get("openAPIV3Schema", {}),
                )
                self.versions[(entry.api_version, entry.kind)] = entry
                self.kinds.setdefault(entry.kind, []).append(entry)

    @classmethod
    def from_directory(cls, directory: Path) -> CrdCatalog:
        docs: list[dict[str, Any]] = []
        for name in CRD_FILES:
            with (directory / "crds" / name).open(encoding="utf-8") as handle:
                docs.extend(d for d in yaml.load_all(handle, Loader=_YamlLoader) if d)
        return cls(docs)

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(v.group for v in self.versions.values())

    def rule_sites(self) -> list[tuple[Schema, dict[str, Any]]]:
        """Every CEL rule in the catalog (including transition rules) with its schema node."""
        return [site for v in self.versions.values() for site in iter_rule_sites(v.schema)]

    def rules(self) -> list[str]:
        """Every CEL rule text in the catalog (including transition rules)."""
        return [entry["rule"] for _, entry in self.rule_sites()]

    def lookup(self, api_version: str, kind: str) -> tuple[CrdVersion | None, str | None]:
        entry = self.versions.get((api_version, kind))
        served = sorted(v.api_version for v in self.kinds.get(kind, []) if v.served)
        if entry is None or not entry.served:
            hint = f"; served versions: {', '.join(served)}" if served else "; no CRD defines it"
            return None, f"no served CRD for apiVersion {api_version!r} kind {kind!r}{hint}"
        if entry.deprecated:
            return (
                None,
                f"apiVersion {api_version!r} of kind {kind!r} is deprecated; "
                f"served versions: {', '.join(served)}",
            )
        return entry, None

    def validate(self, obj: dict[str, Any]) -> list[str]:
        """Human-readable problems with ``obj``; an empty list means valid."""
        prefix = object_ref(obj)
        entry, problem = self.lookup(str(obj.get("apiVersion")), str(obj.get("kind")))
        if entry is None:
            return [f"{prefix}: apiVersion: {problem}"]
        errors = validate_metadata(obj.get("metadata"), entry.namespaced)
        # apiVersion and kind were checked by lookup and metadata by
        # validate_metadata. status is written by controllers through the status
        # subresource (the server discards it on create), so it is not ours to
        # check. Every other top-level field is subject to the schema.
        skipped = {*_ENVELOPE, "status"}
        body = {k: v for k, v in obj.items() if k not in skipped}
        schema = dict(entry.schema)
        schema["properties"] = {
            k: v for k, v in schema.get("properties", {}).items() if k not in skipped
        }
        validator = _Validator()
        validator.validate(apply_defaults(body, schema), schema, "")
        return [f"{prefix}: {e}" for e in [*errors, *validator.errors]]


@lru_cache(maxsize=4)
def load_catalog(directory: Path) -> CrdCatalog:
    """Parse the CRD files once per directory (they are over a megabyte of YAML)."""
    return CrdCatalog.from_directory(directory)


def default_catalog() -> CrdCatalog:
    """The catalog for the configured reference directory."""
    return load_catalog(reference_dir())
