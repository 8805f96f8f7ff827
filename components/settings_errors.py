"""The lines a settings validation error becomes: one per mistake, in the stack file's words.

`load_settings` (components/settings.py) turns pydantic's `ValidationError` into a
`SettingsError` whose `issues` are `validation_issues`: each the key path of the mistake
(for the stack file's line, `tools/stacks.py`) and one line naming the key, the value and
what is allowed. Kept apart from the models' building blocks (`settings_types`) because
only the edge reads it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from types import NoneType, UnionType
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from components.settings_types import RuleViolationError

Loc = tuple[int | str, ...]

# pydantic error types whose message names a Python type ("a valid tuple"); the message
# says instead what the stack file must hold there, from the model ("a list of {name, …}").
_TYPE_ERRORS: Final = frozenset(
    {"tuple_type", "list_type", "set_type", "frozen_set_type", "dict_type", "mapping_type"}
    | {"model_type", "model_attributes_type", "bool_type", "bool_parsing", "int_type"}
    | {"int_parsing", "int_from_float", "float_type", "float_parsing", "string_type"}
)
_SCALARS: Final = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
_SCALARS_PLURAL: Final = {bool: "true/false values", int: "whole numbers", float: "numbers"}


def _format_loc(loc: Loc, data: Mapping[str, Any] | None = None) -> str:
    """`services[3] (market-data).port`: indexes in brackets, a service by its name too."""
    path = ""
    for depth, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
            if depth == 1 and loc[0] == "services":
                name = _service_name(data, part)
                path += f" ({name})" if name else ""
        else:
            path += f".{part}" if path else str(part)
    return path


def _service_name(data: Mapping[str, Any] | None, index: int) -> str | None:
    """The name the stack file gives `services[index]`, if it writes one."""
    services = (data or {}).get("services")
    if not isinstance(services, list) or not 0 <= index < len(services):
        return None
    service = services[index]
    name = service.get("name") if isinstance(service, dict) else None
    return name if isinstance(name, str) and name else None


def _format_value(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_message(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    msg = msg.replace("Input should be", "must be").replace("String should", "must")
    msg = msg.replace("List should", "must").replace("Tuple should", "must")
    return msg.replace("Dictionary should", "must").replace(" after validation", "")


def _members(annotation: Any) -> list[Any]:
    """The types a value may have: `Annotated` and `None` stripped, unions split."""
    if get_origin(annotation) is Annotated:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return [m for arg in get_args(annotation) if arg is not NoneType for m in _members(arg)]
    return [annotation]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """The model's keys as a stack file spells them, with their annotations."""
    return {(info.alias or name): info.annotation for name, info in model.model_fields.items()}


def _annotation_at(root: type[BaseModel], loc: Loc) -> Any:
    """The annotation of the setting at `loc` (aliases, indexes), or None if unknown."""
    annotation: Any = root
    for part in loc:
        found = None
        for member in _members(annotation):
            origin, args = get_origin(member), get_args(member)
            if isinstance(part, int) and origin in (tuple, list):
                found = args[0]
            elif isinstance(part, str) and origin is dict:
                found = args[1]
            elif isinstance(part, str) and member in _models(member):
                found = _keys(member).get(part, found)
        if found is None:
            return None
        annotation = found
    return annotation


def _describe(annotation: Any, *, plural: bool = False) -> str:
    """What a stack file holds for this annotation, in plain words."""
    words = []
    for member in _members(annotation):
        origin, args = get_origin(member), get_args(member)
        if member in _models(member):
            keys = list(_keys(member))
            shown = ", ".join(keys[:5]) + (", …" if len(keys) > 5 else "")
            words.append(f"{{{shown}}}" if plural else f"a mapping {{{shown}}}")
        elif origin in (tuple, list):
            words.append(f"{'lists' if plural else 'a list'} of {_describe(args[0], plural=True)}")
        elif origin is dict:
            values = _describe(args[1], plural=True)
            words.append(f"{'mappings' if plural else 'a mapping'} of names to {values}")
        elif origin is Literal:
            words.append("one of " + ", ".join(json.dumps(a) for a in args))
        elif member in _SCALARS:
            words.append(_SCALARS_PLURAL.get(member, "strings") if plural else _SCALARS[member])
        else:
            words.append(getattr(member, "__name__", str(member)))
    return " or ".join(words)


