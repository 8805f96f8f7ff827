"""The update bot (renovate.json) sees every pin: its regex managers match each `# renovate:`
marker of components/versions.py with the pinned version, and its file patterns reach the
hash-pinned tool requirements (docs/policy.md, m6)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
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
            assert number in covered, f"versions.py:{number + 1}: {line} (a dead marker)"


def _rules_for(config: dict[str, Any], dep: str, update_type: str) -> dict[str, Any]:
    """The settings Renovate ends up with for one update: the matching rules, in order."""
    merged: dict[str, Any] = {}
    for rule in config["packageRules"]:
        if dep not in rule.get("matchDepNames", [dep]):
            continue
        if update_type not in rule.get("matchUpdateTypes", [update_type]):
            continue
        if "matchManagers" in rule:
            continue
        merged |= {k: v for k, v in rule.items() if not k.startswith(("match", "desc"))}
    return merged


def test_istio_is_bumped_automatically_by_patch_releases_only() -> None:
    """A minor release is a canary upgrade with revisions (docs/upgrades.md), not a bump of
    the installed release."""
    config = _config()
    assert _rules_for(config, "istiod", "patch").get("enabled", True) is True
    assert _rules_for(config, "istiod", "patch")["separateMinorPatch"] is True
    assert _rules_for(config, "istiod", "patch")["dependencyDashboardApproval"] is False
    for update_type in ("minor", "major"):
        assert _rules_for(config, "istiod", update_type)["enabled"] is False, update_type


def test_the_commit_tagged_ratelimit_image_is_left_to_a_person() -> None:
    """`f2fb1577` is a short commit SHA: Renovate cannot order such tags."""
    assert re.fullmatch(r".*:[0-9a-f]{8}", versions.RATELIMIT_IMAGE)
    assert _rules_for(_config(), "envoyproxy/ratelimit", "patch")["enabled"] is False


def test_a_bump_of_the_installed_istio_alone_keeps_its_charts_pinned(tmp_path: Path) -> None:
    """What the update bot's patch PR changes: the ISTIO_VERSION line, nothing else."""
    source = (PROJECT_DIR / "components" / "versions.py").read_text()
    bumped = source.replace(
        f'ISTIO_VERSION: Final = "{versions.ISTIO_VERSION}"', 'ISTIO_VERSION: Final = "1.30.10"'
    )
    assert bumped != source
    path = tmp_path / "bumped_versions.py"
    path.write_text(bumped)
    spec = importlib.util.spec_from_file_location("bumped_versions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert module.ISTIO_VERSIONS == ("1.31.0", "1.30.10"), "newest first, by number"
    assert module.ISTIOD.version == "1.30.10"


def test_istio_versions_are_the_installed_and_the_upgrade_releases() -> None:
    assert versions.ISTIO_VERSIONS == ("1.31.0", "1.30.4")
    assert set(versions.ISTIO_VERSIONS) == {
        versions.ISTIO_VERSION,
        *versions.ISTIO_UPGRADE_VERSIONS,
    }


def test_the_hash_pinned_tools_and_the_actions_are_managed() -> None:
    """Renovate bumps the version of a hash-pinned requirement, not its `--hash` lines: the
    rule says so, with the command each file's header gives to refresh them."""
    config = _config()
    (pip,) = [r for r in config["packageRules"] if r.get("matchManagers") == ["pip_requirements"]]
    for name in ("uv.txt", "zizmor.txt"):
        header = (PROJECT_DIR / "tools" / "requirements" / name).read_text()
        assert f"uv pip compile --generate-hashes --no-header - -o tools/requirements/{name}" in (
            header
        )
    assert "uv pip compile --generate-hashes" in pip["description"]
    patterns = [_file_pattern(p) for p in config["pip_requirements"]["managerFilePatterns"]]
    for name in ("uv.txt", "zizmor.txt"):
        assert any(p.search(f"tools/requirements/{name}") for p in patterns), name
    rules = {r.get("groupName"): r for r in config["packageRules"]}
    assert rules["GitHub Actions"]["pinDigests"] is True
    assert "helpers:pinGitHubActionDigestsToSemver" in config["extends"]
