"""What a change does to a stack: the object-level difference between two offline renders.

`make diff STACK=<stack> [BASE=<git ref>]` renders the stack twice with `tools.render`: at
BASE (default: the merge base of HEAD with `main`), from a `git archive` of that commit in a
temporary directory, and in the working tree (uncommitted edits included, written to
`build/<stack>/` as `make render` writes it). Both renders use this checkout's virtualenv,
the same chart folders, reference data and pinned Helm, so only the program, the settings and the
stack file differ. It then compares every Kubernetes object of both renders, the program's
(`manifests.yaml`) and the charts' (`charts.yaml`), keyed by apiVersion, kind, namespace
and name, and prints, a few lines per object:

    ~ networking.istio.io/v1 VirtualService revenue/revenue-engine
        spec.http[1].route[0].weight: 80 -> 70
        spec.http[1].route[1].weight: 20 -> 30
    + v1 ConfigMap istio-system/new-config  (chart istiod)
    - policy/v1 PodDisruptionBudget revenue/old  (program)

Field paths index lists by position, except lists whose items all carry a distinct `name`
(containers, ports, volumes, routes), which are matched by it: `containers[name=discovery]`.
A stack file missing at BASE is an empty render (every object added). The comparison
functions are pure and unit-tested (tests/tools/test_diff.py).

    python -m tools.diff us-east-1 [--base <ref>] [--out diff.md]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from tools import charts, fetch_reference
from tools.install_helm import ENV_VAR as HELM_ENV_VAR
from tools.install_helm import binary_path
from tools.stacks import PROJECT_DIR, stack_file, stack_names

DEFAULT_BASE_BRANCH: Final = "main"
MAX_FIELDS_PER_OBJECT: Final = 8
"""Changed fields printed per object; the rest are counted ("… and 3 more fields")."""
MAX_VALUE_CHARS: Final = 80
"""A value longer than this is cut, with `…`, so an object stays a few lines."""

ObjectKey = tuple[str, str, str, str]
"""(apiVersion, kind, namespace, name) of a Kubernetes object."""


@dataclass(frozen=True)
class RenderedObject:
    """One object of a render and where it came from: `program` or `chart <release>`."""

    source: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any


@dataclass
class RenderDiff:
    added: list[tuple[ObjectKey, RenderedObject]] = field(default_factory=list)
    removed: list[tuple[ObjectKey, RenderedObject]] = field(default_factory=list)
    changed: list[tuple[ObjectKey, RenderedObject, list[FieldChange]]] = field(default_factory=list)
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


MISSING: Final = object()
"""A field absent on one side."""


# --- reading renders ------------------------------------------------------------------------


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion", "")),
        str(obj.get("kind", "")),
        str(metadata.get("namespace") or ""),
        str(metadata.get("name") or ""),
    )


def index_objects(
    program: Sequence[Mapping[str, Any]], chart_objects: Sequence[tuple[str, Mapping[str, Any]]]
) -> dict[ObjectKey, RenderedObject]:
    """Every object of a render by its key. An object rendered twice under one key (the
    program and a chart both creating it) keeps both, the second keyed with its source in
    the name, so neither hides the other."""
    indexed: dict[ObjectKey, RenderedObject] = {}
    entries = [("program", obj) for obj in program] + [
        (f"chart {release}", obj) for release, obj in chart_objects
    ]
    for source, obj in entries:
        if not isinstance(obj, Mapping):
            continue
        key = object_key(obj)
        if key in indexed:
            key = (*key[:3], f"{key[3]} ({source})")
        indexed[key] = RenderedObject(source, obj)
    return indexed


def load_render(render_dir: Path) -> dict[ObjectKey, RenderedObject]:
    """The objects of a render directory (`manifests.yaml`, `charts.yaml`); a directory that
    does not exist is an empty render."""
    manifests = render_dir / "manifests.yaml"
    program = list(yaml.safe_load_all(manifests.read_text())) if manifests.is_file() else []
    chart_file = render_dir / "charts.yaml"
    chart_objects = charts.load_charts(chart_file.read_text()) if chart_file.is_file() else []
    return index_objects([o for o in program if o], chart_objects)


# --- comparing --------------------------------------------------------------------------------

_PLAIN_KEY: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _child(path: str, key: str) -> str:
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _named(items: list[Any]) -> dict[str, Any] | None:
    """Items by `name` when every item is a mapping with a distinct string `name`."""
    names = [i.get("name") if isinstance(i, Mapping) else None for i in items]
    if not items or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        return None
    return dict(zip(names, items, strict=True))  # type: ignore[arg-type]


def field_changes(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Every leaf that differs between `old` and `new`, as paths such as
    `spec.http[0].route[1].weight`; a subtree present on one side only is one change."""
    if old == new:
        return []
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        changes: list[FieldChange] = []
        for key in sorted(set(old) | set(new), key=str):
            changes += field_changes(
                old.get(key, MISSING), new.get(key, MISSING), _child(path, str(key))
            )
        return changes
    if isinstance(old, list) and isinstance(new, list):
        old_named, new_named = _named(old), _named(new)
        if old_named is not None and new_named is not None:
            changes = []
            # Names in the new order, then the removed ones: reordering alone is no change.
            for name in [*new_named, *(n for n in old_named if n not in new_named)]:
                changes += field_changes(
                    old_named.get(name, MISSING),
                    new_named.get(name, MISSING),
                    f"{path}[name={name}]",
                )
            if not changes and list(old_named) != list(new_named):
                changes.append(FieldChange(f"{path} (order)", list(old_named), list(new_named)))
            return changes
        changes = []
        for index in range(max(len(old), len(new))):
            changes += field_changes(
                old[index] if index < len(old) else MISSING,
                new[index] if index < len(new) else MISSING,
                f"{path}[{index}]",
            )
        return changes
    return [FieldChange(path, old, new)]


