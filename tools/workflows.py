"""The per-stack parts of the GitHub workflows, generated from the stack files.

Adding `Pulumi.<stack>.yaml` adds a region everywhere a workflow lists the regions; no
workflow is edited by hand for it. Each block between a `BEGIN generated` line and its
`END generated` line (indented like the YAML around it) is written by this module from
`tools.stacks.deploy_order()` (the observability hub first, then the spokes); the rest of
each workflow is hand-written and left as it is:

- `pull-request.yml`: the preview matrix, one entry per stack;
- `deploy.yml`: one chained `pulumi up` job per stack, each behind the GitHub environment
  named after its stack and waiting for the previous one;
- `region.yml`: the stack choices of the single-region preview/deploy (and rollback).

    python -m tools.workflows            # print the stacks' deploy jobs
    python -m tools.workflows --write    # update .github/workflows/ (make workflows)
    python -m tools.workflows --check    # exit 1 if a workflow is out of date (make check)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from tools.stacks import PROJECT_DIR, StackFileError, deploy_order

WORKFLOWS_DIR: Final = Path(".github") / "workflows"
BEGIN: Final = "# BEGIN generated: python -m tools.workflows --write (make workflows)"
END: Final = "# END generated"

DEPLOY_JOB: Final = """\
{stack}:
  name: up {stack}
  needs: {needs}
  runs-on: ubuntu-24.04
  timeout-minutes: 60
  environment: {stack}
  permissions:
    contents: read
  steps:
    - uses: actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8 # v5.0.0
      with:
        persist-credentials: false
    - uses: actions/setup-python@e797f83bcb11b83ae66e0230d6156d7c80228e7c # v6.0.0
      with:
        python-version: "3.11"
    - uses: astral-sh/setup-uv@85856786d1ce8acfbcc2f13a5f3fbd6b938f9f41 # v7.1.2
      with:
        version: "0.13.8"
    - name: Install locked dependencies
      run: make install
    - uses: pulumi/actions@8e5e406f4007fca908480587cb9893c07090f58d # v7.0.0
      with:
        command: up
        stack-name: ${{{{ vars.PULUMI_ORG }}}}/meshstack/{stack}
        pulumi-version: "3.272.0"
        policyPacks: policy
        policyPackConfigs: policy/config.json
      env:
        PULUMI_ACCESS_TOKEN: ${{{{ secrets.PULUMI_ACCESS_TOKEN }}}}
"""


def preview_matrix(stacks: Sequence[str]) -> str:
    return f"stack: [{', '.join(stacks)}]\n"


def deploy_jobs(stacks: Sequence[str]) -> str:
    jobs = [
        DEPLOY_JOB.format(stack=stack, needs=previous)
        for previous, stack in zip(("checks", *stacks), stacks, strict=False)
    ]
    return "\n".join(jobs)


def stack_choices(stacks: Sequence[str]) -> str:
    return "".join(f"- {stack}\n" for stack in stacks)


BLOCKS: Final[dict[str, Callable[[Sequence[str]], str]]] = {
    "pull-request.yml": preview_matrix,
    "deploy.yml": deploy_jobs,
    "region.yml": stack_choices,
}
"""Each workflow file and the function writing its one generated block."""


def splice(text: str, block: str, *, name: str) -> str:
    """`text` with the lines between its BEGIN and END markers replaced by `block`,
    indented like the BEGIN marker."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise StackFileError(f"{name}: expected one {BEGIN!r} line followed by one {END!r} line")
    begin = lines[starts[0]]
    indent = begin[: len(begin) - len(begin.lstrip())]
    body = "".join(f"{indent}{line}" if line.strip() else line for line in block.splitlines(True))
    return "".join(lines[: starts[0] + 1]) + body + "".join(lines[ends[0] :])


def expected_files(project_dir: Path = PROJECT_DIR) -> dict[Path, str]:
    """Every workflow with a generated block, as `--write` would leave it."""
    stacks = deploy_order(project_dir)
    files = {}
    for name, block in BLOCKS.items():
        path = project_dir / WORKFLOWS_DIR / name
        files[path] = splice(path.read_text(), block(stacks), name=name)
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
    sys.stdout.write(deploy_jobs(deploy_order(args.project_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
