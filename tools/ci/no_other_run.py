"""Refuse to go on while another run of the deploy workflows is not finished.

`region.yml`'s `recover` job runs this before it obtains any credential: `pulumi cancel` ends
whatever update holds the stack's lock, a live one too, so the recovery runs only when no other
run of `deploy.yml` or `region.yml` is in progress or waiting for anything. With
`concurrency.queue: max` a run waits in the states `queued`, `pending`, `waiting` (an
environment's approval) and `requested`; every one of them, and `in_progress`, counts. The
runbook (docs/operations.md, "Interrupted deploy") says to cancel or reject those runs first.

    python3 tools/ci/no_other_run.py [--workflow deploy.yml --workflow region.yml]

Reads GITHUB_REPOSITORY, GITHUB_RUN_ID, GITHUB_API_URL and GITHUB_TOKEN (the job's token with
`actions: read`). Standard library only: it runs before `make install`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Final

UNFINISHED: Final = ("in_progress", "queued", "pending", "waiting", "requested")
"""Every run state but `completed` (GitHub REST API, "List workflow runs for a workflow")."""
WORKFLOWS: Final = ("deploy.yml", "region.yml")

Fetch = Callable[[str], dict[str, Any]]


def github_fetch(api: str, token: str) -> Fetch:
    def fetch(path: str) -> dict[str, Any]:
        request = urllib.request.Request(api + path)
        request.add_header("Authorization", f"Bearer {token}")
        request.add_header("Accept", "application/vnd.github+json")
        request.add_header("X-GitHub-Api-Version", "2022-11-28")
        with urllib.request.urlopen(request, timeout=30) as response:
            body: dict[str, Any] = json.load(response)
            return body

    return fetch


def other_runs(
    fetch: Fetch, repository: str, run_id: int, workflows: Sequence[str] = WORKFLOWS
) -> list[str]:
    """One line per unfinished run of `workflows` other than `run_id`."""
    found: dict[int, str] = {}
    for workflow in workflows:
        for status in UNFINISHED:
            query = urllib.parse.urlencode({"status": status, "per_page": 100})
            path = f"/repos/{repository}/actions/workflows/{workflow}/runs?{query}"
            for run in fetch(path).get("workflow_runs", []):
                if run["id"] != run_id and run.get("status") != "completed":
                    found[run["id"]] = (
                        f"{workflow} run {run['id']} is {run.get('status', status)}: "
                        f"{run.get('html_url', '')}"
                    )
    return [found[key] for key in sorted(found)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workflow", action="append", dest="workflows")
    args = parser.parse_args(argv)
    env = os.environ
    fetch = github_fetch(env.get("GITHUB_API_URL", "https://api.github.com"), env["GITHUB_TOKEN"])
    runs = other_runs(
        fetch, env["GITHUB_REPOSITORY"], int(env["GITHUB_RUN_ID"]), args.workflows or WORKFLOWS
    )
    for line in runs:
        print(f"::error::{line}")
    if runs:
        print(
            "::error::another deploy run is not finished: cancel or reject the waiting ones, "
            "let a running one end, then recover (docs/operations.md, Interrupted deploy)"
        )
        return 1
    print("no other run of the deploy workflows is in progress or waiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
