"""tools.diff: object-level differences between two renders, a few lines per object."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import FIXTURE_DIR
from tools.diff import (
    MISSING,
    FieldChange,
    RenderedObject,
    diff_renders,
    field_changes,
    format_change,
    format_diff,
    index_objects,
)
from tools.render import Render, render_stack

Obj = dict[str, Any]


def virtual_service(weights: tuple[int, int], name: str = "checkout") -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "http": [
                {
                    "name": "default",
                    "route": [
                        {"destination": {"host": name, "subset": "v1"}, "weight": weights[0]},
                        {"destination": {"host": name, "subset": "v2"}, "weight": weights[1]},
                    ],
                }
            ]
        },
    }


def test_a_weight_change_is_one_changed_object_with_its_weight_fields() -> None:
    base = index_objects([virtual_service((90, 10)), virtual_service((50, 50), "other")], [])
    head = index_objects([virtual_service((80, 20)), virtual_service((50, 50), "other")], [])
    diff = diff_renders(base, head)
    assert not diff.added and not diff.removed and diff.unchanged == 1
    assert [(key[1], key[3]) for key, _, _ in diff.changed] == [("VirtualService", "checkout")]
    assert format_diff(diff).splitlines() == [
        "1 changed, 0 added, 0 removed, 1 unchanged",
        "~ networking.istio.io/v1 VirtualService shop/checkout  (program)",
        "    spec.http[name=default].route[0].weight: 90 -> 80",
        "    spec.http[name=default].route[1].weight: 10 -> 20",
    ]


def test_added_and_removed_objects_name_their_source() -> None:
    chart_object: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio"}}
    base = index_objects([virtual_service((90, 10))], [])
    head = index_objects([], [("istiod", chart_object)])
    text = format_diff(diff_renders(base, head))
    assert "+ v1 ConfigMap istio  (chart istiod)" in text
    assert "- networking.istio.io/v1 VirtualService shop/checkout  (program)" in text


def test_the_same_key_from_program_and_chart_keeps_both() -> None:
    obj: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"}}
    indexed = index_objects([obj], [("release", obj)])
    assert sorted(key[3] for key in indexed) == ["a", "a (chart release)"]


def test_named_lists_match_by_name_so_an_insertion_is_one_addition() -> None:
    old = {"containers": [{"name": "app", "image": "a:1"}]}
    new = {"containers": [{"name": "sidecar", "image": "s:1"}, {"name": "app", "image": "a:2"}]}
    assert field_changes(old, new) == [
        FieldChange("containers[name=sidecar]", MISSING, {"name": "sidecar", "image": "s:1"}),
        FieldChange("containers[name=app].image", "a:1", "a:2"),
    ]


def test_positional_lists_report_added_and_removed_items() -> None:
    assert field_changes({"hosts": ["a", "b"]}, {"hosts": ["a"]}) == [
        FieldChange("hosts[1]", "b", MISSING)
    ]
    assert format_change(FieldChange("hosts[1]", "b", MISSING)) == ['hosts[1]: removed (was "b")']
    assert format_change(FieldChange("x", MISSING, 3)) == ["x: added 3"]


def test_keys_with_dots_are_quoted_in_paths() -> None:
    old = {"metadata": {"labels": {"app.kubernetes.io/version": "1"}}}
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["app.kubernetes.io/version"] = "2"
    assert field_changes(old, new) == [
        FieldChange('metadata.labels["app.kubernetes.io/version"]', "1", "2")
    ]


def test_reordering_named_items_alone_is_reported_as_order() -> None:
    old = [{"name": "a"}, {"name": "b"}]
    changes = field_changes({"l": old}, {"l": old[::-1]})
    assert [c.path for c in changes] == ["l (order)"]


def test_multi_line_text_is_summarised_not_printed_whole() -> None:
    old = "\n".join(f"line {i}" for i in range(50))
    new = old.replace("line 7", "line seven")
    lines = format_change(FieldChange("data.mesh", old, new))
    assert lines == [
        "data.mesh: text, 1 line(s) removed, 1 added",
        "  -line 7",
        "  +line seven",
    ]


def test_many_changed_fields_are_cut_to_a_few_lines() -> None:
    old = {f"k{i}": i for i in range(20)}
    new = {f"k{i}": i + 1 for i in range(20)}
    base = index_objects(
        [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, **old}], []
    )
    head = index_objects(
        [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, **new}], []
    )
    lines = format_diff(diff_renders(base, head), max_fields=3).splitlines()
    assert len(lines) == 2 + 3 + 1
    assert lines[-1] == "    … and 17 more field(s)"


def test_long_values_are_cut() -> None:
    text = format_change(FieldChange("a", "x" * 500, "y"))[0]
    assert len(text) < 120 and "…" in text


def _program_objects(render: Render) -> dict[Any, RenderedObject]:
    return index_objects(render.kubernetes_objects(), [])


def test_a_one_line_step_weight_change_in_a_stack_file_is_one_canary_field(
    tmp_path: Path, fixture_renders: dict[str, Render]
) -> None:
    """The done-when of `make diff`: one edited line of a stack file shows as one changed
    Canary (Flagger's stepWeight), and nothing else, on the real program's render."""
    stack = "fixture-hub"
    shutil.copytree(FIXTURE_DIR / "offline", tmp_path / "offline")
    text = (FIXTURE_DIR / f"Pulumi.{stack}.yaml").read_text()
    assert text.count("stepWeight: 5\n") == 1
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(
        text.replace("stepWeight: 5\n", "stepWeight: 10\n")
    )
    edited = render_stack(stack, stack_dir=tmp_path)
    diff = diff_renders(_program_objects(fixture_renders[stack]), _program_objects(edited))
    assert not diff.added and not diff.removed
    assert [(key[1], changes) for key, _, changes in diff.changed] == [
        ("Canary", [FieldChange("spec.analysis.stepWeight", 5, 10)])
    ]
