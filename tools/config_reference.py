"""The configuration reference, generated from the settings model: one source for the docs.

The pydantic models (`components/settings.py` and the area models it composes) are the only
place a setting is documented: its type, default and `Field(description=...)`. This module
reads `StackSettings.model_json_schema(by_alias=True)` and writes

- the reference tables of `docs/settings.md` (`REFERENCE_PAGE`), between the
  `BEGIN generated` / `END generated` markers;
- Pulumi.yaml's `config:` declarations of the keys Pulumi can type (string, integer,
  boolean, array of scalars) and the comment block naming the structured keys, between
  the same markers (the rest of Pulumi.yaml is left as it is);
- `docs/stack-settings.schema.json`, the stack files' JSON schema for editors
  (`tools/stack_schema.py`).

    python -m tools.config_reference            # print the reference tables
    python -m tools.config_reference --write    # docs/settings.md, Pulumi.yaml, the schema
    python -m tools.config_reference --check    # exit 1 if any is out of date

Models are discovered from the schema (`$defs`), never imported by area. The one piece of
the schema generation that is ours: defaults given by a `default_factory` are written into
the schema (pydantic leaves them out), and a string type checked by a module-level
`AfterValidator` function is named after that function (`_duration` -> "duration"), since
the JSON schema of such a type is a bare `string`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from components.settings import CONFIG_NAMESPACE, SECRET_KEYS, StackSettings
from tools.stack_schema import SCHEMA_PATH, schema_text

PROJECT_DIR: Final = Path(__file__).resolve().parents[1]
BEGIN: Final = "BEGIN generated: python -m tools.config_reference (make docs)"
END: Final = "END generated"
README_BEGIN: Final = f"<!-- {BEGIN} -->"
README_END: Final = f"<!-- {END} -->"
REFERENCE_PAGE: Final = Path("docs") / "settings.md"
"""The settings reference page, relative to the project directory (the README links it)."""
YAML_BEGIN: Final = f"# {BEGIN}"
YAML_END: Final = f"# {END}"

SECRET_KEY_DESCRIPTIONS: Final = {
    "kubeconfig": (
        "kubeconfig contents or path, as a secret; read by `__main__.py` for the Kubernetes "
        "provider and never copied into the settings. Unset: `KUBECONFIG` or `~/.kube/config`. "
        "Set it from standard input (`pulumi config set --secret meshstack:kubeconfig < "
        "kubeconfig`), never on a production stack: whoever may preview a stack may decrypt "
        "it (docs/policy.md, credentials)."
    ),
}
"""Keys in `SECRET_KEYS` are not settings fields (their values must stay Pulumi secrets), so
their one description lives here."""

TYPE_NAMES: Final = {
    "dns label": "DNS label",
    "re2": "RE2 regex",
    "service ref": "`<namespace>/<name>`",
    "secret name": "Secret name",
    "host": "hostname",
    "cluster local host": "hostname or `*.<namespace>.svc.cluster.local`",
    "https url": "https URL",
    "optional https url": "https URL or empty",
    "url": "URL",
    "http path": "HTTP path",
    "absolute dir": "absolute path",
    "retry on": "retry conditions",
    "prom duration": "duration (`30s`, `2m`, `1h30m`)",
    "duration": "duration (`250ms`, `1.5s`, `1m`)",
}
"""Readable names of validator-named string types where the function name is not one."""

PULUMI_TYPES: Final = frozenset({"string", "integer", "boolean"})


class ReferenceSchema(GenerateJsonSchema):
    """The standard schema plus factory defaults and names of validated string types."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return super().get_default_value(schema)

    def function_after_schema(
        self, schema: core_schema.AfterValidatorFunctionSchema
    ) -> JsonSchemaValue:
        json_schema = super().function_after_schema(schema)
        function = schema["function"]["function"]
        qualname = getattr(function, "__qualname__", "")
        if json_schema.get("type") == "string" and qualname.isidentifier():
            name = qualname.strip("_").replace("_", " ")
            json_schema["x-type"] = TYPE_NAMES.get(name, name)
        return json_schema


