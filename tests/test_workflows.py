"""GitHub Actions workflows: valid by GitHub's schema, pinned, least-privilege, in region order,
and no credential outside an environment.

Workflows are parsed as YAML 1.2 (ruamel, as check-jsonschema does), so `on:` stays a
string key instead of becoming the boolean `True` PyYAML's YAML 1.1 rules would make it,
and validated against the `github-workflow` schema check-jsonschema vendors from
SchemaStore (`check-jsonschema --builtin-schema vendor.github-workflows`).

The credential invariants (docs/policy.md, "Credentials"): the workflows reference no GitHub
secret at all; a job obtains a credential only by exchanging its OIDC token (`id-token:
write`, `pulumi/auth-actions`), and only inside a GitHub environment, whose name decides the
Pulumi team and the Pulumi ESC environment it may open.
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
from tools import lint_workflows, workflows
from tools.stacks import hub_stacks

PROJECT_DIR = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = PROJECT_DIR / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS_DIR.glob("*.yml"))
AUTH_ACTION = "pulumi/auth-actions@"
PULUMI_SCRIPT = "tools/ci/pulumi.sh"
PINNED_USES = re.compile(
    r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}\s+#\s+v\d+\.\d+\.\d+\s*$"
)
PREVIEW_ENVIRONMENTS = {"preview", "preview-main"}
REGION_EXPRESSION = "${{ inputs.stack }}"


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load(path.read_text())
    return loaded


def workflow_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendored / "github-workflows.json").read_text())
    return schema


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def uses(step: dict[str, Any]) -> str:
    return str(step.get("uses", ""))


def pulumi_step(job: dict[str, Any]) -> dict[str, Any]:
    (step,) = [s for s in steps(job) if s.get("run") == PULUMI_SCRIPT]
    return step


def all_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    """(workflow file, job id, job) of every job of every workflow."""
    return [
        (path.name, name, job)
        for path in WORKFLOW_FILES
        for name, job in load(path)["jobs"].items()
    ]


def pulumi_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [j for j in all_jobs() if any(s.get("run") == PULUMI_SCRIPT for s in steps(j[2]))]


def obtains_credentials(job: dict[str, Any]) -> bool:
    """The job can obtain a Pulumi token or a kubeconfig: it may mint an OIDC token, reads a
    secret, or runs the token exchange or the Pulumi script."""
    text = json.dumps(job)
    return (
        job.get("permissions", {}).get("id-token") == "write"
        or "secrets." in text
        or AUTH_ACTION in text
        or PULUMI_SCRIPT in text
    )


def environment_settings() -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load(
        (PROJECT_DIR / ".github" / "environments.yml").read_text()
    )
    return loaded


def settings_of(environment: str) -> dict[str, Any]:
    """The settings .github/environments.yml requires of one environment name (a region's
    are the `region_environment` template with `<stack>` filled in)."""
    settings = environment_settings()
    if environment in settings["environments"]:
        found: dict[str, Any] = settings["environments"][environment]
        return found
    assert environment in STACKS, f"{environment} is neither in environments.yml nor a stack"
    template = json.dumps(settings["region_environment"]).replace("<stack>", environment)
    filled: dict[str, Any] = json.loads(template)
    return filled


@pytest.fixture(scope="module")
def pull_request() -> dict[str, Any]:
    return load(WORKFLOWS_DIR / "pull-request.yml")


@pytest.fixture(scope="module")
def deploy() -> dict[str, Any]:
    return load(WORKFLOWS_DIR / "deploy.yml")


def test_the_three_workflows_exist() -> None:
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
        allowed = set()
        if "environment" in job and any(uses(s).startswith(AUTH_ACTION) for s in steps(job)):
            allowed.add("id-token")
        if path.name == "pull-request.yml" and name == "comment":
            allowed.add("pull-requests")
        assert writes == allowed, name
        for step in steps(job):
            if uses(step).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


def test_no_workflow_references_a_github_secret() -> None:
    """Credentials come from OIDC exchanges in environments, never from GitHub secrets (a
    job in an environment silently falls back to a repository secret of the same name)."""
    for path in WORKFLOW_FILES:
        assert "secrets." not in path.read_text(), path.name
    assert environment_settings()["repository_secrets"] == []


def test_every_job_that_can_obtain_credentials_runs_in_an_environment() -> None:
    credential_jobs = [(f, n) for f, n, job in all_jobs() if obtains_credentials(job)]
    assert len(credential_jobs) == len(STACKS) * 2 + 1 + 3, "previews, ups, region's three"
    for workflow, name, job in all_jobs():
        if obtains_credentials(job):
            assert job.get("environment"), f"{workflow}: {name}"


def test_the_token_exchange_follows_every_install_and_matches_the_environment() -> None:
    """The OIDC exchange comes after every step that installs or runs code before the Pulumi
    command (pulumi/auth-actions exports the token to every later step), and each
    environment gets its own team and cluster credential (docs/policy.md)."""
    for workflow, name, job in pulumi_jobs():
        names = [s.get("run") or uses(s) for s in steps(job)]
        auth = next(i for i, s in enumerate(steps(job)) if uses(s).startswith(AUTH_ACTION))
        assert names[auth + 1] == PULUMI_SCRIPT, f"{workflow}: {name}"
        after = [n.split("@")[0] for n in names[auth + 2 :]]
        assert set(after) <= {"actions/upload-artifact"}, f"{workflow}: {name} runs no more code"
        assert "make install" in names[:auth]
        environment = job["environment"]
        exchange = steps(job)[auth]["with"]
        run = pulumi_step(job)["env"]
        assert exchange["organization"] == "${{ vars.PULUMI_ORG }}"
        assert exchange["requested-token-type"] == "urn:pulumi:token-type:access_token:team"
        if environment in PREVIEW_ENVIRONMENTS:
            assert run["OPERATION"] == "preview", f"{workflow}: {name} never deploys"
            expected = settings_of(environment)
        else:
            region = run["STACK"]
            assert environment == region, f"{workflow}: {name} deploys its own region only"
            expected = (
                settings_of(region)
                if region in STACKS
                else {
                    "pulumi_team": "meshstack-deploy-${{ inputs.stack }}",
                    "esc_environment": "meshstack/deploy-${{ inputs.stack }}",
                }
            )
        assert exchange["scope"] == f"team:{expected['pulumi_team']}", f"{workflow}: {name}"
        assert f"meshstack/{run['CREDENTIALS']}" == expected["esc_environment"]
        assert run["PULUMI_ORG"] == "${{ vars.PULUMI_ORG }}"


def test_only_reviewed_main_reaches_the_region_and_preview_main_environments() -> None:
    """Region environments and preview-main accept main only (environments.yml), and the
    workflows that use them run on pushes to main or by dispatch (whose region.yml checks the
    commit); the `preview` environment, which pull requests use, needs a reviewer."""
    for workflow, name, job in all_jobs():
        environment = job.get("environment")
        if environment is None:
            continue
        if environment == REGION_EXPRESSION:
            for stack in STACKS:
                assert settings_of(stack)["deployment_branches"] == ["main"]
            continue
        settings = settings_of(environment)
        assert settings["can_admins_bypass"] is False
        assert settings["prevent_self_review"] is bool(settings["reviewers"]), environment
        assert settings["secrets"] == []
        if environment == "preview":
            assert workflow == "pull-request.yml", f"{name}: the PR preview environment"
            assert settings["reviewers"], "pull-request code runs only after approval"
        else:
            assert workflow in {"deploy.yml", "region.yml"}, name
            assert settings["deployment_branches"] == ["main"], name
            if environment in STACKS:
                assert settings["reviewers"], f"{environment}: an up needs an approval"


def test_the_settings_file_lists_the_protections_of_main_and_actions() -> None:
    settings = environment_settings()
    ruleset = settings["ruleset_main"]
    assert ruleset["bypass_actors"] == []
    rules = ruleset["rules"]
    assert rules["pull_request"]["require_code_owner_review"] is True
    assert rules["pull_request"]["require_last_push_approval"] is True
    assert rules["pull_request"]["dismiss_stale_reviews_on_push"] is True
    assert rules["required_linear_history"] is True, "main's first-parent line is every commit"
    assert rules["non_fast_forward"] is True
    required = rules["required_status_checks"]["required_status_checks"]
    assert {c["integration_id"] for c in required} == {15368}, "posted by GitHub Actions only"
    job_names = {job["name"] for _, _, job in all_jobs()}
    assert {c["context"] for c in required} <= job_names, "required checks are job names"
    tags = settings["ruleset_tags"]
    assert (tags["target"], tags["include"], tags["enforcement"]) == ("tag", ["~ALL"], "active")
    assert tags["bypass_actors"] == [
        {"actor_type": "Team", "name": "deployers", "bypass_mode": "always"}
    ]
    assert all(tags["rules"][r] is True for r in ("creation", "update", "deletion"))
    assert settings["actions"]["send_secrets_and_variables_to_fork_pull_requests"] is False
    assert settings["actions"]["can_approve_pull_request_reviews"] is False
    assert settings["actions"]["default_workflow_permissions"] == "read"


def test_codeowners_cover_what_weakens_the_pipeline_or_the_policy_pack() -> None:
    owners = (PROJECT_DIR / ".github" / "CODEOWNERS").read_text()
    patterns = {line.split()[0] for line in owners.splitlines() if line and line[0] != "#"}
    for path in (
        "/.github/",
        "/policy/",
        "/tools/ci/",
        "/tools/workflows.py",
        "/tools/recover_stack.py",
        "/docs/cluster/",
        "/tools/requirements/",
        "/Makefile",
        "/pyproject.toml",
        "/uv.lock",
        "/__main__.py",
        "/Pulumi.yaml",
        "/Pulumi.*.yaml",
    ):
        assert path in patterns, path


def test_no_run_script_interpolates_an_expression() -> None:
    """An expression inside a script is code injection; inputs reach scripts through env."""
    for workflow, name, job in all_jobs():
        for step in steps(job):
            assert "${{" not in step.get("run", ""), f"{workflow}: {name}: {step.get('name')}"


def test_nothing_restores_a_cache_and_uv_is_hash_pinned() -> None:
    """No cache reaches a job (setup-uv's cache is gone with setup-uv); uv comes from its
    SHA-256-pinned wheels, as in the Makefile and .ci/run."""
    for workflow, name, job in all_jobs():
        for step in steps(job):
            assert not uses(step).startswith(("astral-sh/setup-uv@", "actions/cache@")), name
            if uses(step).startswith("actions/setup-python@"):
                assert "cache" not in step["with"], f"{workflow}: {name}"
        runs = [s.get("run", "") for s in steps(job)]
        if "make install" in runs or "make test" in runs:
            install = (
                "python -m pip install --require-hashes --no-deps -r tools/requirements/uv.txt"
            )
            assert install in runs, f"{workflow}: {name}"
    for path in (PROJECT_DIR / "Makefile", PROJECT_DIR / ".ci" / "run"):
        text = path.read_text()
        assert "--require-hashes" in text and "tools/requirements/uv.txt" in text, path.name
    pins = (PROJECT_DIR / "tools" / "requirements" / "uv.txt").read_text()
    assert re.search(r"^uv==\d+\.\d+\.\d+ \\$", pins, re.MULTILINE)
    assert pins.count("--hash=sha256:") >= 10, "every platform's wheel"


def test_pull_request_runs_the_readme_test_command_then_previews_every_stack(
    pull_request: dict[str, Any],
) -> None:
    assert set(pull_request["on"]) == {"pull_request"}, "never pull_request_target"
    readme = (PROJECT_DIR / "README.md").read_text()
    assert re.search(r"^make test\b", readme, re.MULTILINE), "the README's test command"
    checks = pull_request["jobs"]["checks"]
    assert "make test" in [s.get("run") for s in steps(checks)]
    assert any("prometheus shellcheck" in str(s.get("run", "")) for s in steps(checks))
    assert not obtains_credentials(checks)
    preview = pull_request["jobs"]["preview"]
    assert preview["needs"] == "checks"
    assert preview["environment"] == "preview"
    assert preview["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    assert preview["strategy"]["matrix"]["stack"] == list(STACKS)
    run = pulumi_step(preview)["env"]
    assert run["OPERATION"] == "preview"
    assert run["STACK"] == "${{ matrix.stack }}"


def test_the_pr_comment_is_posted_by_a_job_that_runs_no_pr_code(
    pull_request: dict[str, Any],
) -> None:
    comment = pull_request["jobs"]["comment"]
    assert comment["needs"] == ["preview", "render"]
    assert comment["permissions"] == {"pull-requests": "write"}
    assert "environment" not in comment
    assert [uses(s).split("@")[0] for s in steps(comment) if "uses" in s] == [
        "actions/download-artifact"
    ]
    script = "\n".join(s.get("run", "") for s in steps(comment))
    assert "make" not in script and "checkout" not in script and "python" not in script
    upload = [s for s in steps(pull_request["jobs"]["preview"]) if "upload-artifact" in uses(s)]
    assert upload[0]["with"]["name"] == "preview-${{ matrix.stack }}"
    assert comment["steps"][0]["with"]["pattern"] == "preview-*"


def test_deploy_previews_then_ups_region_by_region_behind_environments(
    deploy: dict[str, Any],
) -> None:
    assert set(deploy["on"]) == {"push"}
    assert deploy["on"]["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    previous = "checks"
    hubs = hub_stacks()
    assert "make test" in [s.get("run") for s in steps(jobs["checks"])]
    for region in STACKS:
        preview, up = jobs[f"preview-{region}"], jobs[region]
        # Hubs one after the other; each spoke right after the last hub, in parallel.
        assert preview["needs"] == previous, f"{region}'s preview waits for {previous}"
        assert preview["environment"] == "preview-main"
        assert pulumi_step(preview)["env"] | {"CREDENTIALS": "-"} == {
            "OPERATION": "preview",
            "STACK": region,
            "CREDENTIALS": "-",
            "PULUMI_ORG": "${{ vars.PULUMI_ORG }}",
            "STOP_AFTER_MINUTES": str(workflows.PREVIEW_TIMEOUT - workflows.STOP_MARGIN),
        }
        assert up["needs"] == f"preview-{region}", "approvers read the same commit's preview"
        assert up["environment"] == region
        assert pulumi_step(up)["env"]["OPERATION"] == "up"
        assert pulumi_step(up)["env"]["STACK"] == region
        if region in hubs:
            previous = region
    assert set(jobs) == {"checks", *STACKS, *(f"preview-{s}" for s in STACKS)}
    assert "strategy" not in jobs[STACKS[0]], "regions are jobs of their own, not a matrix"


def test_spokes_deploy_in_parallel_after_the_hub_only() -> None:
    """With one hub and two spokes, both spokes' previews wait for the hub's `up` and
    for nothing else; a second hub waits for the first."""
    jobs = YAML(typ="safe").load(
        workflows.deploy_jobs(["hub-a", "hub-b", "s1", "s2"], {"hub-a", "hub-b"})
    )
    needs = {name: job["needs"] for name, job in jobs.items()}
    assert needs == {
        "preview-hub-a": "checks",
        "hub-a": "preview-hub-a",
        "preview-hub-b": "hub-a",
        "hub-b": "preview-hub-b",
        "preview-s1": "hub-b",
        "s1": "preview-s1",
        "preview-s2": "hub-b",
        "s2": "preview-s2",
    }


def test_each_pull_request_gets_a_credential_free_render_diff_and_summary_per_stack(
    pull_request: dict[str, Any],
) -> None:
    render = pull_request["jobs"]["render"]
    assert render["strategy"]["matrix"]["stack"] == list(STACKS)
    assert not obtains_credentials(render) and "environment" not in render
    assert render["permissions"] == {"contents": "read"}
    checkout = next(s for s in steps(render) if uses(s).startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 2, "the merge commit's first parent is the base"
    script = "\n".join(s.get("run", "") for s in steps(render))
    assert '-m tools.diff "$STACK" --base HEAD^1' in script
    assert "build/$STACK/summary.md" in script
    upload = next(s for s in steps(render) if "upload-artifact" in uses(s))
    assert upload["with"]["name"].startswith("preview-"), "the comment job's pattern takes it"


def test_deploys_never_overlap_and_queue_instead_of_replacing(deploy: dict[str, Any]) -> None:
    assert deploy["concurrency"] == {
        "group": "deploy-meshstack",
        "cancel-in-progress": False,
        "queue": "max",
    }


def test_every_pulumi_job_uses_the_policy_pack_the_locked_cli_and_a_finite_timeout() -> None:
    lock = tomllib.loads((PROJECT_DIR / "uv.lock").read_text())
    sdk_version = next(p["version"] for p in lock["package"] if p["name"] == "pulumi")
    script = (PROJECT_DIR / PULUMI_SCRIPT).read_text()
    assert "--policy-pack policy" in script
    assert "--policy-pack-config policy/config.json" in script
    assert (PROJECT_DIR / "policy" / "PulumiPolicy.yaml").is_file()
    assert 'pulumi env run "$PULUMI_ORG/meshstack/$CREDENTIALS"' in script
    jobs = pulumi_jobs()
    assert len(jobs) == len(STACKS) * 2 + 1 + 3
    limits = {
        "preview": workflows.PREVIEW_TIMEOUT,
        "up": workflows.UP_TIMEOUT,
        "recover": workflows.RECOVER_TIMEOUT,
    }
    for workflow, name, job in jobs:
        (cli,) = [s for s in steps(job) if uses(s).startswith("pulumi/actions@")]
        assert cli["with"] == {"pulumi-version": sdk_version}, "install only, the locked CLI"
        assert "make install" in [s.get("run") for s in steps(job)], "the pack runs in .venv"
        env = pulumi_step(job)["env"]
        assert job["timeout-minutes"] == limits[env["OPERATION"]], f"{workflow}: {name}"
        stop = int(env["STOP_AFTER_MINUTES"])
        assert stop == job["timeout-minutes"] - workflows.STOP_MARGIN, f"{workflow}: {name}"
    assert 0 < workflows.PREVIEW_TIMEOUT < workflows.UP_TIMEOUT <= 60


def test_pulumi_is_stopped_gracefully_before_the_job_times_out() -> None:
    """The runner kills a timed-out job's processes within seconds, before Pulumi's graceful
    cancel ends (the stack stays locked); SIGINT from `timeout` STOP_MARGIN minutes earlier
    lets the CLI finish in-flight operations and release the lock. The command `timeout` runs
    is the Pulumi command itself, inside `pulumi env run`."""
    script = (PROJECT_DIR / PULUMI_SCRIPT).read_text()
    assert 'timeout --signal=INT --kill-after=5m "${STOP_AFTER_MINUTES}m" "${command[@]}"' in script
    assert script.index('pulumi env run "$PULUMI_ORG') < script.index("timeout --signal=INT")
    assert workflows.STOP_MARGIN - 5 >= 3, "the SIGKILL comes 3+ minutes before the job's end"


def test_checks_fetch_the_pinned_reference_data_before_testing() -> None:
    """Every job that tests or renders (`make test`, `tools.diff`) fetches the pinned
    reference data first and reads it from the same directory."""
    reference = "${{ runner.temp }}/reference"
    users = 0
    for workflow, name, job in all_jobs():
        runs = [str(s.get("run", "")) for s in steps(job)]
        using = [i for i, run in enumerate(runs) if "make test" in run or "tools.diff" in run]
        if not using:
            continue
        users += 1
        fetch = runs.index("python3 tools/fetch_reference.py")
        assert fetch < using[0], f"{workflow}: {name}"
        for i in (fetch, *using):
            assert steps(job)[i]["env"]["MESHSTACK_REFERENCE_DIR"] == reference, name
    assert users >= 3, "checks of pull-request.yml and deploy.yml, the render job"


def test_production_stacks_hold_no_kubeconfig() -> None:
    """A token that may preview a stack may decrypt its config; the cluster credential of CI
    comes from the job's ESC environment instead (docs/policy.md)."""
    for stack in STACKS:
        text = (PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text()
        assert "meshstack:kubeconfig" not in text, stack
        assert "meshstack:kubeContext" in text, f"{stack} names its context"


def test_make_check_runs_the_pinned_workflow_linters() -> None:
    makefile = (PROJECT_DIR / "Makefile").read_text()
    check = re.search(r"^check: (.*?) ##", makefile, re.MULTILINE)
    assert check is not None and "lint-workflows" in check.group(1).split()
    assert "$(PY) -m tools.lint_workflows" in makefile
    assert lint_workflows.pinned_module_version() == "v1.7.12"
    assert lint_workflows.pinned_module_hash().startswith("h1:")
    assert lint_workflows.pinned_zizmor_version() == "1.33.1"
    assert lint_workflows.ZIZMOR_ARGS == ("--offline", "--persona", "auditor")
    config = YAML(typ="safe").load((PROJECT_DIR / ".github" / "actionlint.yaml").read_text())
    ignored = [p for rules in config["paths"].values() for p in rules["ignore"]]
    assert ignored == ['unexpected key "queue" for "concurrency" section']


def test_a_linter_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "actionlint"
    fake.write_text("#!/bin/sh\necho v1.7.11\n")
    fake.chmod(0o755)
    with pytest.raises(lint_workflows.LintToolError, match=r"reports \['v1.7.11'\]"):
        lint_workflows.check_actionlint(fake)
    (tmp_path / "actionlint.sha256").write_text("0" * 64 + "  actionlint\n")
    with pytest.raises(lint_workflows.LintToolError, match="SHA-256 differs"):
        lint_workflows.ensure_actionlint(fake)
