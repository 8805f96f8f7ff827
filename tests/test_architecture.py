"""The layout of components/: one package per area, small modules, no import cycles.

The layering itself (which package may import which) is import-linter's contract in
pyproject.toml, run by `make check`; these tests keep the rest of the layout true.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tools.render import PROJECT_DIR

COMPONENTS = PROJECT_DIR / "components"
AREAS = ("istio", "traffic", "observability", "alerts", "ratelimit", "security", "guardrails")
MAX_TOP_LEVEL_MODULES = 12
MAX_MODULE_LINES = 600


def _modules() -> list[Path]:
    return sorted(COMPONENTS.rglob("*.py"))


def test_components_has_a_package_per_area_and_few_shared_modules() -> None:
    packages = sorted(p.parent.name for p in COMPONENTS.glob("*/__init__.py"))
    assert packages == sorted(AREAS)
    top_level = sorted(p.name for p in COMPONENTS.glob("*.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, top_level


@pytest.mark.parametrize("module", _modules(), ids=lambda p: str(p.relative_to(PROJECT_DIR)))
def test_every_module_is_small_and_says_what_it_is_for(module: Path) -> None:
    source = module.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    assert ast.get_docstring(ast.parse(source)), "a module docstring says what it is for"


@pytest.mark.parametrize("area", AREAS)
def test_every_area_package_exports_its_public_names(area: str) -> None:
    tree = ast.parse((COMPONENTS / area / "__init__.py").read_text())
    exported = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    ]
    assert exported, f"components/{area}/__init__.py defines __all__"


@pytest.mark.parametrize(
    "module", ["components.settings", "components.region", *(f"components.{a}" for a in AREAS)]
)
def test_each_package_imports_first_in_a_fresh_interpreter(module: str) -> None:
    # A runtime import cycle only shows when its first module is imported first; a fresh
    # interpreter per entry point finds the cycle whichever way it runs.
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.splitlines()[-1:]
