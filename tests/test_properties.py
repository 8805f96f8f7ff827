"""Property tests of the foundation: valid settings always render and validate; invalid
settings always fail before any resource exists, naming the offending key."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.constants import ISTIO_RESERVED_PORTS
from components.settings import SettingsError, load_settings
from tools.render import run_program
from tools.verify import validate_manifest

dns_labels = st.from_regex(r"\A[a-z]([-a-z0-9]{0,18}[a-z0-9])?\Z", fullmatch=True)
versions = st.lists(
    st.fixed_dictionaries({"name": dns_labels}),
    min_size=1,
    max_size=3,
    unique_by=lambda v: v["name"],
)
services = st.lists(
    st.fixed_dictionaries(
        {
            "name": dns_labels,
            "namespace": st.sampled_from(["shop", "bank", "edge", "data"]),
            # Any port a service may use: Istio's sidecar reserves some (refused by the settings).
            "port": st.integers(min_value=1, max_value=65535).filter(
                lambda p: p not in ISTIO_RESERVED_PORTS
            ),
            "protocol": st.sampled_from(["http", "http2", "grpc"]),
            "versions": versions,
        }
    ),
    max_size=8,
    unique_by=lambda s: (s["namespace"], s["name"]),
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def config_for(service_list: list[dict[str, Any]], **extra: Any) -> dict[str, str]:
    config = {"meshstack:region": "prop-1", "meshstack:services": json.dumps(service_list)}
    config.update({f"meshstack:{k}": json.dumps(v) for k, v in extra.items()})
    return config


@FAST
@given(services, st.booleans(), st.sampled_from(["", "1-30-4"]))
def test_valid_settings_always_render_and_validate(
    service_list: list[dict[str, Any]], egress: bool, revision: str
) -> None:
    config = config_for(service_list, egressGateway=egress)
    if revision:
        revisions = [{"name": revision, "version": "1.30.4", "tags": ["default"]}]
        config["meshstack:istioRevisions"] = json.dumps(revisions)
    render = run_program("prop-1", config)
    objects = render.kubernetes_objects()
    assert [e for obj in objects for e in validate_manifest(obj)] == []
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    expected = {s["namespace"] for s in service_list} | {"istio-system", "istio-ingress"}
    expected.add("observability")  # the default role is hub: JaegerStack's namespace
    assert namespaces == expected | ({"istio-egress"} if egress else set())


CORRUPTIONS: list[tuple[str, str, Any]] = [
    ("port", "port", 0),
    ("port", "port", 65536),
    ("name", "name", "Bad_Name"),
    ("namespace", "namespace", "-edge"),
    ("protocol", "protocol", "udp"),
    ("unknown", "colour", "blue"),
]


@FAST
@given(services.filter(bool), st.data())
def test_invalid_service_settings_always_fail_naming_the_key(
    service_list: list[dict[str, Any]], data: st.DataObject
) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(service_list) - 1))
    field, key, bad_value = data.draw(st.sampled_from(CORRUPTIONS))
    broken = [dict(s) for s in service_list]
    broken[index][key] = bad_value
    try:
        load_settings(config_for(broken))
    except SettingsError as error:
        message = str(error)
    else:
        raise AssertionError(f"{field}={bad_value!r} was accepted")
    name = f" ({broken[index]['name']})" if broken[index].get("name") else ""
    assert any(
        line.startswith(f"meshstack:services[{index}]{name}.{key}") for line in message.splitlines()
    )
    assert all(line.startswith("meshstack:") for line in message.splitlines())


@FAST
@given(st.integers(max_value=1) | st.integers(min_value=21))
def test_out_of_range_istiod_replicas_always_fail_naming_the_key(replicas: int) -> None:
    try:
        load_settings(config_for([], istiodReplicas=replicas))
    except SettingsError as error:
        assert str(error).startswith(f"meshstack:istiodReplicas = {replicas}: must be")
    else:
        raise AssertionError(f"istiodReplicas={replicas} was accepted")
