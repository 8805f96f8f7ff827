"""The per-stack parts of the GitHub workflows, and every job that runs Pulumi, generated.

Adding `Pulumi.<stack>.yaml` adds a region everywhere a workflow lists the regions; no
workflow is edited by hand for it. Each block between a `BEGIN generated` line and the
`END generated` line after it (indented like the YAML around it) is written by this module
from `tools.stacks.deploy_order()` (the observability hub first, then the spokes); the rest
of each workflow is hand-written and left as it is:

- `pull-request.yml`: the `preview` job, a matrix entry per stack, in the reviewer-gated
  `preview` environment; the `render` job, per stack and without credentials, `make diff`
  against the base branch and the render's summary (tools/diff.py, tools/summary.py);
- `deploy.yml`: per stack, `preview-<stack>` (environment `preview-main`) then `<stack>`
  (`pulumi up` behind the environment named after the stack): the hubs one after the
  other, then every spoke in parallel after the last hub's `up`;
- `region.yml`: the stack choices, and the `preview`, `up` and `recover` jobs that run the
  commit its `resolve` job checked (`recover`: tools/recover_stack.py behind the region's
  approval, docs/operations.md "Interrupted deploy").

Every job that runs Pulumi has the same steps (`pulumi_steps`): the installs first, then the
short-lived Pulumi token of the job's environment (OIDC, `pulumi/auth-actions`), then
`tools/ci/pulumi.sh`, which opens the job's Pulumi ESC environment for the cluster
credential. Who may obtain which credential: docs/policy.md.

    python -m tools.workflows            # print the stacks' deploy jobs
    python -m tools.workflows --write    # update .github/workflows/ (make workflows)
    python -m tools.workflows --check    # exit 1 if a workflow is out of date (make check)
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Final

from tools.stacks import PROJECT_DIR, StackFileError, deploy_order, hub_stacks

WORKFLOWS_DIR: Final = Path(".github") / "workflows"
BEGIN: Final = "# BEGIN generated: python -m tools.workflows --write (make workflows)"
END: Final = "# END generated"

CHECKOUT: Final = "actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8 # v5.0.0"
SETUP_PYTHON: Final = "actions/setup-python@e797f83bcb11b83ae66e0230d6156d7c80228e7c # v6.0.0"
PULUMI_ACTIONS: Final = "pulumi/actions@8e5e406f4007fca908480587cb9893c07090f58d # v7.0.0"
AUTH_ACTIONS: Final = "pulumi/auth-actions@141415910c3beb54e03b48e9057c204c97b956f2 # v2.1.0"
PULUMI_CLI: Final = "3.272.0"
"""The Pulumi CLI the jobs install: the `pulumi` SDK version in uv.lock (a test keeps both)."""

PREVIEW_TEAM: Final = "meshstack-preview"
"""Pulumi team of every preview job (Stack Read on the region stacks, may open the ESC
environment `meshstack/preview`): docs/policy.md, credentials."""
PREVIEW_CREDENTIALS: Final = "preview"
PREVIEW_MAIN_ENVIRONMENT: Final = "preview-main"
"""GitHub environment of the preview before each `up` (deployment branches: main only)."""
PR_PREVIEW_ENVIRONMENT: Final = "preview"
"""GitHub environment of pull-request previews (required reviewers: the deployers)."""
PREVIEW_TIMEOUT: Final = 15
UP_TIMEOUT: Final = 30
"""Minutes. `pulumi up` took 47-81 s per stack on the e2e control plane and a no-change
preview 11-27 s (tools/e2e/README.md); a real cluster pulls images and waits for readiness, and
the provider gives up on one resource after 10 minutes. 30 minutes is two such waits in a row
plus the installs; a job killed at its timeout leaves the stack locked (docs/operations.md,
"Interrupted deploy")."""


RECOVER_TIMEOUT: Final = 30
"""Minutes of `region.yml`'s `recover` job: a cancel, an export, one lookup per pending create
and one refresh of the whole stack (about as long as a no-change preview, tools/e2e/README.md)."""
NO_OTHER_RUN: Final = (
    "- name: No other deploy run in progress or waiting",
    "  run: python3 tools/ci/no_other_run.py",
    "  env:",
    "    GITHUB_TOKEN: ${{ github.token }}",
)
"""The step before `recover` obtains any credential: `pulumi cancel` would end a live update."""


def deploy_team(stack: str) -> str:
    """Pulumi team of the `up` job of `stack` (Stack Write on that stack only)."""
    return f"meshstack-deploy-{stack}"


def deploy_credentials(stack: str) -> str:
    """ESC environment (`<org>/meshstack/<this>`) holding the deploy kubeconfig of `stack`."""
    return f"deploy-{stack}"


STOP_MARGIN: Final = 8
"""Minutes between `tools/ci/pulumi.sh`'s SIGINT to the Pulumi command and the job's timeout:
the CLI cancels itself gracefully (finishes in-flight operations, writes the state, releases
the lock) instead of being killed by the runner; SIGKILL follows 5 minutes after the SIGINT,
and the installs before it take about 3."""


def pulumi_steps(
    *,
    operation: str,
    stack: str,
    team: str,
    credentials: str,
    timeout: int,
    ref: str | None = None,
    before_token: Sequence[str] = (),
) -> str:
    """The steps of every job that runs Pulumi, in one order: check out (`ref`, default the
    event's commit), Python, uv (hash-pinned), `make install`, the Pulumi CLI, `before_token`
    (step lines), then the environment's short-lived Pulumi token (OIDC; after every install
    step, so none of them sees it), then `tools/ci/pulumi.sh`, stopped `STOP_MARGIN` minutes
    before the job's `timeout`."""
    checkout_with = ([f"    ref: {ref}"] if ref else []) + ["    persist-credentials: false"]
    lines = [
        f"- uses: {CHECKOUT}",
        "  with:",
        *checkout_with,
        f"- uses: {SETUP_PYTHON}",
        "  with:",
        '    python-version: "3.11"',
        "- name: Install uv (every wheel pinned by SHA-256)",
        "  run: python -m pip install --require-hashes --no-deps -r tools/requirements/uv.txt",
        "- name: Install locked dependencies",
        "  run: make install",
        "- name: Install the Pulumi CLI",
        f"  uses: {PULUMI_ACTIONS}",
        "  with:",
        f'    pulumi-version: "{PULUMI_CLI}"',
        *before_token,
        "- name: Pulumi token of this environment's team (OIDC)",
        f"  uses: {AUTH_ACTIONS}",
        "  with:",
        "    organization: ${{ vars.PULUMI_ORG }}",
        "    requested-token-type: urn:pulumi:token-type:access_token:team",
        f"    scope: team:{team}",
        '    token-expiration: "3600"',
        f"- name: pulumi {operation} {stack}",
        "  run: tools/ci/pulumi.sh",
        "  env:",
        f"    OPERATION: {operation}",
        f"    STACK: {stack}",
        f"    CREDENTIALS: {credentials}",
        "    PULUMI_ORG: ${{ vars.PULUMI_ORG }}",
        f'    STOP_AFTER_MINUTES: "{timeout - STOP_MARGIN}"',
    ]
    return "".join(f"{line}\n" for line in lines)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(f"{pad}{line}" if line.strip() else line for line in text.splitlines(True))


