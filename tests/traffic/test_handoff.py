"""The switch from static to progressive delivery hands the VirtualService to Flagger.

Flagger takes over an existing VirtualService `<name>` once `-primary` is Ready (it stores
the replaced spec and rewrites it, `flagger@v1.44.0:pkg/router/istio.go`); if the program
deleted it in the switching update, the public host would have no route until Flagger's next
tick. So the switching update keeps the program's VirtualService (retained, Flagger's
rewrites ignored) and DestinationRule and waits for the Canary's initialization; the next
update forgets the VirtualService and deletes the DestinationRule. The program learns which
update it is from its own last `routeOwners` output. Stack files and outputs here are
fixtures; `make progressive` runs the switch against the real Flagger.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from components.traffic import handoff
from tests.conftest import make_settings
from tools import render

STACK: Final = "fixture-handoff"
KEY: Final = "shop/cart"
STACK_FILE: Final = """\
config:
  pulumi:disable-default-providers: [kubernetes]
  meshstack:region: fixture-7
  meshstack:workloadNamespaces: [shop]
  meshstack:services:
    - name: cart
      namespace: shop
      port: 8080
      delivery: {delivery}
"""


def _services(delivery: str, **progressive: Any) -> Any:
    service: dict[str, Any] = {
        "name": "cart",
        "namespace": "shop",
        "port": 8080,
        "delivery": delivery,
    }
    if progressive:
        service["traffic"] = {"progressive": progressive}
    return make_settings(workloadNamespaces=["shop"], services=[service]).services


@pytest.mark.parametrize(
    ("last", "delivery", "owner"),
    [
        ({}, "static", handoff.PROGRAM),
        ({}, "progressive", handoff.FLAGGER),
        ({KEY: handoff.PROGRAM}, "static", handoff.PROGRAM),
        ({KEY: handoff.PROGRAM}, "progressive", handoff.HANDING_OVER),
        ({KEY: handoff.HANDING_OVER}, "progressive", handoff.FLAGGER),
        ({KEY: handoff.FLAGGER}, "progressive", handoff.FLAGGER),
        ({KEY: handoff.HANDING_OVER}, "static", handoff.PROGRAM),
    ],
)
def test_the_owner_follows_the_last_deployment(
    last: dict[str, str], delivery: str, owner: str
) -> None:
    assert handoff.route_owners(_services(delivery), last) == {KEY: owner}


def test_a_retiring_service_has_no_owner_and_a_first_deployment_hands_nothing_over() -> None:
    retiring = _services("progressive", retire=True)
    assert handoff.route_owners(retiring, {KEY: handoff.FLAGGER}) == {}
    assert handoff.handovers(handoff.route_owners(_services("progressive"), {})) == frozenset()
    assert handoff.last_route_owners({"region": "x"}) == {}, "a deployment before the output"


# --- through the program, offline ---------------------------------------------------------


def _render(tmp_path: Path, delivery: str, last_owner: str | None) -> tuple[list[Any], Any, Any]:
    project = tmp_path / "project"
    project.mkdir()
    (project / f"Pulumi.{STACK}.yaml").write_text(STACK_FILE.format(delivery=delivery))
    if last_owner is not None:
        (project / "offline").mkdir()
        (project / "offline" / "stack-references.yaml").write_text(
            yaml.safe_dump({STACK: {handoff.ROUTE_OWNERS_OUTPUT: {KEY: last_owner}}})
        )
    out = tmp_path / "out"
    assert render.main([STACK, "--stack-dir", str(project), "--no-charts", "--out", str(out)]) == 0
    resources = json.loads((out / "resources.json").read_text())
    objects = [d for d in yaml.safe_load_all((out / "manifests.yaml").read_text()) if d]
    outputs = json.loads((out / "outputs.json").read_text())
    return resources, objects, outputs


def _routes(resources: list[Any], kind: str) -> list[Any]:
    """The service's own routing objects (its CanaryRoute's children)."""
    return [r for r in resources if "CanaryRoute$" in r["urn"] and r["type"].endswith(kind)]


def _named(objects: list[Any], kind: str) -> list[Any]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == "cart"]


def test_the_switching_update_keeps_the_routes_until_flagger_routes_the_host(
    tmp_path: Path,
) -> None:
    resources, objects, outputs = _render(tmp_path, "progressive", handoff.PROGRAM)
    vs = _routes(resources, ":VirtualService")
    dr = _routes(resources, ":DestinationRule")
    assert len(vs) == 1 and len(dr) == 1, "the static routes stay declared for this update"
    assert vs[0]["retain_on_delete"], "the next update forgets it: Flagger owns it by then"
    assert not dr[0]["retain_on_delete"], "the next update deletes it: nothing routes to it"
    (canary,) = _named(objects, "Canary")
    assert canary["metadata"]["annotations"]["pulumi.com/waitFor"] == (
        "jsonpath={.status.lastAppliedSpec}"
    ), "the update ends only once Flagger has initialized the canary (and taken the VS over)"
    assert outputs[handoff.ROUTE_OWNERS_OUTPUT] == {KEY: handoff.HANDING_OVER}


def test_the_next_update_leaves_the_virtual_service_to_flagger(tmp_path: Path) -> None:
    resources, objects, outputs = _render(tmp_path, "progressive", handoff.HANDING_OVER)
    assert not _routes(resources, ":VirtualService") + _routes(resources, ":DestinationRule")
    (canary,) = _named(objects, "Canary")
    assert "pulumi.com/waitFor" not in canary["metadata"]["annotations"], (
        "an ordinary update never waits on Flagger"
    )
    assert outputs[handoff.ROUTE_OWNERS_OUTPUT] == {KEY: handoff.FLAGGER}


def test_a_static_service_keeps_an_ordinary_virtual_service(tmp_path: Path) -> None:
    resources, _, outputs = _render(tmp_path, "static", None)
    (vs,) = _routes(resources, ":VirtualService")
    assert not vs["retain_on_delete"], "removing a static service deletes its routes"
    assert outputs[handoff.ROUTE_OWNERS_OUTPUT] == {KEY: handoff.PROGRAM}
