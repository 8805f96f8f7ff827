"""The progressive-delivery tier's own logic (`tools/progressive`), without Flagger.

`make progressive` judges the real Flagger against these derivations, so they are read from
Flagger 1.44's scheduler, not from the program: the plan of routing states a promoted canary
goes through, what a rollback looks like, the webhooks' command lines, and the telemetry the
mesh model emits for Prometheus (the labels Istio's stats filter sets, counters that only grow,
Envoy's buckets). Services here are fixtures.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.conftest import make_settings
from tools.progressive import expect
from tools.progressive.expect import ProgressiveService, Routing
from tools.progressive.mesh_model import ENVOY_BUCKETS, Behaviour, MeshModel

GRPC = ProgressiveService(
    name="quotes",
    namespace="trading",
    port=9090,
    protocol="grpc",
    index=0,
    interval_s=10,
    metrics_interval_s=60,
    threshold=3,
    step_weight=15,
    max_weight=40,
    mirror=True,
    success_rate_min=99.5,
    duration_max_ms=250,
    acceptance_path="/",
    load_test_qps=20,
    public_hosts=("quotes.example.com",),
    gateway="public",
    autoscaler="",
    metrics_port="",
)
HTTP = dataclasses.replace(
    GRPC, name="cart", namespace="shop", port=8080, protocol="http", mirror=False,
    step_weight=10, max_weight=30, acceptance_path="/health", load_test_qps=10,
)  # fmt: skip


def test_a_promotion_mirrors_first_then_steps_past_max_weight_then_returns_to_the_primary() -> None:
    # stepWeight 15 below maxWeight 40: 15, 30, then 45 (Flagger adds a step while the
    # weight is below maxWeight), then all traffic back to the new primary at once.
    assert [str(r) for r in expect.promotion_plan(GRPC)] == [
        "100/0", "100/0 mirror", "85/15", "70/30", "55/45", "100/0",
    ]  # fmt: skip
    assert [str(r) for r in expect.promotion_plan(HTTP)] == [
        "100/0", "90/10", "80/20", "70/30", "100/0",
    ]  # fmt: skip


def test_a_rollback_is_a_prefix_of_the_plan_that_ends_at_the_primary() -> None:
    assert expect.is_rollback([Routing(100, 0), Routing(100, 0, True), Routing(100, 0)], GRPC)
    assert expect.is_rollback([Routing(100, 0)], HTTP), "stopped before any traffic moved"
    assert expect.is_rollback([Routing(100, 0), Routing(90, 10), Routing(100, 0)], HTTP)
    assert not expect.is_rollback([Routing(100, 0), Routing(90, 10)], HTTP), "still on the canary"
    assert not expect.is_rollback([Routing(100, 0), Routing(80, 20), Routing(100, 0)], HTTP), (
        "skipped a step"
    )
    # A canary can also fail at its last step (the check before the promotion): routing
    # alone cannot tell that from a promotion; the Canary's phase and the primary's image do.
    assert expect.is_rollback(expect.promotion_plan(HTTP), HTTP)
    beyond = [*expect.promotion_plan(HTTP)[:-1], Routing(60, 40), Routing(100, 0)]
    assert not expect.is_rollback(beyond, HTTP), "past maxWeight"


def test_the_deadline_grows_with_the_plan_and_the_threshold() -> None:
    slower = dataclasses.replace(HTTP, threshold=10)
    assert expect.analysis_deadline_s(slower) > expect.analysis_deadline_s(HTTP)


def test_the_switch_runs_on_an_exposed_http_service_first() -> None:
    internal = dataclasses.replace(HTTP, name="internal", public_hosts=())
    assert expect.switch_candidate([GRPC, internal, HTTP]) == HTTP
    assert expect.switch_candidate([GRPC, internal]) == GRPC
    assert expect.switch_candidate([internal]) is None


def test_the_services_and_their_test_interval_come_from_the_settings() -> None:
    settings = make_settings(
        workloadNamespaces=["shop"],
        services=[
            {"name": "static-one", "namespace": "shop", "port": 8080},
            {
                "name": "cart",
                "namespace": "shop",
                "port": 8080,
                "delivery": "progressive",
                "traffic": {"progressive": {"interval": "2m", "threshold": 7}},
            },
            {
                "name": "gone",
                "namespace": "shop",
                "port": 8080,
                "delivery": "progressive",
                "traffic": {"progressive": {"retire": True}},
            },
        ],
    )
    (found,) = expect.progressive_services(settings)
    assert (found.name, found.index, found.threshold) == ("cart", 1, 7)
    assert found.interval_s == 10, "the tier's override, not the stack's 2m"
    assert found.canary_address == "cart-canary.shop:8080"


@pytest.mark.parametrize(
    ("service", "command", "findings"),
    [
        (HTTP, "curl -sf http://cart-canary.shop:8080/health", []),
        (HTTP, "curl -s http://cart-canary.shop:8080/health", ["curl without -f"]),
        (HTTP, "curl -sf http://cart.shop:8080/health", ["requests http://cart.shop"]),
        (GRPC, "grpc_health_probe -addr=quotes-canary.trading:9090", []),
        (GRPC, "grpc_health_probe -addr=quotes-primary.trading:9090", ["probes quotes-primary"]),
    ],
)
def test_the_acceptance_command_tests_the_canary_as_the_settings_say(
    service: ProgressiveService, command: str, findings: list[str]
) -> None:
    found = expect.acceptance_findings(service, expect.split_command(command))
    assert len(found) == len(findings)
    for got, want in zip(found, findings, strict=True):
        assert want in got


@pytest.mark.parametrize(
    ("service", "command", "wrong"),
    [
        (HTTP, "hey -z 10s -q 5 -c 2 http://cart-canary.shop:8080/", None),
        (HTTP, "hey -z 10s -q 10 -c 2 http://cart-canary.shop:8080/", "sends 20 requests/s"),
        (HTTP, "hey -z 1m -q 5 -c 2 http://cart-canary.shop:8080/", "runs for 1m"),
        (GRPC, "ghz -z 10s -q 20 -c 2 --insecure quotes-canary.trading:9090", None),
        (GRPC, "ghz -z 10s -q 10 -c 2 --insecure quotes-canary.trading:9090", "sends 10"),
    ],
)
def test_the_load_test_sends_the_settings_rate_to_the_canary_for_one_interval(
    service: ProgressiveService, command: str, wrong: str | None
) -> None:
    found = expect.load_test_findings(service, expect.split_command(command))
    assert (found == []) if wrong is None else any(wrong in f for f in found), found


# --- the mesh model ----------------------------------------------------------------------------


def _cluster(vs_routes: list[dict[str, Any]] | None, image: str) -> Any:
    deployments = {
        "items": [
            {
                "metadata": {"name": name},
                "spec": {
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"image": img}]},
                    }
                },
                "status": {"readyReplicas": 1},
            }
            for name, img in (("cart", image), ("cart-primary", "good:1"))
        ]
    }
    services = {
        name: {"spec": {"selector": {"app": app}}}
        for name, app in (("cart-canary", "cart"), ("cart-primary", "cart-primary"))
    }

    def api(method: str, path: str) -> tuple[int, dict[str, Any]]:
        if path.endswith("/deployments"):
            return 200, deployments
        if "/services/" in path:
            name = path.rsplit("/", 1)[1]
            return (200, services[name]) if name in services else (404, {})
        if "/virtualservices/" in path:
            return (200, {"spec": {"http": vs_routes}}) if vs_routes else (404, {})
        return 404, {}

    return api


def _route(primary: int, canary: int, mirror: bool = False) -> list[dict[str, Any]]:
    route: dict[str, Any] = {
        "route": [
            {"destination": {"host": "cart-primary"}, "weight": primary},
            {"destination": {"host": "cart-canary"}, "weight": canary},
        ]
    }
    if mirror:
        route["mirror"] = {"host": "cart-canary"}
    return [route]


def _model(routes: list[dict[str, Any]] | None, image: str, behaviour: Behaviour) -> MeshModel:
    model = MeshModel(
        _cluster(routes, image),
        [HTTP],
        gateway_workload="istio-ingressgateway",
        gateway_namespace="istio-ingress",
        loadtester_namespace="flagger",
        cluster="fixture",
    )
    model.behaviours[image] = behaviour
    return model


def _samples(text: str, name: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{")
    }


def test_the_weights_flagger_writes_decide_what_each_workload_serves() -> None:
    model = _model(_route(80, 20), "bad:2", Behaviour(error_ratio=0.5))
    for _ in range(10):
        model.tick(1.0)
    requests = _samples(model.exposition(), "istio_requests_total")
    served = {
        (w, code): v
        for k, v in requests.items()
        if 'reporter="destination"' in k
        for w in ("cart", "cart-primary")
        if f'destination_workload="{w}"' in k
        for code in ("200", "503")
        if f'response_code="{code}"' in k
    }
    assert served[("cart-primary", "200")] == 160, "80 % of 20 req/s for 10 s"
    assert served[("cart", "503")] == served[("cart", "200")] == 20, "20 % of it, half failing"
    assert ("cart-primary", "503") not in served, "a label set exists once it has a request"


def test_every_series_carries_the_labels_istio_sets_and_both_reporters() -> None:
    model = _model(_route(100, 0), "good:2", Behaviour())
    model.tick(1.0)
    keys = list(_samples(model.exposition(), "istio_requests_total"))
    assert {('reporter="destination"' in k) for k in keys} == {True, False}
    for key in keys:
        assert key.count('="') == 25, key
    assert 'grpc_response_status=""' in keys[0], "HTTP: empty, which Prometheus treats as absent"


def test_a_mirror_is_served_and_reported_by_the_canary_only() -> None:
    model = _model(_route(100, 0, mirror=True), "shadow:2", Behaviour())
    model.tick(1.0)
    requests = _samples(model.exposition(), "istio_requests_total")
    canary = {k: v for k, v in requests.items() if 'destination_workload="cart"' in k}
    assert list(canary.values()) == [20]
    assert all('reporter="destination"' in k for k in canary)


def test_slow_requests_land_in_envoys_buckets_and_counters_only_grow() -> None:
    model = _model(_route(0, 100), "slow:2", Behaviour(slow_ratio=0.1, slow_ms=1000))
    model.tick(5.0)
    first = _samples(model.exposition(), "istio_request_duration_milliseconds_bucket")
    model.tick(5.0)
    second = _samples(model.exposition(), "istio_request_duration_milliseconds_bucket")
    canary = {
        k.split('le="')[1].rstrip('"}'): v
        for k, v in second.items()
        if 'destination_workload="cart"' in k and 'reporter="destination"' in k
    }
    assert canary["500"] == 180 and canary["1000"] == canary["+Inf"] == 200
    assert len(ENVOY_BUCKETS) == 19
    assert all(second[k] >= v for k, v in first.items())


def test_the_shims_get_answers_from_the_pods_their_service_selects() -> None:
    model = _model(_route(100, 0), "sick:2", Behaviour(healthy=False))
    assert model.call("curl", ["curl", "-sf", "http://cart-canary.shop:8080/health"])[0] == 22
    assert model.call("curl", ["curl", "-sf", "http://nothing.shop:8080/"])[0] == 7
    code, _, seconds = model.call(
        "hey", ["hey", "-z", "10s", "-q", "5", "-c", "2", "http://cart-canary.shop:8080/"]
    )
    assert (code, seconds) == (0, 10.0)
    model.tick(1.0)
    from_loadtester = [
        v
        for k, v in _samples(model.exposition(), "istio_requests_total").items()
        if 'source_workload="flagger-loadtester"' in k and 'reporter="destination"' in k
    ]
    assert sum(from_loadtester) == 10, "hey's -q per worker times -c"


# --- what the switch scenario calls a route ------------------------------------------------------


class _Cluster:
    """`get(path)` over a few objects, as the API server lists and returns them."""

    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = objects

    def get(self, path: str) -> dict[str, Any] | None:
        return self.objects.get(path)

    def virtual_service(self, s: ProgressiveService) -> dict[str, Any] | None:
        return self.get(
            f"/apis/networking.istio.io/v1/namespaces/{s.namespace}/virtualservices/{s.name}"
        )


def _switch_objects(*, gateways: list[str], subset: str | None, pods: str) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": "cart.shop.svc.cluster.local"}
    if subset:
        destination["subset"] = subset
    vs = {
        "metadata": {"name": "cart", "uid": "u1"},
        "spec": {
            "hosts": ["cart.shop.svc.cluster.local", "shop.example.com"],
            "gateways": gateways,
            "http": [{"route": [{"destination": destination}]}],
        },
    }
    dr = {
        "spec": {
            "host": "cart.shop.svc.cluster.local",
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
        }
    }
    deployment = {
        "metadata": {"name": "cart"},
        "spec": {"template": {"metadata": {"labels": {"app": pods, "version": "v1"}}}},
        "status": {"readyReplicas": 1},
    }
    base = "/apis/networking.istio.io/v1/namespaces/shop"
    return {
        f"{base}/virtualservices": {"items": [vs]},
        f"{base}/destinationrules": {"items": [dr]},
        "/api/v1/namespaces/shop/services/cart": {"spec": {"selector": {"app": "cart"}}},
        "/apis/apps/v1/namespaces/shop/deployments": {"items": [deployment]},
    }


def test_a_public_host_answers_only_through_a_gateway_route_to_ready_pods() -> None:
    from tools.progressive.run import host_answers

    host = "shop.example.com"
    ok = _Cluster(
        _switch_objects(gateways=["istio-ingress/public", "mesh"], subset="v1", pods="cart")
    )
    assert host_answers(ok, HTTP, host) is None  # type: ignore[arg-type]
    mesh_only = _Cluster(_switch_objects(gateways=["mesh"], subset=None, pods="cart"))
    assert "404 NR" in (host_answers(mesh_only, HTTP, host) or "")  # type: ignore[arg-type]
    no_subset = _Cluster(
        _switch_objects(gateways=["istio-ingress/public"], subset="v2", pods="cart")
    )
    assert "subset v2" in (host_answers(no_subset, HTTP, host) or "")  # type: ignore[arg-type]
    no_pods = _Cluster(
        _switch_objects(gateways=["istio-ingress/public"], subset=None, pods="other")
    )
    assert "503 UH" in (host_answers(no_pods, HTTP, host) or "")  # type: ignore[arg-type]


def test_the_continuity_poller_records_every_poll_without_a_route_and_each_uid() -> None:
    from tools.progressive.run import Continuity

    objects = _switch_objects(gateways=["istio-ingress/public"], subset=None, pods="cart")
    cluster = _Cluster(objects)
    path = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/cart"
    objects[path] = objects["/apis/networking.istio.io/v1/namespaces/shop/virtualservices"][
        "items"
    ][0]
    watch = Continuity(cluster, HTTP, "shop.example.com")  # type: ignore[arg-type]
    watch.poll()
    del objects[path]
    objects["/apis/networking.istio.io/v1/namespaces/shop/virtualservices"] = {"items": []}
    watch.poll()
    assert watch.polls == 2 and len(watch.gaps) == 1
    assert watch.uids == ["u1", "absent"], "a deleted VirtualService shows, however short"


def test_the_primary_image_is_read_from_the_primary_deployment() -> None:
    from tools.progressive.run import Cluster

    class _Api:
        def request(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
            if path.endswith("/deployments/cart-primary"):
                spec = {"template": {"spec": {"containers": [{"image": "shop/cart:2"}]}}}
                return 200, {"spec": spec}
            return 404, {}

    assert Cluster(_Api()).primary_image(HTTP) == "shop/cart:2"  # type: ignore[arg-type]
    missing = dataclasses.replace(HTTP, name="gone")
    assert Cluster(_Api()).primary_image(missing) is None  # type: ignore[arg-type]
