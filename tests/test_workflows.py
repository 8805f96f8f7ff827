"""GitHub Actions workflows: valid by GitHub's schema, pinned, least-privilege, in region order.

Workflows are parsed as YAML 1.2 (ruamel, as check-jsonschema does), so `on:` stays a
string key instead of becoming the boolean `True` PyYAML's YAML 1.1 rules would make it,
and validated against the `github-workflow` schema check-jsonschema vendors from
SchemaStore (`check-jsonschema --builtin-schema vendor.github-workflows`).
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from ruamel.yaml import YAML

from tests.conftest import STACKS

PROJECT_DIR = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = PROJECT_DIR / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS_DIR.glob("*.yml"))
PULUMI_ACTION = "pulumi/actions@"
PINNED_USES = re.compile(
    r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}\s+#\s+v\d+\.\d+\.\d+\s*$"
)


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load(path.read_text())
    return loaded


def workflow_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendored / "github-workflows.json").read_text())
    return schema


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def pulumi_step(job: dict[str, Any]) -> dict[str, Any]:
    (step,) = [s for s in steps(job) if str(s.get("uses", "")).startswith(PULUMI_ACTION)]
    return step


@pytest.fixture(scope="module")
def pull_request() -> dict[str, Any]:
    return load(WORKFLOWS_DIR / "pull-request.yml")


@pytest.fixture(scope="module")
def deploy() -> dict[str, Any]:
    return load(WORKFLOWS_DIR / "deploy.yml")


def test_both_workflows_exist() -> None:
    assert [p.name for p in WORKFLOW_FILES] == ["deploy.yml", "pull-request.yml", "region.yml"]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_is_valid_by_github_schema(path: Path) -> None:
    schema = workflow_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator_class(schema).iter_errors(load(path))
    ]
    assert errors == []


def test_schema_rejects_an_invalid_workflow() -> None:
    schema = workflow_schema()
    broken = {"on": "push", "jobs": {"x": {"runs-on": "ubuntu-24.04", "stepz": []}}}
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha_with_its_version(path: Path) -> None:
    uses_lines = [line for line in path.read_text().splitlines() if re.search(r"\buses:", line)]
    assert uses_lines, "a workflow without actions pins nothing"
    assert [line for line in uses_lines if not PINNED_USES.match(line)] == []


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_least_privilege(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {}, "nothing is granted at the top level"
    for name, job in workflow["jobs"].items():
        permissions = job["permissions"]
        writes = {scope for scope, level in permissions.items() if level == "write"}
        allowed = (
            {"pull-requests"} if path.name == "pull-request.yml" and name == "preview" else set()
        )
        assert writes == allowed, name
        assert "id-token" not in permissions, "the Pulumi token is a secret, not OIDC"
        for step in steps(job):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


def test_pull_request_runs_the_readme_test_command_then_previews_every_stack(
    pull_request: dict[str, Any],
) -> None:
    assert set(pull_request["on"]) == {"pull_request"}, "never pull_request_target"
    readme = (PROJECT_DIR / "README.md").read_text()
    assert re.search(r"^make test\b", readme, re.MULTILINE), "the README's test command"
    checks = pull_request["jobs"]["checks"]
    assert "make test" in [s.get("run") for s in steps(checks)]
    assert any("prometheus" in str(s.get("run", "")) for s in steps(checks)), "promtool"
    preview = pull_request["jobs"]["preview"]
    assert preview["needs"] == "checks"
    assert preview["strategy"]["matrix"]["stack"] == list(STACKS)
    step = pulumi_step(preview)
    assert step["with"]["command"] == "preview"
    assert step["with"]["stack-name"] == "${{ vars.PULUMI_ORG }}/meshstack/${{ matrix.stack }}"
    assert step["with"]["comment-on-pr"] is True
    assert step["with"]["diff"] is True


def test_matrix_stacks_are_the_stack_files() -> None:
    stack_files = {
        p.name.removeprefix("Pulumi.").removesuffix(".yaml")
        for p in PROJECT_DIR.glob("Pulumi.*.yaml")
    }
    assert stack_files == set(STACKS)


def test_deploy_runs_region_by_region_behind_environments(deploy: dict[str, Any]) -> None:
    assert set(deploy["on"]) == {"push"}
    assert deploy["on"]["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    previous = "checks"
    assert "make test" in [s.get("run") for s in steps(jobs["checks"])]
    for region in STACKS:
        job = jobs[region]
        assert job["needs"] == previous, f"{region} must wait for {previous}"
        assert job["environment"] == region
        step = pulumi_step(job)
        assert step["with"]["command"] == "up"
        assert step["with"]["stack-name"] == f"${{{{ vars.PULUMI_ORG }}}}/meshstack/{region}"
        previous = region
    assert set(jobs) == {"checks", *STACKS}
    assert "strategy" not in jobs[STACKS[0]], "regions are chained jobs, not a parallel matrix"


def test_deploys_never_overlap_or_cancel(deploy: dict[str, Any]) -> None:
    assert deploy["concurrency"] == {"group": "deploy-meshstack", "cancel-in-progress": False}


def test_every_pulumi_run_uses_the_policy_pack_and_the_locked_cli(
    pull_request: dict[str, Any], deploy: dict[str, Any]
) -> None:
    lock = tomllib.loads((PROJECT_DIR / "uv.lock").read_text())
    sdk_version = next(p["version"] for p in lock["package"] if p["name"] == "pulumi")
    pulumi_jobs = [pull_request["jobs"]["preview"], *(deploy["jobs"][s] for s in STACKS)]
    for job in pulumi_jobs:
        step = pulumi_step(job)
        assert step["with"]["policyPacks"] == "policy"
        assert (PROJECT_DIR / "policy" / "PulumiPolicy.yaml").is_file()
        assert (PROJECT_DIR / step["with"]["policyPackConfigs"]).is_file()
        assert step["with"]["pulumi-version"] == sdk_version
        assert step["env"] == {"PULUMI_ACCESS_TOKEN": "${{ secrets.PULUMI_ACCESS_TOKEN }}"}
        assert "make install" in [s.get("run") for s in steps(job)], "the pack runs in .venv"


def test_checks_fetch_the_pinned_reference_data_before_testing() -> None:
    for name in ("pull-request.yml", "deploy.yml"):
        text = (PROJECT_DIR / ".github" / "workflows" / name).read_text()
        fetch = text.index("python3 tools/fetch_reference.py")
        assert fetch < text.index("run: make test"), name
        assert text.count("MESHSTACK_REFERENCE_DIR: ${{ runner.temp }}/reference") == 2, name
