"""The offline render's mocks echo only a Kubernetes object's apiVersion, kind and metadata
back as its outputs (`tools.render.ECHOED_OBJECT_FIELDS`): that is all the program reads of
the objects it registers. If the program ever reads more (a spec field of a registered
object), the slim echo would leave it unknown and the render would change: every stack,
production and fixture, renders the same with every input echoed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FIXTURE_DIR, FIXTURES
from tools import render
from tools.stacks import stack_names


@pytest.mark.parametrize("stack", [*stack_names(), *FIXTURES])
def test_the_render_is_the_same_with_every_input_echoed(
    stack: str, every_render: dict[str, render.Render], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert render.ECHOED_OBJECT_FIELDS is not None, "the render echoes a subset"
    monkeypatch.setattr(render, "ECHOED_OBJECT_FIELDS", None)
    full = render.render_stack(stack, stack_dir=FIXTURE_DIR if stack in FIXTURES else None)
    slim = every_render[stack]

    def seen(result: render.Render) -> list[Any]:
        # Registration order follows the SDK's event loop; the render files sort by URN.
        return sorted((vars(r) for r in result.registrations), key=lambda r: str(r["urn"]))

    assert seen(full) == seen(slim)
    assert full.outputs == slim.outputs
