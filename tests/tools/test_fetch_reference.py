"""The reference-data fetcher pins exactly the files the tests validate against."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tools import fetch_reference as fr
from tools.verify import reference_dir


def test_every_reference_file_is_pinned_with_its_checksum() -> None:
    directory = reference_dir()
    on_disk = {
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and p.name != "SOURCES.md"
    }
    assert {r.target for r in fr.REFERENCE_FILES} == on_disk
    for reference in fr.REFERENCE_FILES:
        assert fr.sha256((directory / reference.target).read_bytes()) == reference.sha256


def test_urls_name_the_pinned_commit() -> None:
    for reference in fr.REFERENCE_FILES:
        assert len(reference.commit) == 40
        for url in reference.urls():
            assert url.startswith(f"{fr.RAW}/{reference.repo}/{reference.commit}/")


def _fake_upstream(directory: Path) -> fr.Fetcher:
    """Serve upstream URLs from the local reference copy, as GitHub would."""
    by_url: dict[str, bytes] = {}
    packages: dict[str, dict[str, bytes]] = {}
    for reference in fr.REFERENCE_FILES:
        data = (directory / reference.target).read_bytes()
        if reference.member is not None:
            packages.setdefault(reference.urls()[0], {})[reference.member] = data
        elif len(reference.paths) > 1:
            # Split the concatenation back into its upstream files at document starts.
            chunks = data.split(b"---\n")[1:]
            assert len(chunks) == len(reference.paths)
            for url, chunk in zip(reference.urls(), chunks, strict=True):
                by_url[url] = b"---\n" + chunk
        else:
            by_url[reference.urls()[0]] = data
    for url, members in packages.items():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for member, data in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        by_url[url] = buffer.getvalue()
    return by_url.__getitem__


def test_fetch_all_assembles_and_verifies_every_file(tmp_path: Path) -> None:
    written = fr.fetch_all(tmp_path, _fake_upstream(reference_dir()))
    assert sorted(written) == sorted(r.target for r in fr.REFERENCE_FILES)
    assert fr.fetch_all(tmp_path, _fake_upstream(reference_dir())) == [], "idempotent"


def test_a_changed_upstream_file_is_rejected(tmp_path: Path) -> None:
    def tampered(url: str) -> bytes:
        return b"# changed upstream\n"

    with pytest.raises(fr.ChecksumError, match=r"^crds/istio.yaml: SHA-256 .* differs"):
        fr.fetch_all(tmp_path, tampered)