def settings_schema() -> dict[str, Any]:
    return StackSettings.model_json_schema(by_alias=True, schema_generator=ReferenceSchema)


# --- reading the schema ---------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    meaning: str


class Schema:
    """The settings schema with its `$defs` resolved."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.root = schema
        self.defs: dict[str, Any] = schema.get("$defs", {})

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            target = self.defs[node["$ref"].rsplit("/", 1)[-1]]
            return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        if len(node.get("allOf", ())) == 1:
            rest = {k: v for k, v in node.items() if k != "allOf"}
            return {**self.resolve(node["allOf"][0]), **rest}
        return node

    def is_model(self, node: dict[str, Any]) -> bool:
        return "properties" in self.resolve(node)

    def options(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        """The non-null alternatives of a union (the node itself if it is none)."""
        alternatives = node.get("anyOf") or node.get("oneOf")
        if not alternatives:
            return [node]
        return [self.resolve(o) for o in alternatives if o.get("type") != "null"]

    def nullable(self, node: dict[str, Any]) -> bool:
        alternatives = node.get("anyOf") or node.get("oneOf") or ()
        return any(o.get("type") == "null" for o in alternatives)

    def expandable(self, node: dict[str, Any]) -> bool:
        """Whether the keys below this one get rows of their own."""
        return any(
            suffix is not None
            for option in self.options(node)
            for suffix, _ in self._nested(option)
        )

    def _nested(self, node: dict[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
        node = self.resolve(node)
        if "properties" in node:
            yield ".", node
        elif node.get("type") == "array" and self.is_model(node.get("items", {})):
            yield "[].", self.resolve(node["items"])
        elif isinstance(node.get("additionalProperties"), dict) and self.is_model(
            node["additionalProperties"]
        ):
            yield ".<name>.", self.resolve(node["additionalProperties"])
        else:
            yield None, node

    # --- cells -----------------------------------------------------------------------------

    def type_name(self, node: dict[str, Any], *, in_list: bool = False) -> str:
        node = self.resolve(node)
        options = self.options(node)
        if len(options) > 1 or options[0] is not node:
            return " or ".join(self.type_name(o, in_list=in_list) for o in options)
        if "enum" in node:
            return " \\| ".join(f"`{value}`" for value in node["enum"])
        if "const" in node:
            return f"`{node['const']}`"
        if "properties" in node:
            keys = list(node["properties"])
            if in_list and len(keys) <= 4:
                return "{" + ", ".join(keys) + "}"
            return "objects" if in_list else "object"
        kind = node.get("type")
        if kind == "array":
            items = node.get("items", {})
            return "list of " + (self.type_name(items, in_list=True) if items else "values")
        if kind == "object":
            values = node.get("additionalProperties")
            if isinstance(values, dict) and values:
                return "map of " + self.type_name(values, in_list=True)
            return "map"
        if kind in ("integer", "number"):
            return f"{kind}{_bounds(node)}"
        if kind == "string":
            return str(node.get("x-type", "string"))
        return str(kind or "any")

    def default(self, node: dict[str, Any], *, required: bool) -> str:
        if "default" not in node:
            return "required" if required else "—"
        value = node["default"]
        if value is None:
            return "none"
        if isinstance(value, dict) and value and self._defaults_below(node, value):
            return "as below"
        if isinstance(value, str):
            return f"`{value}`" if value else '`""`'
        return f"`{json.dumps(_plain(value), separators=(', ', ': '), ensure_ascii=False)}`"

    def _defaults_below(self, node: dict[str, Any], value: dict[str, Any]) -> bool:
        """Whether an object default is spelled out by the rows of its keys: every key below
        has a default of its own. (The object default may hold them normalized, `60s` for a
        `1m` default, which is why values are not compared.)"""
        models = [m for o in self.options(node) for s, m in self._nested(o) if s == "."]
        return bool(models) and all(
            "default" in sub and key in value for key, sub in models[0]["properties"].items()
        )

    # --- rows ------------------------------------------------------------------------------

    def rows(self, key: str, node: dict[str, Any], *, required: bool) -> Iterator[Row]:
        resolved = self.resolve(node)
        has_null_default = "default" in node and node["default"] is None
        type_name = self.type_name(node)
        if self.nullable(node) and not has_null_default:
            type_name += " or `null`"
        meaning = node.get("description") or resolved.get("description", "")
        yield Row(key, type_name, self.default(node, required=required), meaning)
        seen: set[str] = set()
        for option in self.options(node):
            for suffix, model in self._nested(option):
                if suffix is None or model.get("title", "") in seen:
                    continue
                seen.add(model.get("title", ""))
                needed = set(model.get("required", ()))
                for child, sub in model["properties"].items():
                    yield from self.rows(f"{key}{suffix}{child}", sub, required=child in needed)


def _bounds(node: dict[str, Any]) -> str:
    low, high = node.get("minimum"), node.get("maximum")
    low_x, high_x = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if low is not None and high is not None:
        return f" {_number(low)}\N{EN DASH}{_number(high)}"
    parts = []
    if low is not None:
        parts.append(f"≥ {_number(low)}")
    if low_x is not None:
        parts.append(f"> {_number(low_x)}")
    if high is not None:
        parts.append(f"≤ {_number(high)}")
    if high_x is not None:
        parts.append(f"< {_number(high_x)}")
    return " " + ", ".join(parts) if parts else ""


def _plain(value: Any) -> Any:
    """`value` with whole floats as integers (`100.0` is written `100`)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _cell(text: str) -> str:
    """One table cell: one line, every `|` escaped (also inside code spans, as GFM needs)."""
    text = " ".join(text.split())
    return re.sub(r"(?<!\\)\|", r"\\|", text)


