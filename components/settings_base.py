"""Building blocks of the settings models: the base model, name types, rule errors.

Area modules (`traffic_settings`, …) define their own settings models on top of these and
`components.settings` composes them into `StackSettings`; keeping the blocks here lets
both sides import them without a cycle.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from components.naming import is_dns_label


class SettingsError(ValueError):
    """A stack setting is invalid. `str()` is one line: key path, value, what is allowed."""


class RuleViolationError(ValueError):
    """A cross-field rule broken inside a model; names the offending key relative to it.

    Model validators raise this instead of a bare ValueError so the error names the key
    (`services[2].routes[0].weight`) rather than the whole enclosing object.
    """

    def __init__(self, path: tuple[str | int, ...], value: Any, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.value = value
        self.message = message


def _dns_label(value: str) -> str:
    if not is_dns_label(value):
        raise ValueError(
            "must be a Kubernetes name: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
"""A string that is a valid Kubernetes namespace / Service name (RFC 1123 label)."""

OptionalDnsLabel = Annotated[str, AfterValidator(lambda v: v and _dns_label(v))]
"""A DNS label, or empty for "use the documented default"."""

_LABEL_VALUE_MAX: Final = 63


def _label_value(value: str) -> str:
    ok = len(value) <= _LABEL_VALUE_MAX and all(c.isalnum() or c in "-_." for c in value)
    if not ok or (value and not (value[0].isalnum() and value[-1].isalnum())):
        raise ValueError(
            "must be a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


LabelValue = Annotated[str, AfterValidator(_label_value)]


class SettingsModel(BaseModel):
    """Base of every settings model: immutable, unknown keys rejected, camelCase keys."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=False,
    )


_SERVICE_HOST = re.compile(
    r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\.svc\.cluster\.local$"
)


def _cluster_local_host(value: str) -> str:
    if not _SERVICE_HOST.match(value):
        raise ValueError(
            "must be an in-cluster service host `<name>.<namespace>.svc.cluster.local`, "
            "or `*.<namespace>.svc.cluster.local` for a whole namespace"
        )
    return value


ClusterLocalHost = Annotated[str, AfterValidator(_cluster_local_host)]
"""A Service host (or a namespace wildcard) as Istio's `serviceSettings` takes it."""


_HEADER_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(
            "must be a lowercase HTTP header name (letters, digits, '-', '_'); "
            "Istio matches header names in lowercase"
        )
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
"""A lowercase HTTP header name, as Istio matches headers and Envoy emits them."""

OptionalHeaderName = Annotated[str, AfterValidator(lambda v: v and _header_name(v))]
"""A header name, or empty for "none"."""


_OCI_PREFIX: Final = re.compile(
    r"^oci://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:\d+)?(/[a-z0-9][-a-z0-9._]*)*$"
)


class ChartSource(SettingsModel):
    """Where Chart v4 takes every Helm chart from (`meshstack:chartSource`)."""

    kind: Literal["upstream", "oci", "directory"] = Field(
        default="upstream",
        description=(
            "`upstream`: each chart's own repository (`components/versions.py`); `oci`: "
            "`<location>/<chart>` at the pinned version from an OCI registry mirror; "
            "`directory`: unpacked charts in `<location>/<chart>-<version>/`, as "
            "`tools/charts.py` pins them. Default `upstream`: no mirror to keep up to date."
        ),
    )
    location: str = Field(
        default="",
        description=(
            "For `oci`, the registry prefix (`oci://registry.example.com/helm-mirror`); for "
            "`directory`, the charts' directory (relative to the project directory or "
            "absolute). Empty for `upstream`."
        ),
    )

    @model_validator(mode="after")
    def _location_fits_kind(self) -> ChartSource:
        if self.kind == "upstream" and self.location:
            raise RuleViolationError(
                ("location",), self.location, "must be empty when kind is 'upstream'"
            )
        if self.kind == "oci" and not _OCI_PREFIX.match(self.location):
            raise RuleViolationError(
                ("location",),
                self.location,
                "must be an OCI registry prefix `oci://<host>[:<port>]/<path>` in lowercase, "
                "without a trailing '/'",
            )
        if self.kind == "directory" and not self.location.strip():
            raise RuleViolationError(
                ("location",), self.location, "must name the directory of the unpacked charts"
            )
        return self