def _closest_key(root: type[BaseModel], loc: Loc) -> str | None:
    """The valid key an unknown key at `loc` most likely meant: a close spelling at the same
    level, or the same key one level down (`telemetry.samplingPercentage`)."""
    parents = _models(_annotation_at(root, loc[:-1]))
    keys = {key: annotation for model in parents for key, annotation in _keys(model).items()}
    typed = str(loc[-1])
    by_lower = {key.lower(): key for key in keys}
    close = difflib.get_close_matches(typed.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return by_lower[close[0]]
    nested = [f"{k}.{typed}" for k, a in keys.items() for m in _models(a) if typed in _keys(m)]
    return nested[0] if len(nested) == 1 else None


def _is_written(data: Mapping[str, Any], loc: Loc) -> bool:
    """Whether the stack file sets the value at `loc` (else it comes from a default)."""
    node: Any = data
    for part in loc:
        in_list = isinstance(part, int) and isinstance(node, list) and part < len(node)
        if not (in_list or (isinstance(node, dict) and part in node)):
            return False
        node = node[part]
    return True


def validation_issues(
    error: ValidationError,
    root: type[BaseModel],
    namespace: str,
    data: Mapping[str, Any] | None = None,
) -> list[tuple[Loc, str]]:
    """Every mistake of a validation error of `root`, as `(key path, line)`; the line is
    `<namespace>:<key path> = <value>: <what is allowed>`.

    Unknown keys come first, each with the valid key it most likely meant (which is then
    missing too: the same mistake, not another one); a value the stack file (`data`) does
    not set is marked `default`; types are named as a stack file writes them ("a list of
    {name, labels}"), not as Python or pydantic call them; a service is named by its name
    as well as its index. Each cross-field rule of a model reports its first broken rule.
    """
    errors = error.errors(include_url=False)
    ordered = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")
    explained: set[Loc] = set()
    issues: list[tuple[Loc, str]] = []
    for found in ordered:
        if tuple(found["loc"]) in explained or _follows_from_items(found, errors):
            continue
        loc, line, meant = _issue(found, root, namespace, data)
        if meant:
            explained.add((*found["loc"][:-1], *meant.split(".")))
        if all(line != known for _, known in issues):
            issues.append((loc, line))
    return issues


def _follows_from_items(found: Any, errors: list[Any]) -> bool:
    """A list too short only because an item of it failed (pydantic counts the valid ones):
    the item's error is the mistake."""
    loc = tuple(found["loc"])
    return found["type"] == "too_short" and any(
        tuple(e["loc"])[: len(loc)] == loc and len(e["loc"]) > len(loc) for e in errors
    )


def _issue(
    found: Any, root: type[BaseModel], namespace: str, data: Mapping[str, Any] | None
) -> tuple[Loc, str, str | None]:
    """One error's key path, line, and for an unknown key the key it most likely meant."""
    loc = tuple(p for p in found["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    cause = found.get("ctx", {}).get("error")
    written = True
    if isinstance(cause, RuleViolationError):
        loc, found = loc + cause.path, {**found, "input": cause.value, "msg": cause.message}
        written = data is None or _is_written(data, loc)
    path = f"{namespace}:{_format_loc(loc, data)}" if loc else namespace
    message = _format_message(found["msg"])
    annotation = _annotation_at(root, loc) if found["type"] in _TYPE_ERRORS else None
    if annotation is not None:
        message = f"must be {_describe(annotation)}"
    meant = None
    if found["type"] == "missing":
        line = f"{path} is required but not set"
    elif found["type"] == "extra_forbidden":
        meant = _closest_key(root, loc)
        hint = (
            f"; did you mean `{meant}`?"
            if meant
            else " (check the spelling; see README config reference)"
        )
        line = f"{path} is not a known setting{hint}"
    elif written:
        line = f"{path} = {_format_value(found['input'])}: {message}"
    elif found["input"] in (None, "", [], (), {}):
        line = f"{path} is not set: {message}"
    else:
        line = f"{path} = default {_format_value(found['input'])}: {message}"
    return loc, line, meant