# --- README ---------------------------------------------------------------------------------


def _table(rows: list[Row]) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [
        f"| `{r.key}` | {_cell(r.type)} | {_cell(r.default)} | {_cell(r.meaning)} |" for r in rows
    ]
    return lines


def readme_block(schema: dict[str, Any] | None = None) -> str:
    """The README's reference tables: the plain top-level keys, then one table per
    structured top-level key (an object or a list of objects), in the model's order."""
    tree = Schema(schema or settings_schema())
    required = set(tree.root.get("required", ()))
    plain: list[Row] = []
    sections: list[tuple[str, list[Row]]] = []
    for key, node in tree.root["properties"].items():
        rows = list(tree.rows(key, node, required=key in required))
        if tree.expandable(node):
            sections.append((key, rows))
        else:
            plain.append(rows[0])
    for key in sorted(SECRET_KEYS):
        plain.append(Row(key, "secret string", "none", SECRET_KEY_DESCRIPTIONS[key]))
    lines = [README_BEGIN, "", "### Top-level keys", "", *_table(plain)]
    for key, rows in sections:
        lines += ["", f"### `{CONFIG_NAMESPACE}:{key}`", "", *_table(rows)]
    lines += ["", README_END]
    return "\n".join(lines) + "\n"


# --- Pulumi.yaml ----------------------------------------------------------------------------


def _declaration(tree: Schema, node: dict[str, Any]) -> dict[str, Any] | None:
    """Pulumi's declaration of a top-level key, or None if Pulumi cannot type it."""
    node = tree.resolve(node)
    kind = node.get("type")
    declaration: dict[str, Any] = {}
    if kind in PULUMI_TYPES:
        declaration["type"] = kind
    elif kind == "array" and tree.resolve(node.get("items", {})).get("type") in PULUMI_TYPES:
        declaration["type"] = "array"
        declaration["items"] = {"type": tree.resolve(node["items"])["type"]}
    else:
        return None
    if "default" in node:
        declaration["default"] = node["default"]
    declaration["description"] = " ".join(node.get("description", "").split())
    return declaration


