"""The README's configuration reference covers every settings key, at every depth."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel

from components.settings import StackSettings
from tools.render import PROJECT_DIR


def _code_spans() -> str:
    text = (PROJECT_DIR / "README.md").read_text()
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


def test_every_settings_key_is_in_the_readme_reference() -> None:
    spans = _code_spans()
    missing = [
        key
        for key in _setting_keys()
        if not re.search(
            rf"(?<![A-Za-z0-9]){re.escape(key.rsplit('.', 1)[-1])}(?![A-Za-z0-9])", spans
        )
    ]
    assert missing == []
