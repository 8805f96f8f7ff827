"""Envoy's request matchers on a request's headers, shared by the route evaluation
(`evaluate.py`, RouteMatch headers) and the authorization decision (`rbac.py`, RBAC
permissions and principals): `type/matcher/v3/string.proto` and `config/route/v3`
HeaderMatcher, with RE2 full matching for regexes as Envoy's `safe_regex` does.

Pure: a matcher dict (istiod's protojson) and a value in, a bool out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2: the engine Envoy uses


class UnmodelledError(ValueError):
    """The configuration uses a matcher or filter the simulation does not decide."""


def string_matches(matcher: Mapping[str, Any], value: str) -> bool:
    """Envoy's StringMatcher (`type/matcher/v3/string.proto`)."""
    fold = bool(matcher.get("ignoreCase"))
    subject = value.lower() if fold else value

    def pattern(key: str) -> str:
        text = str(matcher[key])
        return text.lower() if fold else text

    if "exact" in matcher:
        return subject == pattern("exact")
    if "prefix" in matcher:
        return subject.startswith(pattern("prefix"))
    if "suffix" in matcher:
        return subject.endswith(pattern("suffix"))
    if "contains" in matcher:
        return pattern("contains") in subject
    if "safeRegex" in matcher:
        # ignore_case does not apply to safe_regex (string.proto).
        return re2.fullmatch(matcher["safeRegex"]["regex"], value) is not None
    raise UnmodelledError(f"string matcher {sorted(matcher)}")


def header_matches(matcher: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    """Envoy's HeaderMatcher on the request headers (none for a network filter)."""
    name = str(matcher["name"]).lower()
    value = headers.get(name)
    if value is None and matcher.get("treatMissingHeaderAsEmpty"):
        value = ""
    if "presentMatch" in matcher:
        result = (value is not None) == bool(matcher["presentMatch"])
    elif value is None:
        result = False
    elif "stringMatch" in matcher:
        result = string_matches(matcher["stringMatch"], value)
    elif "exactMatch" in matcher:
        result = value == matcher["exactMatch"]
    elif "prefixMatch" in matcher:
        result = value.startswith(matcher["prefixMatch"])
    elif "suffixMatch" in matcher:
        result = value.endswith(matcher["suffixMatch"])
    elif "safeRegexMatch" in matcher:
        result = re2.fullmatch(matcher["safeRegexMatch"]["regex"], value) is not None
    else:
        raise UnmodelledError(f"header matcher {sorted(matcher)}")
    return result != bool(matcher.get("invertMatch"))
