"""The preview identity's guard (docs/cluster/preview-guard.yaml): valid by the Kubernetes 1.35
schemas and by the API server's own validation of its resource rules, and its CEL lets the
previewers' dry-run requests through, denies their real writes, and leaves every other user
alone (docs/policy.md, "The preview identity").

The schemas alone do not decide whether the API server stores the policy: kube-apiserver
validates the rules in Go (k8s.io/kubernetes v1.35.4,
pkg/apis/admissionregistration/validation/validation.go: validateNamedRuleWithOperations ->
validateRuleWithOperations -> validateRule -> validateResources), and `["*", "*/*"]`, which
the schemas accept, fails there ("if '*/*' is present, must not specify other resources"), so
the policy would never exist. `resource_rule_errors` is that code's rules, line for line; the
guard applied to a real kube-apiserver, with every write and dry run of the group tried, is
`make e2e-preview-guard` (tools/e2e/preview_guard.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from celpy.adapter import json_to_cel

from tools.verify.cel import compile_rule
from tools.verify.core import validate_core

GUARD = Path(__file__).resolve().parents[1] / "docs" / "cluster" / "preview-guard.yaml"
PREVIEWERS = ["meshstack:previewers", "system:authenticated"]


@pytest.fixture(scope="module")
def guard() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(GUARD.read_text()) if d]


# validation.go: supportedOperations, validScopes.
SUPPORTED_OPERATIONS = {"*", "CREATE", "UPDATE", "DELETE", "CONNECT"}
VALID_SCOPES = {"Cluster", "Namespaced", "*"}


def _resources_errors(resources: list[str]) -> list[str]:
    """validateResources (subresources allowed, as for every rule with operations)."""
    errors = [] if resources else ["resources: Required"]
    wildcard_subresources: set[str] = set()  # x/*
    wildcard_resources: set[str] = set()  # */x
    double_wildcard = single_wildcard = resource_without_subresource = False
    for i, res_sub in enumerate(resources):
        if res_sub == "":
            errors.append(f"resources[{i}]: Required")
            continue
        double_wildcard |= res_sub == "*/*"
        single_wildcard |= res_sub == "*"
        if "/" not in res_sub:
            # The Go code assigns (not ORs) here: the last plain resource decides.
            resource_without_subresource = res_sub != "*"
            continue
        res, sub = res_sub.split("/", 1)
        if res in wildcard_subresources:
            errors.append(f"resources[{i}]: if '{res}/*' is present, must not specify {res_sub}")
        if sub in wildcard_resources:
            errors.append(f"resources[{i}]: if '*/{sub}' is present, must not specify {res_sub}")
        if sub == "*":
            wildcard_subresources.add(res)
        if res == "*":
            wildcard_resources.add(sub)
    if len(resources) > 1 and double_wildcard:
        errors.append("resources: if '*/*' is present, must not specify other resources")
    if single_wildcard and resource_without_subresource:
        errors.append(
            "resources: if '*' is present, must not specify other resources without subresources"
        )
    return errors


def resource_rule_errors(rule: dict[str, Any]) -> list[str]:
    """validateNamedRuleWithOperations for one `resourceRules` entry: the API server's error
    messages, empty when it accepts the rule."""
    errors: list[str] = []
    names = rule.get("resourceNames") or []
    errors += [f"resourceNames[{i}]: Duplicate" for i, n in enumerate(names) if n in names[:i]]
    operations = rule.get("operations") or []
    if not operations:
        errors.append("operations: Required")
    if len(operations) > 1 and "*" in operations:
        errors.append("operations: if '*' is present, must not specify other operations")
    errors += [
        f"operations[{i}]: Unsupported value: {op!r}"
        for i, op in enumerate(operations)
        if op not in SUPPORTED_OPERATIONS
    ]
    for field, what in (("apiGroups", "API groups"), ("apiVersions", "API versions")):
        values = rule.get(field) or []
        if not values:
            errors.append(f"{field}: Required")
        if len(values) > 1 and "*" in values:
            errors.append(f"{field}: if '*' is present, must not specify other {what}")
    errors += [
        f"apiVersions[{i}]: Required" for i, v in enumerate(rule.get("apiVersions") or []) if not v
    ]
    errors += _resources_errors(rule.get("resources") or [])
    if "scope" in rule and rule["scope"] not in VALID_SCOPES:
        errors.append(f"scope: Unsupported value: {rule['scope']!r}")
    return errors


def _evaluate(expression: str, request: dict[str, Any]) -> bool:
    result = compile_rule(expression).evaluate({"request": json_to_cel(request)})
    assert isinstance(result, bool) or str(result) in ("True", "False"), result
    return bool(result)


def _admits(policy: dict[str, Any], request: dict[str, Any]) -> bool:
    """What the API server decides for one request: not matched, or every validation true."""
    spec = policy["spec"]
    if not all(_evaluate(c["expression"], request) for c in spec["matchConditions"]):
        return True
    return all(_evaluate(v["expression"], request) for v in spec["validations"])


def test_the_guard_is_valid_and_bound(guard: list[dict[str, Any]]) -> None:
    policy, binding = guard
    assert [validate_core(d) for d in guard] == [[], []]
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["operations"] == ["CREATE", "UPDATE", "DELETE", "CONNECT"]
    assert (rule["apiGroups"], rule["apiVersions"]) == (["*"], ["*"])


def test_the_api_server_accepts_the_guard_s_resource_rules(guard: list[dict[str, Any]]) -> None:
    for rule in guard[0]["spec"]["matchConstraints"]["resourceRules"]:
        assert resource_rule_errors(rule) == []


def _matches(patterns: list[str], resource: str, subresource: str) -> bool:
    """The API server's rule matching (k8s.io/apiserver, admission/plugin/webhook/predicates/
    rules/rules.go, Matcher.resource): `res/sub` with `*` standing for anything, and a
    pattern without a slash only for requests without a subresource."""
    for pattern in patterns:
        res, _, sub = pattern.partition("/")
        if (res in ("*", resource)) and (sub in ("*", subresource)):
            return True
    return False


@pytest.mark.parametrize(
    ("resource", "subresource"),
    [
        ("configmaps", ""),
        ("namespaces", ""),
        ("pods", "exec"),
        ("serviceaccounts", "token"),
        ("deployments", "scale"),
        ("deployments", "status"),
        ("pods", "eviction"),
    ],
)
def test_the_guard_covers_resources_and_subresources(
    guard: list[dict[str, Any]], resource: str, subresource: str
) -> None:
    (rule,) = guard[0]["spec"]["matchConstraints"]["resourceRules"]
    assert _matches(rule["resources"], resource, subresource)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (["*", "*/*"], "if '*/*' is present, must not specify other resources"),
        (["*/*", "pods"], "if '*/*' is present, must not specify other resources"),
        (["*", "pods"], "if '*' is present, must not specify other resources without subres"),
        (["pods/*", "pods/exec"], "if 'pods/*' is present, must not specify pods/exec"),
        (["*/status", "pods/status"], "if '*/status' is present, must not specify pods/status"),
        ([], "resources: Required"),
        ([""], "resources[0]: Required"),
    ],
)
def test_resource_rules_the_api_server_rejects(resources: list[str], message: str) -> None:
    """What the API server answered a `kubectl apply` of the guard with `["*", "*/*"]`:
    `spec.matchConstraints.resourceRules[0].resources: Invalid value: ["*","*/*"]: if '*/*' is
    present, must not specify other resources`."""
    rule = {"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE"]}
    errors = resource_rule_errors(rule | {"resources": resources})
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize(
    ("resources", "operations", "groups"),
    [
        (["*"], ["*"], ["*"]),
        (["*", "*/status"], ["CREATE"], [""]),
        (["pods", "pods/exec"], ["CREATE", "CONNECT"], ["", "apps"]),
        (["*/*"], ["CREATE", "UPDATE", "DELETE", "CONNECT"], ["*"]),
    ],
)
def test_resource_rules_the_api_server_accepts(
    resources: list[str], operations: list[str], groups: list[str]
) -> None:
    rule = {"apiGroups": groups, "apiVersions": ["v1"], "operations": operations}
    assert resource_rule_errors(rule | {"resources": resources}) == []


def test_other_rule_fields_the_api_server_rejects() -> None:
    rule = {"apiGroups": ["*", "apps"], "apiVersions": [], "resources": ["*/*"]}
    errors = resource_rule_errors(rule | {"operations": ["*", "PATCH"], "scope": "Everywhere"})
    assert errors == [
        "operations: if '*' is present, must not specify other operations",
        "operations[1]: Unsupported value: 'PATCH'",
        "apiGroups: if '*' is present, must not specify other API groups",
        "apiVersions: Required",
        "scope: Unsupported value: 'Everywhere'",
    ]


@pytest.mark.parametrize(
    ("groups", "dry_run", "admitted"),
    [
        (PREVIEWERS, True, True),
        (PREVIEWERS, False, False),
        (PREVIEWERS, None, False),
        (["system:masters"], False, True),
        (None, False, True),
    ],
)
def test_previewers_may_only_dry_run(
    guard: list[dict[str, Any]], groups: list[str] | None, dry_run: bool | None, admitted: bool
) -> None:
    user: dict[str, Any] = {"username": "someone"}
    if groups is not None:
        user["groups"] = groups
    request: dict[str, Any] = {"operation": "CREATE", "userInfo": user}
    if dry_run is not None:
        request["dryRun"] = dry_run
    assert _admits(guard[0], request) is admitted
