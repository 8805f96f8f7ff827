"""The expansion cache of `make render` (`tools.charts`): a hit is exactly what Helm gives,
and any input Helm's output depends on is part of the key, so changing it misses."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from components.versions import KIALI_SERVER
from tools import charts

KIALI: dict[str, Any] = {
    "name": "kiali",
    "chart": "kiali-server",
    "version": "2.29.0",
    "repository": KIALI_SERVER.repository,
    "namespace": "observability",
    # A fixed signing key: without one the chart draws a random key (and a checksum of it)
    # on every expansion, which the program never lets it do.
    "values": {"deployment": {"replicas": 2}, "login_token": {"signing_key": "k" * 32}},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    return charts.helm_binary()


def _key(**changes: Any) -> str:
    """The key of a fixed release, with one input changed."""
    release = charts.Release.of(KIALI)
    pin = charts.pin_for("kiali-server", "2.29.0")
    assert pin is not None
    inputs: dict[str, Any] = {
        "release": release,
        "pin": pin,
        "values": release.values,
        "helm": "/opt/helm:100:1",
        "environment": "e" * 64,
    }
    inputs.update(changes)
    return charts.expansion_key(**inputs)


def test_the_key_is_stable_and_ignores_key_order() -> None:
    assert _key() == _key()
    reordered = dict(reversed(list({"a": 1, "b": {"y": 2, "x": 3}}.items())))
    assert _key(values={"a": 1, "b": {"x": 3, "y": 2}}) == _key(values=reordered)


@pytest.mark.parametrize(
    "change",
    [
        {"values": {"deployment": {"replicas": 3}}},  # a changed value
        {"values": {"deployment": {"replicas": 2}, "extra": None}},  # an added key
        {"values": {}},  # values removed
    ],
)
def test_a_change_of_values_misses(change: dict[str, Any]) -> None:
    assert _key(**change) != _key()


def test_a_change_of_chart_pin_misses() -> None:
    pin = charts.pin_for("kiali-server", "2.29.0")
    assert pin is not None
    for changed in (
        replace(pin, version="2.30.0", folder="kiali-server-2.30.0"),
        replace(pin, tree_sha256="0" * 64),
        replace(pin, files=pin.files + 1),
        replace(pin, package_sha256="0" * 64),
    ):
        assert _key(pin=changed) != _key()
    istiod = charts.pin_for("istiod", "1.30.4")
    assert istiod is not None
    assert _key(pin=istiod) != _key()


def test_a_change_of_release_helm_or_environment_misses() -> None:
    release = charts.Release.of(KIALI)
    assert _key(release=replace(release, name="kiali-2")) != _key()
    assert _key(release=replace(release, namespace="istio-system")) != _key()
    assert _key(helm="/opt/helm:100:2") != _key()  # the binary replaced (mtime)
    assert _key(environment="f" * 64) != _key()


def test_the_environment_covers_kubernetes_version_and_shaping_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    charts.expansion_environment.cache_clear()
    try:
        before = charts.expansion_environment()
        assert before is not None
        charts.expansion_environment.cache_clear()
        monkeypatch.setattr(charts, "KUBE_VERSION", "1.36.0")
        assert charts.expansion_environment() != before
    finally:
        monkeypatch.undo()
        charts.expansion_environment.cache_clear()
    names = {p.name for p in charts._SHAPING_SOURCES}
    assert names == {"charts.py", "manifests.py", "core.py"}
    assert all(p.is_file() for p in charts._SHAPING_SOURCES)


def test_a_hit_equals_helm_and_a_changed_value_runs_helm_again(tmp_path: Path, helm: Path) -> None:
    (fresh,) = charts.expand([KIALI], helm=helm)
    (first,) = charts.expand([KIALI], helm=helm, cache_dir=tmp_path)
    entries = list(tmp_path.glob("*.json"))
    assert len(entries) == 1
    assert first.objects == fresh.objects
    # A hit is read from the entry: doctor it and the doctored objects come back.
    entry = json.loads(entries[0].read_text())
    entry["objects"] = entry["objects"][:1]
    entries[0].write_text(json.dumps(entry))
    (hit,) = charts.expand([KIALI], helm=helm, cache_dir=tmp_path)
    assert hit.objects == fresh.objects[:1]
    # Another replica count is another key: Helm runs, its Deployment says 3.
    changed = {**KIALI, "values": {**KIALI["values"], "deployment": {"replicas": 3}}}
    (miss,) = charts.expand([changed], helm=helm, cache_dir=tmp_path)
    (deployment,) = [o for o in miss.objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 3
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_an_unreadable_entry_is_a_miss(tmp_path: Path, helm: Path) -> None:
    (first,) = charts.expand([KIALI], helm=helm, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.json")
    entry.write_text('{"key": "truncated')
    (again,) = charts.expand([KIALI], helm=helm, cache_dir=tmp_path)
    assert again.objects == first.objects
    assert json.loads(entry.read_text())["objects"] == first.objects  # rewritten


def test_objects_json_cannot_carry_are_not_cached(tmp_path: Path) -> None:
    import datetime

    charts.write_cached_expansion(tmp_path, "k1", [{"when": datetime.date(2026, 1, 1)}])
    charts.write_cached_expansion(tmp_path, "k2", [{"data": {1: "one"}}])
    assert not list(tmp_path.glob("*.json"))
    charts.write_cached_expansion(tmp_path, "k3", [{"kind": "ConfigMap"}])
    assert charts.read_cached_expansion(tmp_path, "k3") == [{"kind": "ConfigMap"}]
    assert charts.read_cached_expansion(tmp_path, "k1") is None


def test_the_cache_directory_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(charts.EXPANSION_CACHE_ENV, raising=False)
    assert charts.expansion_cache_dir() == charts.EXPANSION_CACHE_DIR
    monkeypatch.setenv(charts.EXPANSION_CACHE_ENV, str(tmp_path))
    assert charts.expansion_cache_dir() == tmp_path
    monkeypatch.setenv(charts.EXPANSION_CACHE_ENV, "off")
    assert charts.expansion_cache_dir() is None
