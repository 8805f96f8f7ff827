"""The configuration reference: generated from the settings model, committed current, and
covering every settings key at every depth."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from components.settings import SECRET_KEYS, StackSettings, load_settings
from tools.config_reference import README_BEGIN, REFERENCE_PAGE, main, readme_block, stale_files
from tools.render import PROJECT_DIR


def _code_spans() -> str:
    text = (PROJECT_DIR / REFERENCE_PAGE).read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return " ".join(re.findall(r"`([^`\n]+)`", text))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    found = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for argument in typing.get_args(annotation):
        found += _models_in(argument)
    return found


def _setting_keys() -> list[str]:
    keys: list[str] = []
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel], path: str) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            alias = info.alias or name
            keys.append(f"{path}.{alias}" if path else alias)
            for nested in _models_in(info.annotation):
                walk(nested, f"{path}.{alias}" if path else alias)

    walk(StackSettings, "")
    return keys


def test_walk_reaches_nested_models() -> None:
    keys = _setting_keys()
    assert "services.versions.labels" in keys
    assert len(keys) > 100


def test_every_settings_key_is_in_the_settings_page() -> None:
    spans = _code_spans()
    missing = [
        key
        for key in _setting_keys()
        if not re.search(
            rf"(?<![A-Za-z0-9]){re.escape(key.rsplit('.', 1)[-1])}(?![A-Za-z0-9])", spans
        )
    ]
    assert missing == []


# --- the generated reference (tools/config_reference.py) ---------------------------------


def test_committed_reference_is_what_the_generator_writes() -> None:
    stale = [path.name for path in stale_files()]
    assert stale == [], (
        f"{', '.join(stale)} differ from what the settings model generates: run `make docs` "
        "(descriptions live in the Field(description=...) of components/, not in these files)"
    )


def test_check_mode_fails_on_a_stale_file_and_names_make_docs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs").mkdir()
    for name in (str(REFERENCE_PAGE), "Pulumi.yaml", "docs/stack-settings.schema.json"):
        (tmp_path / name).write_text((PROJECT_DIR / name).read_text())
    page = tmp_path / REFERENCE_PAGE
    page.write_text(page.read_text().replace("| `meshId` |", "| `meshID` |"))
    assert main(["--check", "--project-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out == (
        "docs/settings.md is out of date with the settings model: run `make docs`\n"
    )
    assert main(["--write", "--project-dir", str(tmp_path)]) == 0
    assert main(["--check", "--project-dir", str(tmp_path)]) == 0


def test_the_readme_links_the_settings_page_and_holds_no_reference_of_its_own() -> None:
    """The README leads with what an operator needs; the generated reference is its own page."""
    readme = (PROJECT_DIR / "README.md").read_text()
    assert f"({REFERENCE_PAGE.as_posix()})" in readme
    assert README_BEGIN not in readme


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in readme_block().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_reference_rows_name_key_paths_types_and_defaults() -> None:
    rows = _rows()
    assert rows["region"][:2] == ["DNS label", "required"]
    assert rows["services[].versions"][:1] == ["list of {name, labels, minReplicas}"]
    assert rows["services[].delivery"][:2] == ["`static` \\| `progressive`", "`static`"]
    assert rows["services[].traffic.canary.weights[].subset"][:2] == ["DNS label", "required"]
    assert rows["services[].traffic.timeout"][:2] == ["duration (`250ms`, `1.5s`, `1m`)", "`10s`"]
    assert rows["services[].traffic.subsetPolicies.<name>.outlierDetection.interval"][0] == (
        "duration (`250ms`, `1.5s`, `1m`)"
    )
    assert rows["alerts.scrapeInterval"][0] == "duration (`30s`, `2m`, `1h30m`)"
    assert rows["istiodReplicas"][:2] == ["integer 2\N{EN DASH}20", "`2`"]
    assert rows["services[].jwt"][1] == "none"
    assert rows["kubeconfig"][0] == "secret string"
    for key, (type_name, default, meaning) in rows.items():
        assert type_name and default and meaning, f"{key} has an empty cell"


def test_every_settings_key_has_a_reference_row() -> None:
    rows = {re.sub(r"\[\]|\.<name>", "", key).replace("..", ".") for key in _rows()}
    assert set(_setting_keys()) <= rows


def _project_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    return config


def test_pulumi_yaml_declares_every_top_level_key_or_names_it_structured() -> None:
    text = (PROJECT_DIR / "Pulumi.yaml").read_text()
    declared = {key.split(":", 1)[1] for key in _project_config()}
    commented = set(re.findall(r"^#   meshstack:(\w+)$", text, flags=re.M))
    aliases = {info.alias or name for name, info in StackSettings.model_fields.items()}
    assert declared | commented == aliases | SECRET_KEYS
    assert not declared & commented
    # A declared secret is required in every stack (see the next test), so none is declared.
    assert not declared & SECRET_KEYS


def test_pulumi_yaml_defaults_load_as_the_model_defaults() -> None:
    """The declared defaults, handed to the program as the CLI does (strings, JSON for
    arrays), give exactly the model's defaults: no type or value is lost on the way."""
    raw = {
        key: value["default"] if isinstance(value["default"], str) else json.dumps(value["default"])
        for key, value in _project_config().items()
        if "default" in value
    }
    assert "meshstack:region" not in raw
    assert load_settings({**raw, "meshstack:region": "lab-1"}) == StackSettings(region="lab-1")


def test_every_declared_key_without_a_default_is_set_in_every_stack_file() -> None:
    """The CLI treats a declared project key with neither `default` nor `value` as required:
    `preview`, `up` and `destroy` of a stack without it stop with "Stack '<stack>' is missing
    configuration value" (pkg/workspace/config.go). So such a key is set in every stack file.
    (A declared `secret: true` key cannot be optional: with a `default` the CLI fails its
    "must be encrypted as it's secret" check, so optional secrets are not declared.)"""
    required = {
        key for key, declaration in _project_config().items() if "default" not in declaration
    }
    assert required == {"meshstack:region"}
    for stack_file in sorted(PROJECT_DIR.glob("Pulumi.*.yaml")):
        config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
        assert required <= set(config), f"{stack_file.name} lacks {required - set(config)}"