def _job(
    job_id: str,
    *,
    name: str,
    needs: str,
    environment: str,
    timeout: int,
    why_oidc: str,
    steps: str,
    extra: str = "",
    permissions: Sequence[str] = (),
) -> str:
    return (
        f"{job_id}:\n"
        f"  name: {name}\n"
        f"  needs: {needs}\n"
        f"{extra}"
        "  runs-on: ubuntu-24.04\n"
        f"  timeout-minutes: {timeout}\n"
        f"  environment: {environment}\n"
        "  permissions:\n"
        "    contents: read\n"
        + "".join(f"    {line}\n" for line in permissions)
        + f"    id-token: write # {why_oidc}\n"
        "  steps:\n"
        f"{_indent(steps, 4)}"
    )


def preview_job(stacks: Sequence[str], _hubs: Collection[str] = ()) -> str:
    """pull-request.yml: the preview of every stack, in the reviewer-gated `preview`
    environment, for pull requests from branches of this repository (a fork's PR gets the
    credential-free checks only)."""
    matrix = (
        "  strategy:\n"
        "    fail-fast: false\n"
        "    matrix:\n"
        f"      stack: [{', '.join(stacks)}]\n"
        "  if: github.event.pull_request.head.repo.full_name == github.repository\n"
    )
    steps = pulumi_steps(
        operation="preview",
        stack="${{ matrix.stack }}",
        team=PREVIEW_TEAM,
        credentials=PREVIEW_CREDENTIALS,
        timeout=PREVIEW_TIMEOUT,
    ) + (
        "- uses: actions/upload-artifact@bbbca2ddaa5d8feaa63e36b76fdaad77386f024f # v7.0.0\n"
        "  if: ${{ !cancelled() }}\n"
        "  with:\n"
        "    name: preview-${{ matrix.stack }}\n"
        "    path: ${{ runner.temp }}/pulumi-preview-${{ matrix.stack }}.md\n"
        "    if-no-files-found: error\n"
        "    retention-days: 7\n"
    )
    return _job(
        "preview",
        name="preview ${{ matrix.stack }}",
        needs="checks",
        environment=PR_PREVIEW_ENVIRONMENT,
        timeout=PREVIEW_TIMEOUT,
        why_oidc="exchanged for the preview team's Pulumi token (pulumi/auth-actions)",
        steps=steps,
        extra=matrix,
    )


