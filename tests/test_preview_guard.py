"""The preview identity's guard (docs/cluster/preview-guard.yaml): valid by the Kubernetes 1.35
schemas, and its CEL lets the previewers' dry-run requests through, denies their real writes,
and leaves every other user alone (docs/policy.md, "The preview identity")."""

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
    assert rule["resources"] == ["*", "*/*"], "subresources too (pods/exec, serviceaccounts/token)"


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
