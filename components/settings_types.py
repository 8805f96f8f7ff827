"""Building blocks of the settings models: the base model, name types, rule errors, and the
one-line message a validation error becomes.

Area settings modules (`components/traffic/settings.py`, …) define their models on top of
these, with the scalar types every area shares (durations, quantities, regexes, URLs), and
`components.settings` composes them into `StackSettings`; keeping the blocks here lets both
sides import them without a cycle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Literal

import re2  # type: ignore[import-untyped]  # google-re2: the engine Envoy uses
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from components.constants import ISTIO_RESERVED_PORTS
from components.naming import is_dns_label, is_dns_subdomain


class SettingsError(ValueError):
    """Stack settings are invalid. `issues`: one per mistake, each the key path in the stack
    file (`Loc`, with its namespace) and one line naming the key, the value and what is
    allowed; `str()` is those lines."""

    def __init__(self, message: str, issues: Sequence[tuple[tuple[int | str, ...], str]] = ()):
        super().__init__(message)
        self.issues: tuple[tuple[tuple[int | str, ...], str], ...] = tuple(issues) or (
            ((), message),
        )

    @property
    def lines(self) -> list[str]:
        """One line per mistake."""
        return [line for _, line in self.issues]


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


def check_unique(where: tuple[str | int, ...], field: str, values: Sequence[Any]) -> None:
    """Raise at the first repeat of a list item's `field` (names, ids, prefixes): the key is
    `<where>[<index>].<field>`, the message the same everywhere."""
    seen: set[Any] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise RuleViolationError(
                (*where, index, field), value, "must be unique; it is repeated"
            )
        seen.add(value)


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


def _public_host(value: str) -> str:
    bare = value.removeprefix("*.")
    if not (is_dns_subdomain(bare) and "." in bare):
        raise ValueError("must be a lowercase DNS name like api.example.com or *.example.com")
    return value


PublicHost = Annotated[str, AfterValidator(_public_host)]
"""A host the ingress gateway serves, `*.` for every subdomain (as a Gateway's and a
VirtualService's hosts take it): public hosts of a service, hosts a quota is scoped to."""


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


# --- durations (Go / protobuf syntax, as Istio and Flagger parse them) ------------------------

_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_MS: Final = {
    "ns": Decimal("0.000001"),
    "us": Decimal("0.001"),
    "µs": Decimal("0.001"),
    "ms": Decimal(1),
    "s": Decimal(1000),
    "m": Decimal(60_000),
    "h": Decimal(3_600_000),
}
DURATION_RULE: Final = (
    "must be a duration like 250ms, 1.5s or 1m (units ns, us, ms, s, m, h) of at least 1ms"
)


def parse_duration_ms(text: str) -> Decimal:
    """Milliseconds of a Go / protobuf duration string; ValueError if it does not parse."""
    position, total = 0, Decimal(0)
    if not text:
        raise ValueError(DURATION_RULE)
    while position < len(text):
        part = _DURATION_PART.match(text, position)
        if part is None:
            raise ValueError(DURATION_RULE)
        try:
            total += Decimal(part.group(1)) * _UNIT_MS[part.group(2)]
        except InvalidOperation:
            raise ValueError(DURATION_RULE) from None
        position = part.end()
    return total


def format_duration(ms: Decimal) -> str:
    """Canonical duration: `30s` for whole seconds, else seconds with 3 decimals (`0.250s`).

    Both Istio (protobuf JSON) and Flagger (Go `time.ParseDuration`) parse this form.
    """
    ms = ms.quantize(Decimal(1))
    if ms % 1000 == 0:
        return f"{int(ms // 1000)}s"
    return f"{ms / 1000:.3f}s"


def duration_ms(text: str) -> int:
    """Whole milliseconds of a validated duration."""
    return int(parse_duration_ms(text))


def _duration(text: str) -> str:
    ms = parse_duration_ms(text)
    if ms < 1:
        raise ValueError(DURATION_RULE)
    return format_duration(ms)


Duration = Annotated[str, AfterValidator(_duration)]
"""A duration ≥ 1ms (the floor Istio's CRDs enforce), stored canonically."""


# --- Prometheus durations ------------------------------------------------------------------

_PROM_DURATION: Final = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def _prom_duration(value: str) -> str:
    match = _PROM_DURATION.match(value)
    if not value or match is None or not any(int(g) for g in match.groups() if g):
        raise ValueError(
            "must be a positive duration in hours, minutes and seconds, e.g. 2m or 1m30s"
        )
    return value


PromDuration = Annotated[str, AfterValidator(_prom_duration)]
"""A positive Prometheus duration such as `30s`, `2m` or `1h30m`, stored as written; also
matches the Prometheus Operator CRDs' duration pattern, and Go's `time.ParseDuration`
reads it (Jaeger's span retention)."""


def prom_duration_seconds(value: str) -> int:
    """Seconds in a `PromDuration` (already validated)."""
    match = _PROM_DURATION.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


# --- RE2 ----------------------------------------------------------------------------------

RE2_RULE: Final = "must be an RE2 regex (Envoy's engine; no lookarounds or backreferences)"

_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.log_errors = False


def re2_problem(pattern: str) -> str | None:
    """Why RE2 rejects `pattern`, or None.

    Checked with RE2 itself: Python's `re` accepts constructs RE2 rejects (lookarounds,
    backreferences, possessive quantifiers, `\\Z`), and Envoy would NACK the route, and
    the whole listener update with it.
    """
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        return reason.decode() if isinstance(reason, bytes) else str(reason)
    return None


def _re2(pattern: str) -> str:
    problem = re2_problem(pattern)
    if problem is not None:
        raise ValueError(f"{RE2_RULE}: {problem}")
    return pattern


Re2Regex = Annotated[str, AfterValidator(_re2)]
"""A regex Envoy's RE2 engine accepts (full-string match, as Istio applies it)."""


# --- Kubernetes quantities ----------------------------------------------------------------

_QUANTITY: Final = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
QUANTITY_FACTORS: Final = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def parse_quantity(value: str) -> Decimal:
    """A Kubernetes quantity (`250m`, `2`, `512Mi`, `1G`) as a number of base units."""
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    return Decimal(match.group(1)) * QUANTITY_FACTORS[match.group(3)]


def _quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError("must be a Kubernetes quantity, e.g. `500m`, `2`, `512Mi`, `4Gi`")
    return value


Quantity = Annotated[str, AfterValidator(_quantity)]
"""A Kubernetes resource quantity string."""


class Resources(SettingsModel):
    """CPU and memory requests and limits of one container."""

    cpu_request: Quantity = Field(default="250m", description="CPU request.")
    memory_request: Quantity = Field(default="512Mi", description="Memory request.")
    cpu_limit: Quantity = Field(default="2", description="CPU limit.")
    memory_limit: Quantity = Field(default="2Gi", description="Memory limit.")

    def as_kubernetes(self) -> dict[str, dict[str, str]]:
        """The `resources` block of a container."""
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


# --- ports ---------------------------------------------------------------------------------


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be a port, 1-65535")
    if value in ISTIO_RESERVED_PORTS:
        raise ValueError(
            f"is reserved by Istio's sidecar ({ISTIO_RESERVED_PORTS[value]}); use a port other "
            f"than {', '.join(map(str, ISTIO_RESERVED_PORTS))} (istio.io, Ports used by Istio)"
        )
    return value


Port = Annotated[int, AfterValidator(_port)]
"""An application port, 1-65535, none the Istio sidecar reserves for itself."""


# --- URLs --------------------------------------------------------------------------------

URL_PATTERN: Final = r"^https?://[^\s/]+(:\d+)?(/\S*)?$"

Url = Annotated[str, StringConstraints(pattern=URL_PATTERN)]
"""An http:// or https:// URL without spaces."""

OptionalUrl = Annotated[str, StringConstraints(pattern=r"^(https?://[^\s/]+(:\d+)?(/\S*)?)?$")]
"""A `Url`, or empty for "none"."""

_HTTPS_URL: Final = re.compile(r"^https://[^\s/#]+(/[^\s#]*)?$")


def _https_url(value: str) -> str:
    if not _HTTPS_URL.match(value):
        raise ValueError(
            "must be an https:// URL without spaces or #fragment (the alert name is appended)"
        )
    return value


HttpsUrl = Annotated[str, AfterValidator(_https_url)]
"""An https:// URL without a fragment, to which a path or anchor may be appended."""


def _optional_https_url(value: str) -> str:
    return value and _https_url(value)


OptionalHttpsUrl = Annotated[str, AfterValidator(_optional_https_url)]
"""An `HttpsUrl`, or empty for "derived where the program runs"."""


# --- where Helm charts come from -----------------------------------------------------------

_OCI_PREFIX: Final = re.compile(
    r"^oci://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:\d+)?(/[a-z0-9][-a-z0-9._]*)*$"
)


class ChartSource(SettingsModel):
    """Where Chart v4 takes every Helm chart from (`meshstack:chartSource`)."""

    kind: Literal["upstream", "upstream-oci", "oci", "directory"] = Field(
        default="upstream",
        description=(
            "`upstream`: each chart's own Helm repository at its pinned version "
            "(`components/versions.py`; Istio's is `https://blob.istio.io/istio-release/charts`). "
            "`upstream-oci`: the publisher's OCI registry where it has one (Istio's charts "
            "from `oci://ghcr.io/istio/release/charts`), else its Helm repository. "
            "`oci`: `<location>/<chart>` at the pinned version "
            "from an OCI registry (a mirror in a regulated or air-gapped network; push the "
            "charts under their names `base`, `istiod`, `gateway`, `flagger`, `loadtester`, "
            "`kiali-server`, `jaeger`). `directory`: unpacked charts in "
            "`<location>/<chart>-<version>/` (e.g. `istiod-1.30.4`), the layout of "
            "`../shared/charts` and of the chart cache (`tools/charts.py`). Default "
            "`upstream`: no mirror to keep in step with the pins."
        ),
    )
    location: str = Field(
        default="",
        description=(
            "For `oci`, the registry prefix (`oci://registry.example.com/helm-mirror`); for "
            "`directory`, the charts' directory (relative to the project directory or "
            "absolute). Empty for `upstream` and `upstream-oci`."
        ),
    )

    @model_validator(mode="after")
    def _location_fits_kind(self) -> ChartSource:
        if self.kind in ("upstream", "upstream-oci") and self.location:
            raise RuleViolationError(
                ("location",), self.location, f"must be empty when kind is '{self.kind}'"
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
