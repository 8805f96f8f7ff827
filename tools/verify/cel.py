"""Evaluate Kubernetes ``x-kubernetes-validations`` CEL rules with cel-python.

cel-python implements the CEL core, but not the Kubernetes CEL libraries the
CRDs rely on, and its ``duration()`` is not Go's ``time.ParseDuration`` (it
accepts a ``d`` unit and rounds to microseconds). This module adds the missing
functions with Kubernetes semantics and caches one compiled program per rule
text, because the same rule appears in many CRD versions.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import celpy
import lark
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError, base_functions

# Go's time.ParseDuration units, in nanoseconds.
_GO_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_GO_COMPONENT = re.compile(r"(\d*)(?:\.(\d*))?([a-z\u00b5\u03bc]+)")
_MAX_NANOS = 2**63 - 1


def parse_go_duration(text: str) -> int:
    """Parse a Go duration string ("1.5s", "2h45m", "-300ms") into nanoseconds.

    Integer arithmetic keeps sub-microsecond precision, so "999999ns" stays
    below "1ms" as it does in the API server.
    """
    rest = text
    sign = 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    while rest:
        match = _GO_COMPONENT.match(rest)
        if not match or (not match.group(1) and not match.group(2)):
            raise ValueError(f"invalid duration {text!r}")
        whole, frac, unit = match.groups()
        if unit not in _GO_UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}")
        scale = _GO_UNITS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        rest = rest[match.end() :]
    if total > _MAX_NANOS:
        raise ValueError(f"invalid duration {text!r}: out of range")
    return sign * total


class GoDuration(celtypes.DurationType):
    """A CEL duration that keeps exact nanoseconds for comparisons."""

    nanos: int

    def __new__(cls, nanos: int) -> GoDuration:
        seconds, rem = divmod(nanos, 1_000_000_000)
        delta = datetime.timedelta(seconds=seconds, microseconds=rem / 1000)
        self = cast(GoDuration, super().__new__(cls, delta))
        self.nanos = nanos
        return self

    def _other_nanos(self, other: object) -> int:
        if isinstance(other, GoDuration):
            return other.nanos
        if isinstance(other, datetime.timedelta):
            return round(other.total_seconds() * 1_000_000_000)
        raise TypeError(f"cannot compare duration with {type(other).__name__}")

    def __lt__(self, other: object) -> bool:
        return self.nanos < self._other_nanos(other)

    def __le__(self, other: object) -> bool:
        return self.nanos <= self._other_nanos(other)

    def __gt__(self, other: object) -> bool:
        return self.nanos > self._other_nanos(other)

    def __ge__(self, other: object) -> bool:
        return self.nanos >= self._other_nanos(other)

    def __eq__(self, other: object) -> bool:
        try:
            return self.nanos == self._other_nanos(other)
        except TypeError:
            return False

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.nanos)


def cel_duration(value: Any) -> Any:
    """CEL ``duration(string)`` with Go syntax, as in Kubernetes (cel-go)."""
    if isinstance(value, celtypes.DurationType):
        return value
    if not isinstance(value, str):
        return CELEvalError("duration() expects a string", TypeError, (value,))
    try:
        return GoDuration(parse_go_duration(str(value)))
    except ValueError as exc:
        return CELEvalError(str(exc), ValueError, (value,))


def cel_substring(text: Any, start: Any, end: Any = None) -> Any:
    """Kubernetes strings library ``<string>.substring(start[, end])`` (code points)."""
    length = len(text)
    stop = length if end is None else int(end)
    if not (0 <= int(start) <= stop <= length):
        return CELEvalError(
            f"substring({start}, {stop}) out of range for string of length {length}",
            IndexError,
            (text,),
        )
    return celtypes.StringType(str(text)[int(start) : stop])


@dataclass(frozen=True)
class ParsedURL:
    """The parts of a URL that the Kubernetes URL library exposes."""

    scheme: str
    host: str
    path: str
    query: str


_HOST_ALLOWED = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:\[\]<>\"%]*$")
_PERCENT_OK = re.compile(r"%(?![0-9A-Fa-f]{2})")


def parse_request_uri(raw: str) -> ParsedURL:
    """Mirror Go's ``url.ParseRequestURI``, which Kubernetes' ``url()``/``isURL()`` use."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise ValueError("invalid control character in URL")
    if raw == "":
        raise ValueError("empty url")
    if raw == "*":
        return ParsedURL("", "", "*", "")
    scheme, rest = "", raw
    for i, char in enumerate(raw):
        if char.isascii() and char.isalpha():
            continue
        if char.isascii() and (char.isdigit() or char in "+-."):
            if i == 0:
                break
            continue
        if char == ":":
            if i == 0:
                raise ValueError("missing protocol scheme")
            scheme, rest = raw[:i].lower(), raw[i + 1 :]
        break
    rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return ParsedURL(scheme, "", "", query)  # opaque URL such as mailto:x
        raise ValueError("invalid URI for request")
    host = ""
    if scheme and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        host = authority.rpartition("@")[2]
        if not _HOST_ALLOWED.match(host) or _PERCENT_OK.search(host):
            raise ValueError(f"invalid character in host name {host!r}")
        if host.startswith("["):
            if "]" not in host:
                raise ValueError("missing ']' in host")
            port = host[host.index("]") + 1 :]
        else:
            port = host[host.index(":") :] if ":" in host else ""
        if port and not re.fullmatch(r":\d*", port):
            raise ValueError(f"invalid port {port!r} after host")
    if _PERCENT_OK.search(rest):
        raise ValueError("invalid URL escape")
    return ParsedURL(scheme, host, rest, query)


