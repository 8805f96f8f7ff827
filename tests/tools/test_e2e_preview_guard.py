"""The pure parts of `make e2e-preview-guard` (tools/e2e/preview_guard.py): how a kubectl
result is judged, and that its cases cover what docs/policy.md says the guard denies and
admits. The run itself needs the e2e tool cache (make e2e-tools)."""

from __future__ import annotations

import yaml

from tools.e2e import preview_guard
from tools.e2e.preview_guard import CASES, DENIED, Case, verdict

DENIAL = (
    'Error from server (Forbidden): configmaps "c1" is forbidden: ValidatingAdmissionPolicy '
    "'meshstack-previewers-dry-run-only' with binding 'meshstack-previewers-dry-run-only' "
    f"denied request: {DENIED}\n"
)
RBAC_DENIAL = (
    'Error from server (Forbidden): configmaps is forbidden: User "meshstack-preview" cannot '
    'create resource "configmaps" in API group "" in the namespace "guarded"\n'
)


def test_a_denied_case_passes_only_when_the_guard_denied_it() -> None:
    case = Case("create", ("create", "configmap", "c1"), allowed=False)
    assert verdict(case, 1, DENIAL) == (True, "denied by the guard")
    assert verdict(case, 0, "configmap/c1 created\n") == (False, "admitted")
    ok, happened = verdict(case, 1, RBAC_DENIAL)
    assert not ok, "a denial by RBAC proves nothing about the guard"
    assert happened.startswith("failed otherwise: Error from server (Forbidden)")


def test_an_allowed_case_passes_only_when_admitted() -> None:
    case = Case("dry run", ("create", "configmap", "c3", "--dry-run=server"), allowed=True)
    assert verdict(case, 0, "configmap/c3 created (server dry run)\n") == (True, "admitted")
    assert verdict(case, 1, DENIAL)[0] is False
    assert verdict(case, 1, "")[1] == "failed otherwise: exit 1"


def test_every_real_write_is_denied_and_every_dry_run_admitted() -> None:
    for case in CASES:
        dry_run = "--dry-run=server" in case.argv
        read = case.argv[0] == "get"
        assert case.allowed is (dry_run or read), case.what
    verbs = {case.argv[0] for case in CASES if not case.allowed}
    assert verbs >= {"create", "apply", "delete", "scale", "patch"}
    assert any("--subresource=status" in c.argv for c in CASES)
    assert any(c.argv[:2] == ("create", "token") for c in CASES), "serviceaccounts/token"
    assert {c.argv[0] for c in CASES if c.allowed} >= {"create", "apply", "delete", "get"}


def test_the_first_check_applies_the_guard_with_the_rejected_rule() -> None:
    docs = list(yaml.safe_load_all(preview_guard._guard_with(["*", "*/*"])))
    assert docs[0]["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["*", "*/*"]
    assert docs[1]["kind"] == "ValidatingAdmissionPolicyBinding"