def diff_renders(
    base: Mapping[ObjectKey, RenderedObject], head: Mapping[ObjectKey, RenderedObject]
) -> RenderDiff:
    """Objects added, removed and changed (with their changed fields) from `base` to
    `head`, each list sorted by key."""
    result = RenderDiff()
    for key in sorted(set(base) | set(head)):
        if key not in base:
            result.added.append((key, head[key]))
        elif key not in head:
            result.removed.append((key, base[key]))
        else:
            changes = field_changes(base[key].body, head[key].body)
            if changes:
                result.changed.append((key, head[key], changes))
            else:
                result.unchanged += 1
    return result


# --- formatting -------------------------------------------------------------------------------


def _cut(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_value(value: Any) -> str:
    if value is MISSING:
        return "(absent)"
    if isinstance(value, str):
        return _cut(json.dumps(value))
    return _cut(json.dumps(value, sort_keys=True, separators=(", ", ": ")))


def format_change(change: FieldChange) -> list[str]:
    """One line per change; a multi-line text (a ConfigMap's data, a script) as the count of
    changed lines and the first one removed and added."""
    old, new = change.old, change.new
    if isinstance(old, str) and isinstance(new, str) and ("\n" in old or "\n" in new):
        delta = [
            line
            for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        ]
        removed = [line for line in delta if line.startswith("-")]
        added = [line for line in delta if line.startswith("+")]
        lines = [f"{change.path}: text, {len(removed)} line(s) removed, {len(added)} added"]
        lines += [f"  {_cut(line)}" for line in (removed[:1] + added[:1])]
        return lines
    if old is MISSING:
        return [f"{change.path}: added {format_value(new)}"]
    if new is MISSING:
        return [f"{change.path}: removed (was {format_value(old)})"]
    return [f"{change.path}: {format_value(old)} -> {format_value(new)}"]


def describe_key(key: ObjectKey) -> str:
    api_version, kind, namespace, name = key
    return f"{api_version} {kind} {namespace + '/' if namespace else ''}{name}"


def format_diff(diff: RenderDiff, *, max_fields: int = MAX_FIELDS_PER_OBJECT) -> str:
    """The difference as text: one count line, then `~` changed (with their fields), `+`
    added and `-` removed objects, each with its source."""
    lines = [
        f"{len(diff.changed)} changed, {len(diff.added)} added, {len(diff.removed)} removed, "
        f"{diff.unchanged} unchanged"
    ]
    for key, obj, changes in diff.changed:
        lines.append(f"~ {describe_key(key)}  ({obj.source})")
        shown = [line for change in changes[:max_fields] for line in format_change(change)]
        lines += [f"    {line}" for line in shown]
        if len(changes) > max_fields:
            lines.append(f"    … and {len(changes) - max_fields} more field(s)")
    lines += [f"+ {describe_key(key)}  ({obj.source})" for key, obj in diff.added]
    lines += [f"- {describe_key(key)}  ({obj.source})" for key, obj in diff.removed]
    return "\n".join(lines) + "\n"


# --- rendering a git ref ----------------------------------------------------------------------


class DiffError(Exception):
    """The diff cannot be made; the message is one line for the user."""


def _git(*args: str, cwd: Path = PROJECT_DIR) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DiffError(f"git {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result.stdout.strip()


def resolve_base(ref: str | None, project_dir: Path = PROJECT_DIR) -> str:
    """The commit of `ref`, or of the merge base of HEAD with `main`."""
    if ref:
        return _git("rev-parse", "--verify", f"{ref}^{{commit}}", cwd=project_dir)
    return _git("merge-base", "HEAD", DEFAULT_BASE_BRANCH, cwd=project_dir)


def _render_env() -> dict[str, str]:
    """Both renders read the same chart folders, reference data and pinned Helm."""
    env = dict(os.environ)
    try:
        env[fetch_reference.ENV_VAR] = str(fetch_reference.REFERENCE.resolve().resolve())
    except fetch_reference.DataDirError as error:
        raise DiffError(str(error)) from None
    env[charts.ENV_VAR] = str(charts.charts_dir().resolve())
    env.setdefault(HELM_ENV_VAR, str(binary_path(PROJECT_DIR).resolve()))
    return env


def render(stack: str, project_dir: Path, out_dir: Path) -> None:
    """`python -m tools.render` of `project_dir` (its own program and tools) into `out_dir`,
    with this checkout's interpreter."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "tools.render", stack),
            *("--project-dir", str(project_dir), "--out", str(out_dir)),
        ],
        cwd=project_dir,
        env=_render_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise DiffError(f"render of {stack} in {project_dir.name}: {message}")


def render_at(commit: str, stack: str, work_dir: Path) -> Path:
    """The render of `stack` at `commit` (a `git archive` unpacked in `work_dir`); an empty
    directory when the commit has no such stack file."""
    tree = work_dir / "tree"
    out = work_dir / "render"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit],
        cwd=PROJECT_DIR,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise DiffError(f"git archive {commit}: {archive.stderr.decode().strip()}")
    archive_file = work_dir / "tree.tar"
    archive_file.write_bytes(archive.stdout)
    with tarfile.open(archive_file) as tar:
        tar.extractall(tree, filter="data")
    if not stack_file(stack, tree).is_file():
        out.mkdir()
        return out
    render(stack, tree, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("stack", help="stack name: Pulumi.<stack>.yaml")
    parser.add_argument("--base", default=None, help="git ref (default: merge base with main)")
    parser.add_argument("--out", type=Path, default=None, help="also write the diff here")
    args = parser.parse_args(argv)
    if args.stack not in stack_names():
        known = ", ".join(stack_names())
        print(f"diff: no stack {args.stack!r}; the stacks are: {known}", file=sys.stderr)
        return 2
    try:
        commit = resolve_base(args.base)
        with tempfile.TemporaryDirectory(prefix="meshstack-diff-") as work:
            base_dir = render_at(commit, args.stack, Path(work))
            head_dir = PROJECT_DIR / "build" / args.stack
            render(args.stack, PROJECT_DIR, head_dir)
            diff = diff_renders(load_render(base_dir), load_render(head_dir))
    except DiffError as error:
        print(f"diff {args.stack}: {error}", file=sys.stderr)
        return 2
    label = args.base or f"merge base with {DEFAULT_BASE_BRANCH}"
    text = f"{args.stack}: {label} ({commit[:12]}) -> working tree\n" + format_diff(diff)
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
