"""The update bot (renovate.json) sees every pin: its regex managers match each `# renovate:`
marker of components/versions.py with the pinned version, and its file patterns reach the
hash-pinned tool requirements (docs/policy.md, m6)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from components import versions

PROJECT_DIR = Path(__file__).resolve().parents[1]


def _config() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((PROJECT_DIR / "renovate.json").read_text())
    return loaded


def _python(pattern: str) -> re.Pattern[str]:
    """A Renovate (JavaScript) regex as Python's: named groups are `(?P<name>...)`."""
    return re.compile(pattern.replace("(?<", "(?P<"))


def _file_pattern(pattern: str) -> re.Pattern[str]:
    assert pattern.startswith("/") and pattern.endswith("/"), pattern
    return re.compile(pattern[1:-1])


def _managers_of(path: str) -> list[dict[str, Any]]:
    return [
        m
        for m in _config()["customManagers"]
        if any(_file_pattern(p).search(path) for p in m["managerFilePatterns"])
    ]


def test_every_marker_of_the_pinned_versions_is_matched_with_its_version() -> None:
    text = (PROJECT_DIR / "components" / "versions.py").read_text()
    single, istio = _managers_of("components/versions.py")
    found: dict[str, str] = {}
    covered: set[int] = set()
    for pattern in single["matchStrings"]:
        for match in _python(pattern).finditer(text):
            found[match["depName"]] = match["currentValue"]
            covered.add(text.count("\n", 0, match.start()))
    assert found["flagger"] == versions.FLAGGER.version
    assert found["loadtester"] == versions.FLAGGER_LOADTESTER.version
    assert found["kiali-server"] == versions.KIALI_SERVER.version
    assert found["jaeger"] == versions.JAEGER.version
    assert versions.REDIS_IMAGE.endswith(f":{found['redis']}")
    assert versions.RATELIMIT_IMAGE.endswith(f":{found['envoyproxy/ratelimit']}")
    combined: dict[str, str] = {}
    for pattern in istio["matchStrings"]:
        found_istio = _python(pattern).search(text)
        assert found_istio is not None, pattern
        combined |= found_istio.groupdict()
    assert istio["matchStringsStrategy"] == "combination"
    assert combined["currentValue"] == versions.ISTIO_VERSION
    assert combined["registryUrl"] == versions.ISTIOD.repository
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("# renovate:"):
            istio_chart = "istio_charts(" in lines[number + 1]
            assert number in covered or istio_chart, f"versions.py:{number + 1}: {line}"


def test_the_hash_pinned_tools_and_the_actions_are_managed() -> None:
    config = _config()
    patterns = [_file_pattern(p) for p in config["pip_requirements"]["managerFilePatterns"]]
    for name in ("uv.txt", "zizmor.txt"):
        assert any(p.search(f"tools/requirements/{name}") for p in patterns), name
    rules = {r.get("groupName"): r for r in config["packageRules"]}
    assert rules["GitHub Actions"]["pinDigests"] is True
    assert "helpers:pinGitHubActionDigestsToSemver" in config["extends"]