class _Dumper(yaml.SafeDumper):
    """Writes long strings (the descriptions) folded, so they read as prose."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = ">" if len(value) > 60 and " " in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def pulumi_block(schema: dict[str, Any] | None = None) -> str:
    """Pulumi.yaml's generated part: comments naming the structured keys, then `config:`."""
    tree = Schema(schema or settings_schema())
    config: dict[str, Any] = {}
    structured: list[tuple[str, str]] = []
    for key, node in tree.root["properties"].items():
        declaration = _declaration(tree, node)
        if declaration is None:
            structured.append((key, " ".join(node.get("description", "").split())))
        else:
            config[f"{CONFIG_NAMESPACE}:{key}"] = declaration
    lines = [
        YAML_BEGIN,
        "# Pulumi can declare only string, integer, boolean and array-of-scalar keys; the",
        "# structured keys below are typed by the settings model (components/settings.py) and",
        "# set in the stack files. docs/settings.md has every key; edit the Field descriptions,",
        "# not this.",
        "#",
        "# Structured keys:",
    ]
    for key, description in structured:
        lines.append(f"#   {CONFIG_NAMESPACE}:{key}")
        lines += [f"#       {line}" for line in textwrap.wrap(description, width=84)]
    # A declared `secret: true` key is required in every stack: the CLI stops with "missing
    # configuration value" without one, and a `default` fails its "must be encrypted" check
    # (pkg/workspace/config.go). Optional secrets are therefore named here, not declared.
    lines += ["#", "# Optional secret keys (set with `pulumi config set --secret`):"]
    for key in sorted(SECRET_KEYS):
        lines.append(f"#   {CONFIG_NAMESPACE}:{key}")
        lines += [
            f"#       {line}" for line in textwrap.wrap(SECRET_KEY_DESCRIPTIONS[key], width=84)
        ]
    text = yaml.dump(
        {"config": config}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=88
    )
    return "\n".join(lines) + "\n" + text + YAML_END + "\n"


# --- splicing -------------------------------------------------------------------------------


def splice(text: str, begin: str, end: str, block: str, *, name: str) -> str:
    """`text` with the lines from `begin` to `end` (markers included) replaced by `block`."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == begin]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\n") == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise SystemExit(f"{name}: expected one {begin!r} line followed by one {end!r} line")
    return "".join(lines[: starts[0]]) + block + "".join(lines[ends[0] + 1 :])


def expected_files(project_dir: Path = PROJECT_DIR) -> dict[Path, str]:
    """Every generated file as the generator would write it."""
    schema = settings_schema()
    readme, pulumi = project_dir / REFERENCE_PAGE, project_dir / "Pulumi.yaml"
    return {
        project_dir / SCHEMA_PATH: schema_text(schema),
        readme: splice(
            readme.read_text(),
            README_BEGIN,
            README_END,
            readme_block(schema),
            name=str(REFERENCE_PAGE),
        ),
        pulumi: splice(
            pulumi.read_text(), YAML_BEGIN, YAML_END, pulumi_block(schema), name="Pulumi.yaml"
        ),
    }


def stale_files(project_dir: Path = PROJECT_DIR) -> list[Path]:
    return [
        path
        for path, text in expected_files(project_dir).items()
        if not path.is_file() or path.read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--write",
        action="store_true",
        help="update docs/settings.md, Pulumi.yaml and the schema",
    )
    mode.add_argument("--check", action="store_true", help="exit 1 if they are out of date")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR)
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.project_dir)
        for path in stale:
            print(
                f"{path.relative_to(args.project_dir)} is out of date with the settings model: "
                "run `make docs`"
            )
        return 1 if stale else 0
    if args.write:
        for path, text in expected_files(args.project_dir).items():
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)
                print(f"wrote {path.relative_to(args.project_dir)}")
        return 0
    sys.stdout.write(readme_block())
    return 0


if __name__ == "__main__":
    sys.exit(main())