RENDER_TIMEOUT: Final = 20
"""Minutes of the `render` job: the installs, Helm built with Go (a few minutes on a runner),
then two offline renders of the stack (about 10 s each on two cores)."""


def render_job(stacks: Sequence[str], _hubs: Collection[str] = ()) -> str:
    """pull-request.yml: per stack, without any credential, `make diff` of the pull request
    (its merge commit) against the base branch it merges into (the merge commit's first
    parent) and the render's summary (`build/<stack>/summary.md`), as an artifact the
    comment job posts next to the previews, and as the job summary."""
    steps = (
        f"- uses: {CHECKOUT}\n"
        "  with:\n"
        "    fetch-depth: 2 # the merge commit and its first parent, the base\n"
        "    persist-credentials: false\n"
        f"- uses: {SETUP_PYTHON}\n"
        "  with:\n"
        '    python-version: "3.11"\n'
        "- name: Install uv (every wheel pinned by SHA-256)\n"
        "  run: python -m pip install --require-hashes --no-deps -r tools/requirements/uv.txt\n"
        "- name: Install locked dependencies and the pinned Helm\n"
        "  run: make install helm\n"
        "- name: Fetch reference data\n"
        "  run: python3 tools/fetch_reference.py\n"
        "  env:\n"
        "    MESHSTACK_REFERENCE_DIR: ${{ runner.temp }}/reference\n"
        "- name: Render ${{ matrix.stack }} at the base and here, diff, summary\n"
        "  env:\n"
        "    STACK: ${{ matrix.stack }}\n"
        "    MESHSTACK_REFERENCE_DIR: ${{ runner.temp }}/reference\n"
        "  run: |\n"
        '    diff="$RUNNER_TEMP/diff-$STACK.txt"\n'
        '    .venv/bin/python -m tools.diff "$STACK" --base HEAD^1 --out "$diff"\n'
        '    report="$RUNNER_TEMP/render-$STACK.md"\n'
        "    {\n"
        '      echo "### $STACK: offline render against the base branch"\n'
        "      echo '```'\n"
        '      cat "$diff"\n'
        "      echo '```'\n"
        '      echo "<details><summary>what $STACK deploys</summary>"\n'
        "      echo\n"
        '      cat "build/$STACK/summary.md"\n'
        '      echo "</details>"\n'
        '    } >"$report"\n'
        '    cat "$report" >>"$GITHUB_STEP_SUMMARY"\n'
        "- uses: actions/upload-artifact@bbbca2ddaa5d8feaa63e36b76fdaad77386f024f # v7.0.0\n"
        "  with:\n"
        "    name: preview-render-${{ matrix.stack }}\n"
        "    path: ${{ runner.temp }}/render-${{ matrix.stack }}.md\n"
        "    if-no-files-found: error\n"
        "    retention-days: 7\n"
    )
    return (
        "render:\n"
        "  name: render diff ${{ matrix.stack }}\n"
        "  strategy:\n"
        "    fail-fast: false\n"
        "    matrix:\n"
        f"      stack: [{', '.join(stacks)}]\n"
        "  runs-on: ubuntu-24.04\n"
        f"  timeout-minutes: {RENDER_TIMEOUT}\n"
        "  permissions:\n"
        "    contents: read\n"
        "  steps:\n"
        f"{_indent(steps, 4)}"
    )


