"""Shared fixtures: offline renders of the region stacks and a mock-runtime harness."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

from components.run_context import OFFLINE_ORGANIZATION, OFFLINE_RUNBOOK_BASE_URL, RunContext
from components.settings import CONFIG_NAMESPACE, SettingsError, StackSettings, load_settings
from tools.fetch_reference import REFERENCE, DataDirError
from tools.mesh_rules import policy_conflicts
from tools.render import PROJECT_DIR, Render, load_stack_config, render_stack, run_program
from tools.stacks import (
    StackFileError,
    deploy_order,
    read_stack_file,
    settings_error_lines,
    stack_file,
    stack_names,
)

_BROKEN_STACK_FILE: StackFileError | None = None
try:
    STACKS = deploy_order()
    """Every Pulumi.<stack>.yaml, hub first: the tests cover whatever stacks exist."""
except StackFileError as broken:
    STACKS, _BROKEN_STACK_FILE = stack_names(), broken


FIXTURE_DIR = Path(__file__).parent / "fixtures"
"""Fixture stacks: stack files of this project kept out of stack discovery. Tests pin their
values literally (a production stack file is only held to invariants) and between them they
exercise every settings option."""
FIXTURES = deploy_order(FIXTURE_DIR)
"""The fixture stacks, hubs first: fixture-hub, two-revisions (a control-plane upgrade
halfway), then the spokes fixture-small-spoke and fixture-spoke."""


def stack_file_errors(stacks: Sequence[str], stack_dir: Path | None = None) -> list[str]:
    """Every settings error of each stack file, one line each, as `pulumi preview` prints it,
    prefixed with the file and the line of the key: what a reviewer must see instead of
    test failures."""
    errors = []
    for stack in stacks:
        try:
            load_settings(load_stack_config(stack, stack_dir=stack_dir)[0])
        except SettingsError as error:
            path = stack_file(stack, stack_dir or PROJECT_DIR)
            errors += settings_error_lines(error, path, CONFIG_NAMESPACE)
    return errors


def pytest_sessionstart(session: pytest.Session) -> None:
    """A broken stack file, settings a stack file gets wrong, a rule between stack files
    (`tools.mesh_rules`), or missing reference data is one line each, and nothing else
    runs: every test would otherwise fail on the same cause."""
    if _BROKEN_STACK_FILE is not None:
        pytest.exit(str(_BROKEN_STACK_FILE), returncode=2)
    errors = stack_file_errors(STACKS)
    if errors:
        pytest.exit("\n".join(errors), returncode=2)
    # Rules between the regions, which no single stack's settings can check.
    conflicts = policy_conflicts({stack: stack_settings(stack) for stack in STACKS})
    if conflicts:
        pytest.exit("\n".join(conflicts), returncode=2)
    try:
        REFERENCE.resolve()
    except DataDirError as error:
        pytest.exit(str(error), returncode=2)


PROMTOOL_HELP = (
    "promtool is required by the alert tests and is not on PATH: install Debian's "
    "`prometheus` package (apt-get install prometheus), as CI does"
)


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool, which checks and unit-tests the alert rules and dashboard queries."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(PROMTOOL_HELP)
    return path


@pytest.fixture(scope="session")
def stack_renders() -> dict[str, Render]:
    """Each region stack rendered once per test session."""
    return {stack: render_stack(stack) for stack in STACKS}


RUN_CONTEXT = RunContext(
    organization=OFFLINE_ORGANIZATION,
    project="meshstack",
    runbook_base_url=OFFLINE_RUNBOOK_BASE_URL,
)
"""The run context of an offline render, for components built directly in tests."""


def stack_config(stack: str) -> dict[str, Any]:
    """The `config:` of `Pulumi.<stack>.yaml`, as written (for invariants over every stack)."""
    return read_stack_file(stack_file(stack))


@pytest.fixture(scope="session")
def fixture_renders() -> dict[str, Render]:
    """Each fixture stack rendered once per test session, as `make render` would."""
    return {stack: render_stack(stack, stack_dir=FIXTURE_DIR) for stack in FIXTURES}


@pytest.fixture(scope="session")
def every_render(
    stack_renders: dict[str, Render], fixture_renders: dict[str, Render]
) -> dict[str, Render]:
    """Production and fixture renders: invariants hold on both, and the fixtures make sure
    an invariant checks something whatever the production stack files hold."""
    return {**stack_renders, **fixture_renders}


def stack_settings(stack: str) -> StackSettings:
    """The settings of a production or fixture stack, as its render was built from."""
    config, _ = load_stack_config(stack, stack_dir=FIXTURE_DIR if stack in FIXTURES else None)
    return load_settings(config)


def fixture_config(stack: str) -> dict[str, Any]:
    """The `config:` of fixture `tests/fixtures/Pulumi.<stack>.yaml`, as written."""
    return read_stack_file(stack_file(stack, FIXTURE_DIR))


def make_settings(**overrides: Any) -> StackSettings:
    """Settings as a stack file would give them: camelCase keys, JSON values."""
    import json

    raw = {"meshstack:region": "test-region"}
    for key, value in overrides.items():
        raw[f"meshstack:{key}"] = value if isinstance(value, str) else json.dumps(value)
    return load_settings(raw)


def settings_error(**overrides: Any) -> str:
    """The one-line message a settings error gives for these camelCase overrides."""
    with pytest.raises(SettingsError) as caught:
        make_settings(**overrides)
    message = str(caught.value)
    assert message.splitlines() == caught.value.lines, "each mistake is one line"
    return message


def run_with_provider(
    build: Callable[[pulumi.ResourceOptions], object],
    config: Mapping[str, str] | None = None,
) -> Render:
    """Run `build(opts)` under the mock runtime, with a provider like `__main__.py`'s."""

    def program() -> None:
        provider = k8s.Provider("test-kubernetes")
        build(pulumi.ResourceOptions(providers=[provider]))

    return run_program("test", dict(config or {}), program=program)


def by_name(render: Render) -> dict[str, Any]:
    """Registrations keyed by Pulumi name."""
    return {r.name: r for r in render.registrations}


def waits_for(render: Render, urn: str) -> set[str]:
    """URNs a resource waits for before it is created: its dependencies, transitively."""
    dependencies = {r.urn: r.dependencies for r in render.registrations}
    seen: set[str] = set()
    todo = list(dependencies.get(urn, []))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(dependencies.get(current, []))
    return seen


def default_istiod(render: Render) -> Any:
    """The registration of the istiod chart the `default` tag points at (the stack's
    `istioRevisions` output: `default` is the unrevisioned istiod, release `istiod`)."""
    revisions = render.outputs["istioRevisions"]
    (name,) = [n for n, r in revisions.items() if "default" in r["tags"]]
    release = "istiod" if name == "default" else f"istiod-{name}"
    (istiod,) = [
        r
        for r in render.registrations
        if r.type == "kubernetes:helm.sh/v4:Chart" and r.inputs.get("name") == release
    ]
    return istiod