def cel_url(value: Any) -> Any:
    """Kubernetes ``url(string)``: an error for strings that are not request URIs."""
    try:
        return parse_request_uri(str(value))
    except ValueError as exc:
        return CELEvalError(f"url() {exc}", ValueError, (value,))


def cel_is_url(value: Any) -> Any:
    """Kubernetes ``isURL(string)``."""
    try:
        parse_request_uri(str(value))
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _url_accessor(attr: str) -> Callable[[Any], Any]:
    def accessor(url: Any) -> Any:
        if not isinstance(url, ParsedURL):
            return CELEvalError(f"{attr} expects a URL", TypeError, (url,))
        return celtypes.StringType(getattr(url, attr))

    return accessor


# Functions Kubernetes adds on top of the CEL standard library (or whose
# semantics differ from cel-python's), keyed by CEL name.
KUBERNETES_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "duration": cel_duration,
    "substring": cel_substring,
    "url": cel_url,
    "isURL": cel_is_url,
    "getScheme": _url_accessor("scheme"),
    "getHost": _url_accessor("host"),
    "getEscapedPath": _url_accessor("path"),
    "getQuery": _url_accessor("query"),
}

# Macros are expanded by the evaluator itself rather than looked up as functions.
_MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter", "dyn"})

SUPPORTED_FUNCTIONS = frozenset(base_functions) | frozenset(KUBERNETES_FUNCTIONS) | _MACROS

_ENV = celpy.Environment()


class CelRuleError(Exception):
    """A rule could not be compiled or evaluated."""


@cache
def compile_rule(rule: str) -> celpy.Runner:
    """Compile a rule once; the same rule text is shared by many CRD versions."""
    try:
        ast = _ENV.compile(rule)
    except Exception as exc:  # celpy raises its own parse errors and lark errors
        raise CelRuleError(f"cannot compile CEL rule {rule!r}: {exc}") from exc
    return _ENV.program(ast, functions=KUBERNETES_FUNCTIONS)


@cache
def rule_function_names(rule: str) -> frozenset[str]:
    """Names of the functions, methods and macros a rule calls."""
    ast = _ENV.compile(rule)
    names: set[str] = set()
    for node in ast.iter_subtrees():
        if node.data == "member_dot_arg":
            token = node.children[1]
        elif node.data == "ident_arg":
            token = node.children[0]
        else:
            continue
        if isinstance(token, lark.Token):
            names.add(str(token))
    return frozenset(names)


def _reason(exc: Exception) -> str:
    # CELEvalError carries (message, Python exception type, arguments). The
    # message is what a reader needs, plus the Python detail when celpy's
    # message is generic (it says "overflow" for any failed int() conversion).
    if isinstance(exc, CELEvalError) and exc.args:
        message = str(exc.args[0])
        detail = (exc.args[2] if len(exc.args) > 2 else None) or ()
        extra = [str(d) for d in detail if isinstance(d, str) and str(d) not in message]
        return f"{message} ({'; '.join(extra)})" if extra else message
    return str(exc)


def evaluate_expression(expression: str, value: Any) -> Any:
    """Evaluate any CEL expression with ``self`` bound to the JSON ``value``.

    Raises CelRuleError when evaluation fails.
    """
    program = compile_rule(expression)
    try:
        result = program.evaluate({"self": json_to_cel(value)})
    except Exception as exc:  # celpy raises CELEvalError and plain Python errors
        raise CelRuleError(f"error evaluating CEL rule {expression!r}: {_reason(exc)}") from exc
    if isinstance(result, CELEvalError):
        raise CelRuleError(f"error evaluating CEL rule {expression!r}: {_reason(result)}")
    return result


def evaluate_rule(rule: str, value: Any) -> bool:
    """Evaluate ``rule`` with ``self`` bound to the JSON ``value``.

    Raises CelRuleError when evaluation fails or the result is not a boolean,
    so callers can report it instead of treating it as a pass.
    """
    result = evaluate_expression(rule, value)
    if not isinstance(result, celtypes.BoolType):
        raise CelRuleError(f"CEL rule {rule!r} returned {result!r}, not a bool")
    return bool(result)