def pull_request_jobs(stacks: Sequence[str], hubs: Collection[str] = ()) -> str:
    """pull-request.yml's generated jobs: the previews, then the credential-free renders."""
    return f"{preview_job(stacks, hubs)}\n{render_job(stacks, hubs)}"


def deploy_jobs(stacks: Sequence[str], hubs: Collection[str]) -> str:
    """deploy.yml: per stack, a preview of the pushed commit, then `up` behind the region's
    environment (its approvers read that preview first). The observability hubs go first, one
    after the other; then every spoke in parallel, each after the last hub's `up` (a spoke
    reads its hub's outputs; spokes do not read each other)."""
    jobs = []
    previous = "checks"
    for stack in stacks:
        needs = previous
        jobs.append(
            _job(
                f"preview-{stack}",
                name=f"preview {stack}",
                needs=needs,
                environment=PREVIEW_MAIN_ENVIRONMENT,
                timeout=PREVIEW_TIMEOUT,
                why_oidc="exchanged for the preview team's Pulumi token (pulumi/auth-actions)",
                steps=pulumi_steps(
                    operation="preview",
                    stack=stack,
                    team=PREVIEW_TEAM,
                    credentials=PREVIEW_CREDENTIALS,
                    timeout=PREVIEW_TIMEOUT,
                ),
            )
        )
        jobs.append(
            _job(
                stack,
                name=f"up {stack}",
                needs=f"preview-{stack}",
                environment=stack,
                timeout=UP_TIMEOUT,
                why_oidc="exchanged for this region's deploy-team Pulumi token",
                steps=pulumi_steps(
                    operation="up",
                    stack=stack,
                    team=deploy_team(stack),
                    credentials=deploy_credentials(stack),
                    timeout=UP_TIMEOUT,
                ),
            )
        )
        if stack in hubs:
            previous = stack
    return "\n".join(jobs)


def stack_choices(stacks: Sequence[str], _hubs: Collection[str] = ()) -> str:
    return "".join(f"- {stack}\n" for stack in stacks)


