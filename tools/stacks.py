"""The region stacks, discovered from the `Pulumi.<stack>.yaml` files: never listed by hand.

A new region is a new stack file; the Makefile (`STACKS`), the tests, `make bench` and the
generated parts of the GitHub workflows (`tools/workflows.py`) all take the list from here.

- `stack_names()`: every stack file's stack, sorted by name (no file is parsed);
- `hub_stacks()`: the observability hubs;
- `deploy_order()`: observability hubs first (`meshstack:observability` role `hub`, the
  default), then the spokes that read them, each group sorted by name;
- `read_stack_file()`: a stack file's YAML, where a syntax error is one line naming the
  file, line and column (`StackFileError`);
- `settings_error_lines()`: a settings error's lines, each prefixed with the file and the
  line that writes the key (`Pulumi.eu-west-1.yaml:42: meshstack:services[3] (market-data)
  .port = ...`): the program validates what the engine hands it, which has no lines, so
  they are added where the stack file is known (the tests, `make render`, and
  `__main__.py` when `Pulumi.<stack>.yaml` is next to it).

    python -m tools.stacks    # the stacks in deploy order, one per line
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

import yaml

from components.observability.settings import ObservabilitySettings
from components.settings_types import SettingsError

PROJECT_DIR: Final = Path(__file__).resolve().parents[1]
STACK_FILE_GLOB: Final = "Pulumi.*.yaml"
OBSERVABILITY_KEY: Final = "meshstack:observability"


class StackFileError(Exception):
    """A stack (or project) file cannot be read; the message is one line for the user."""


class DuplicateKeyError(yaml.YAMLError):
    """A mapping of the document holds a key twice."""

    def __init__(self, key: Any, first_line: int, mark: yaml.Mark) -> None:
        super().__init__(key)
        self.key, self.first_line, self.mark = key, first_line, mark


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key a mapping already holds.

    YAML requires the keys of a mapping to be unique, but PyYAML keeps the last of two
    equal keys and drops the first silently: a second `meshstack:services:` block would
    replace the first without a word.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: merged by the base constructor
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first_lines:
                    raise DuplicateKeyError(key, first_lines[key], key_node.start_mark)
                first_lines[key] = key_node.start_mark.line + 1
            except TypeError:
                continue  # an unhashable key: the base constructor names it
        return super().construct_mapping(node, deep=deep)


def read_yaml_file(path: Path) -> Any:
    """The YAML document in `path`; a syntax error names the file, line and column, and so
    does a key repeated in one mapping (YAML forbids it; PyYAML would keep the last)."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except DuplicateKeyError as error:
        where = f"{path.name}:{error.mark.line + 1}:{error.mark.column + 1}"
        raise StackFileError(
            f"{where}: key {error.key!r} is repeated (first at line {error.first_line}); a YAML "
            "mapping holds each key once: merge the two into one"
        ) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path.name}:{mark.line + 1}:{mark.column + 1}" if mark else path.name
        problem = str(error.problem)
        if "<block" in problem:
            # PyYAML names its parser's tokens; what the user sees is a misindented line.
            problem = "this line is not indented like the lines around it"
        problem = problem.replace("'<stream end>'", "the end of the file")
        raise StackFileError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:
        raise StackFileError(f"{path.name}: YAML error: {error}") from None


def read_stack_file(path: Path) -> dict[str, Any]:
    """The `config:` mapping of a stack file (empty if it has none)."""
    document = read_yaml_file(path) or {}
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(document, dict) or not isinstance(config, dict | None):
        raise StackFileError(f"{path.name}: must be a mapping with a `config:` mapping of keys")
    return dict(config or {})


KeyPath = tuple[str | int, ...]


def key_lines(path: Path) -> dict[KeyPath, int]:
    """The line (1-based) of every key and list item under `config:` of a stack file, by
    its path: `("meshstack:services", 3, "port")`. Empty if the file does not parse."""
    try:
        root = yaml.compose(path.read_text(), Loader=_UniqueKeyLoader)
    except (OSError, yaml.YAMLError):
        return {}
    lines: dict[KeyPath, int] = {}

    def walk(node: yaml.Node, where: KeyPath) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    lines[(*where, key.value)] = key.start_mark.line + 1
                    walk(value, (*where, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*where, index)] = item.start_mark.line + 1
                walk(item, (*where, index))

    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "config":
                walk(value, ())
    return lines


def settings_error_lines(error: SettingsError, path: Path, namespace: str) -> list[str]:
    """Each line of `error` prefixed with the stack file and the line of its key, or of the
    closest enclosing key the file writes (a missing key: the mapping it belongs in); only
    the file when the file writes none of it (a default)."""
    lines = key_lines(path)
    located = []
    for loc, text in error.issues:
        line = None
        for depth in range(len(loc), 0, -1):
            head, rest = loc[0], loc[1:depth]
            for top in (f"{namespace}:{head}", head):
                line = line or lines.get((top, *rest))
            if line:
                break
        located.append(f"{path.name}:{line}: {text}" if line else f"{path.name}: {text}")
    return located


def invalid_settings_message(lines: list[str]) -> str:
    """What a run that stops on settings errors prints: one mistake on the same line, more
    each on its own."""
    if len(lines) == 1:
        return f"invalid stack settings: {lines[0]}"
    return "\n".join([f"invalid stack settings ({len(lines)} mistakes):", *lines])


def stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    return project_dir / f"Pulumi.{stack}.yaml"


def stack_names(project_dir: Path = PROJECT_DIR) -> tuple[str, ...]:
    """Every stack with a `Pulumi.<stack>.yaml` next to Pulumi.yaml, sorted by name."""
    return tuple(
        sorted(
            path.name.removeprefix("Pulumi.").removesuffix(".yaml")
            for path in project_dir.glob(STACK_FILE_GLOB)
        )
    )


def observability_role(config: dict[str, Any]) -> str:
    """`hub` or `spoke`, as the settings model reads it (its default when unset)."""
    observability = config.get(OBSERVABILITY_KEY)
    role = observability.get("role") if isinstance(observability, dict) else None
    default = ObservabilitySettings.model_fields["role"].default
    return str(role or default)


def stack_roles(project_dir: Path = PROJECT_DIR) -> dict[str, str]:
    """Every stack's observability role (`hub` or `spoke`), by stack name."""
    return {
        stack: observability_role(read_stack_file(stack_file(stack, project_dir)))
        for stack in stack_names(project_dir)
    }


def hub_stacks(project_dir: Path = PROJECT_DIR) -> tuple[str, ...]:
    """The observability hubs, sorted by name: what the spokes' deploys wait for."""
    return tuple(stack for stack, role in stack_roles(project_dir).items() if role == "hub")


def deploy_order(project_dir: Path = PROJECT_DIR) -> tuple[str, ...]:
    """The stacks in the order a deploy runs them: hubs first, then the spokes.

    A spoke reads its hub's outputs with a StackReference, so the hub must be up first;
    spokes do not depend on each other (deploy.yml runs them in parallel) and are sorted by
    name.
    """
    roles = stack_roles(project_dir)
    hubs = [stack for stack, role in roles.items() if role == "hub"]
    return (*hubs, *(stack for stack, role in roles.items() if role != "hub"))


def main() -> int:
    try:
        stacks = deploy_order()
    except StackFileError as error:
        print(error, file=sys.stderr)
        return 2
    print("\n".join(stacks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
