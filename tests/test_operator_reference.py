"""Reference data on any machine: `../shared`, else `$MESHSTACK_REFERENCE_DIR`, else a local
cache that `make test` fills from the pinned, checksummed upstream files, or one line saying
what is missing and how to provide it."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from tools import fetch_reference as fr

ENV = "MESHSTACK_TEST_DATA_DIR"


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> fr.DataDir:
    """A data kind whose shared directory and cache are both absent, variable unset."""
    monkeypatch.delenv(ENV, raising=False)
    return fr.DataDir.next_to(tmp_path / "clone", "reference", ENV)


def _fetched(directory: Path) -> list[str]:
    (directory / "crds").mkdir(parents=True, exist_ok=True)
    if (directory / "crds" / "a.yaml").is_file():
        return []
    (directory / "crds" / "a.yaml").write_text("a")
    return ["crds/a.yaml"]


def _offline(directory: Path) -> list[str]:
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_the_variable_wins_then_shared_then_the_cache(
    data: fr.DataDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data.cache.mkdir(parents=True)
    assert data.resolve() == data.cache
    data.shared.mkdir(parents=True)
    assert data.resolve() == data.shared
    monkeypatch.setenv(ENV, str(tmp_path))
    assert data.resolve() == tmp_path


def test_nothing_present_is_one_line_naming_both_ways_to_provide_it(data: fr.DataDir) -> None:
    with pytest.raises(fr.DataDirError) as caught:
        data.resolve()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"reference data missing: neither {data.shared} nor {data.cache}")
    assert "`make reference`" in message
    assert f"set {ENV} to a directory holding them" in message


def test_ensure_uses_shared_as_it_is(data: fr.DataDir) -> None:
    data.shared.mkdir(parents=True)
    assert data.ensure(_offline) == f"reference data: {data.shared}"


def test_ensure_without_shared_fetches_into_the_cache_and_says_so(data: fr.DataDir) -> None:
    assert data.ensure(_fetched) == (
        f"reference data: fetched 1 pinned files into {data.cache} ({data.shared} is absent), "
        "checksums verified"
    )
    assert data.resolve() == data.cache
    assert data.ensure(_fetched) == (
        f"reference data: {data.cache} ({data.shared} is absent), checksums verified"
    )


def test_ensure_offline_is_one_line_saying_what_is_missing_and_how_to_provide_it(
    data: fr.DataDir,
) -> None:
    with pytest.raises(fr.DataDirError) as caught:
        data.ensure(_offline)
    assert str(caught.value) == (
        f"reference data missing: {data.shared} is absent and fetching the pinned files into "
        f"{data.cache} failed ([Errno -3] Temporary failure in name resolution); set {ENV} to "
        f"a directory holding them (fill one on a machine with network: {ENV}=<dir> "
        "python3 tools/fetch_reference.py)"
    )


def test_ensure_into_the_configured_directory_names_the_variable(
    data: fr.DataDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "mine"))
    with pytest.raises(fr.DataDirError, match=rf"mine \(\${ENV}\) is incomplete and fetching"):
        data.ensure(_offline)


def test_a_changed_upstream_file_is_one_line_too(data: fr.DataDir) -> None:
    def tampered(directory: Path) -> list[str]:
        raise fr.ChecksumError("crds/istio.yaml: SHA-256 00 differs from the pinned 11")

    with pytest.raises(fr.DataDirError, match=r"failed \(crds/istio.yaml: SHA-256 00 differs"):
        data.ensure(tampered)


def test_make_test_runs_the_ensure_step_before_pytest(
    monkeypatch: pytest.MonkeyPatch, data: fr.DataDir, capsys: pytest.CaptureFixture[str]
) -> None:
    makefile = (Path(fr.__file__).resolve().parents[1] / "Makefile").read_text()
    assert "pytest: install reference" in makefile
    assert "tools/fetch_reference.py --ensure" in makefile
    monkeypatch.setattr(fr, "REFERENCE", data)
    monkeypatch.setattr(fr, "fetch_all", _offline)
    assert fr.main(["--ensure"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("reference data missing: ")