def region_jobs(_stacks: Sequence[str], _hubs: Collection[str] = ()) -> str:
    """region.yml: the preview of the resolved commit of main, then (operation `up`) `up`
    of that commit behind the chosen stack's environment."""
    sha = "${{ needs.resolve.outputs.sha }}"
    stack = "${{ inputs.stack }}"
    preview = _job(
        "preview",
        name=f"preview {stack} at {sha}",
        needs="resolve",
        environment=PREVIEW_MAIN_ENVIRONMENT,
        timeout=PREVIEW_TIMEOUT,
        why_oidc="exchanged for the preview team's Pulumi token (pulumi/auth-actions)",
        steps=pulumi_steps(
            operation="preview",
            stack=stack,
            team=PREVIEW_TEAM,
            credentials=PREVIEW_CREDENTIALS,
            timeout=PREVIEW_TIMEOUT,
            ref=sha,
        ),
        extra="  if: inputs.operation != 'recover'\n",
    )
    up = _job(
        "up",
        name=f"up {stack} at {sha}",
        needs="[resolve, preview]",
        environment=stack,
        timeout=UP_TIMEOUT,
        why_oidc="exchanged for this region's deploy-team Pulumi token",
        steps=pulumi_steps(
            operation="up",
            stack=stack,
            team="meshstack-deploy-${{ inputs.stack }}",
            credentials="deploy-${{ inputs.stack }}",
            timeout=UP_TIMEOUT,
            ref=sha,
        ),
        extra="  if: inputs.operation == 'up'\n",
    )
    recover = _job(
        "recover",
        name=f"recover {stack} at {sha}",
        needs="resolve",
        environment=stack,
        timeout=RECOVER_TIMEOUT,
        why_oidc="exchanged for this region's deploy-team Pulumi token",
        steps=pulumi_steps(
            operation="recover",
            stack=stack,
            team="meshstack-deploy-${{ inputs.stack }}",
            credentials="deploy-${{ inputs.stack }}",
            timeout=RECOVER_TIMEOUT,
            ref=sha,
            before_token=NO_OTHER_RUN,
        ),
        extra="  if: inputs.operation == 'recover'\n",
        permissions=("actions: read # no_other_run.py lists the deploy workflows' runs",),
    )
    return f"{preview}\n{up}\n{recover}"


BLOCKS: Final[dict[str, tuple[Callable[[Sequence[str], Collection[str]], str], ...]]] = {
    "pull-request.yml": (pull_request_jobs,),
    "deploy.yml": (deploy_jobs,),
    "region.yml": (stack_choices, region_jobs),
}
"""Each workflow file and the functions writing its generated blocks, in file order; each
takes the stacks in deploy order and the observability hubs."""


def splice(text: str, blocks: Sequence[str], *, name: str) -> str:
    """`text` with the lines between each BEGIN marker and the END marker after it replaced
    by the next of `blocks`, indented like that BEGIN marker."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    pairs = list(zip(starts, ends, strict=False))
    ordered = all(s < e for s, e in pairs) and all(
        e < s for (_, e), (s, _) in itertools.pairwise(pairs)
    )
    if len(starts) != len(blocks) or len(ends) != len(blocks) or not ordered:
        raise StackFileError(
            f"{name}: expected {len(blocks)} {BEGIN!r} line(s), each followed by one {END!r} line"
        )
    out: list[str] = []
    previous_end = 0
    for (start, end), block in zip(pairs, blocks, strict=True):
        begin = lines[start]
        indent = begin[: len(begin) - len(begin.lstrip())]
        body = "".join(
            f"{indent}{line}" if line.strip() else line for line in block.splitlines(True)
        )
        out += [*lines[previous_end : start + 1], body]
        previous_end = end
    return "".join(out) + "".join(lines[previous_end:])


def expected_files(project_dir: Path = PROJECT_DIR) -> dict[Path, str]:
    """Every workflow with a generated block, as `--write` would leave it."""
    stacks, hubs = deploy_order(project_dir), hub_stacks(project_dir)
    files = {}
    for name, block in BLOCKS.items():
        path = project_dir / WORKFLOWS_DIR / name
        files[path] = splice(path.read_text(), [b(stacks, hubs) for b in block], name=name)
    return files


def stale_files(project_dir: Path = PROJECT_DIR) -> list[Path]:
    return [path for path, text in expected_files(project_dir).items() if path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update .github/workflows/")
    mode.add_argument("--check", action="store_true", help="exit 1 if a workflow is stale")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR)
    args = parser.parse_args(argv)
    try:
        expected = expected_files(args.project_dir)
    except StackFileError as error:
        print(error, file=sys.stderr)
        return 2
    if args.check:
        stale = [path for path, text in expected.items() if path.read_text() != text]
        for path in stale:
            print(f"{WORKFLOWS_DIR / path.name} differs from the stack files: run `make workflows`")
        return 1 if stale else 0
    if args.write:
        for path, text in expected.items():
            if path.read_text() != text:
                path.write_text(text)
                print(f"wrote {WORKFLOWS_DIR / path.name}")
        return 0
    sys.stdout.write(deploy_jobs(deploy_order(args.project_dir), hub_stacks(args.project_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
