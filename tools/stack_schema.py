"""The JSON schema of a stack file, generated from the settings model, for editors.

`docs/stack-settings.schema.json` is `StackSettings`' schema (the one the configuration
reference is generated from, `tools.config_reference.settings_schema`) wrapped as a Pulumi
stack file sees it: a `config:` mapping whose `meshstack:<key>` entries are the settings,
any key of another namespace (`pulumi:`, `kubernetes:`), and `meshstack:kubeconfig` only as
a Pulumi secret (`{secure: ...}`). An unknown `meshstack:` key is refused, as the program
refuses it. Each stack file names it on its first line for the YAML language server:

    # yaml-language-server: $schema=docs/stack-settings.schema.json

The schema says what JSON Schema can: keys, types, enums, bounds, patterns. The rules the
program checks in code (a weight sum, a tier that exists) still come from `make test` and
`pulumi preview`. `make docs` writes it (`tools.config_reference.expected_files`); a test
compares the checked-in file with this output and validates every stack file against it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from components.settings import CONFIG_NAMESPACE, SECRET_KEYS

SCHEMA_PATH: Final = Path("docs") / "stack-settings.schema.json"
"""Where the schema is checked in, relative to the project directory."""
SCHEMA_COMMENT: Final = "# yaml-language-server: $schema="
"""The first line of a stack file names the schema with this, then its relative path."""

_SECURE: Final = {
    "type": "object",
    "properties": {"secure": {"type": "string"}},
    "required": ["secure"],
    "additionalProperties": False,
    "description": "A Pulumi secret (`pulumi config set --secret`).",
}


def stack_file_schema(settings_schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of a `Pulumi.<stack>.yaml` from the settings' JSON schema."""
    settings = {
        f"{CONFIG_NAMESPACE}:{key}": node
        for key, node in settings_schema.get("properties", {}).items()
    }
    settings |= {f"{CONFIG_NAMESPACE}:{key}": _SECURE for key in sorted(SECRET_KEYS)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{CONFIG_NAMESPACE} stack file (Pulumi.<stack>.yaml)",
        "description": (
            "Generated from the settings model by `make docs` (tools/stack_schema.py); do not edit."
        ),
        "type": "object",
        "properties": {
            "config": {
                "type": "object",
                "properties": settings,
                "required": [
                    f"{CONFIG_NAMESPACE}:{key}" for key in settings_schema.get("required", [])
                ],
                # Other namespaces' keys are theirs; an unknown key of ours is a typo.
                "patternProperties": {f"^(?!{CONFIG_NAMESPACE}:)": {}},
                "additionalProperties": False,
            }
        },
        "$defs": settings_schema.get("$defs", {}),
    }


def schema_text(settings_schema: dict[str, Any]) -> str:
    """The checked-in file's text: sorted keys, two-space indent, a final newline."""
    return json.dumps(stack_file_schema(settings_schema), indent=2, sort_keys=True) + "\n"


def schema_comment(stack_file: Path, project_dir: Path) -> str:
    """The first line a stack file needs: the schema's path relative to the stack file."""
    relative = Path(
        *[".."] * len(stack_file.parent.resolve().relative_to(project_dir.resolve()).parts),
        SCHEMA_PATH,
    )
    return f"{SCHEMA_COMMENT}{relative.as_posix()}"
