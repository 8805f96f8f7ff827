"""Fetch the upstream reference data the tests validate against: pinned and checksummed.

The tests read CRDs, chart defaults and the ratelimit example from the first of
`$MESHSTACK_REFERENCE_DIR`, `../shared/reference` (next to the clone) and the local cache
`.cache/reference` (`REFERENCE.resolve()`). Development machines have `../shared`; a fresh
clone or a GitHub runner does not, so `make test` first runs
`python tools/fetch_reference.py --ensure`, which fills the cache (or the directory the
variable names) and says so, or fails with one line saying what is missing and how to
provide it. Every file comes from its upstream repository at a fixed commit and must match
its SHA-256, so every machine validates against exactly the data the tests were written
for; a file already present with the right checksum is left alone (no network needed).
This module holds only addresses and checksums, never the data, and only the standard
library: CI runs it with the system Python.

`DataDir` is the general mechanism: any pinned upstream data (the Helm charts of
`../shared/charts` too) can be located and fetched the same way with its own variable.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

RAW: Final = "https://raw.githubusercontent.com"
ENV_VAR: Final = "MESHSTACK_REFERENCE_DIR"
PROJECT_DIR: Final = Path(__file__).resolve().parents[1]

_ISTIO = ("istio/istio", "56df41f63e513f834c9a3af33d8aed82d1d961f2")
_FLAGGER = ("fluxcd/flagger", "15bd6ad555e6c935da55f0ab95977be74c149bd6")
_PROMETHEUS_OPERATOR = (
    "prometheus-operator/prometheus-operator",
    "f8fafd475f3d132e239432ae6172de60a6cb6516",
)
_KIALI_OPERATOR = ("kiali/kiali-operator", "c8bd73c2b242930b43de32ef5dff2ef01925f5d2")
_KIALI_CHARTS = ("kiali/helm-charts", "c7b6cf98a8d00d758c70ea4c0e76f32af7dd9ce7")
_JAEGER_CHARTS = ("jaegertracing/helm-charts", "6c602b54a1800ff35ea055d16789a9522166e0a6")
_RATELIMIT = ("envoyproxy/ratelimit", "f2fb15770f7fd1c88ca6c3a1b58ee513917ace96")
_PROMETHEUS_CRDS = "example/prometheus-operator-crd/monitoring.coreos.com_"


@dataclass(frozen=True)
class ReferenceFile:
    """One reference file: where it goes, what it must hash to, where it comes from."""

    target: str
    sha256: str
    repo: str
    commit: str
    paths: tuple[str, ...]
    """Upstream files, concatenated in this order (one, except prometheus-operator)."""
    member: str | None = None
    """For a packaged chart (`.tgz`), the file inside the package."""

    def urls(self) -> list[str]:
        return [f"{RAW}/{self.repo}/{self.commit}/{path}" for path in self.paths]


def _file(target: str, sha256: str, source: tuple[str, str], *paths: str) -> ReferenceFile:
    return ReferenceFile(target, sha256, source[0], source[1], paths)


REFERENCE_FILES: Final = (
    _file(
        "crds/istio.yaml",
        "dcb43ff6b9af2f629b80b6a82597f5a91db259c757e66cc5353ac007da28351a",
        _ISTIO,
        "manifests/charts/base/files/crd-all.gen.yaml",
    ),
    _file(
        "charts/istio-base/values.yaml",
        "3543b89cb620ad6f8cfab3910cdf3e5d1f4af8d73d30cb73b3b36c65d3da6f56",
        _ISTIO,
        "manifests/charts/base/values.yaml",
    ),
    _file(
        "charts/istio-base/Chart.yaml",
        "a52b0f3786932dac321471db526bad1247feac170933e8d90fecb942aba7d13d",
        _ISTIO,
        "manifests/charts/base/Chart.yaml",
    ),
    _file(
        "charts/istiod/values.yaml",
        "d6b9d64100f695973a1b87a2cedfce597669807d77fd14d00149d56538dd43a1",
        _ISTIO,
        "manifests/charts/istio-control/istio-discovery/values.yaml",
    ),
    _file(
        "charts/istiod/Chart.yaml",
        "7d387c74d04462b1d63cc8d26468ef6f13434b156ee129ad6716d894658405d5",
        _ISTIO,
        "manifests/charts/istio-control/istio-discovery/Chart.yaml",
    ),
    _file(
        "charts/istio-gateway/values.yaml",
        "fa272809ac6991894a9ed0ad8c84995af0a65a1262ed040bf9b987f7ca8ca7b5",
        _ISTIO,
        "manifests/charts/gateway/values.yaml",
    ),
    _file(
        "charts/istio-gateway/values.schema.json",
        "6a58a62ea7417ed4e7dd18d25d0a674ce888a18d4b44fc832e876e2d7aa7c1f6",
        _ISTIO,
        "manifests/charts/gateway/values.schema.json",
    ),
    _file(
        "charts/istio-gateway/Chart.yaml",
        "9f69b224986606d98a193537a9becc3f3228f757205e4620d0d9b58340627f94",
        _ISTIO,
        "manifests/charts/gateway/Chart.yaml",
    ),
    _file(
        "crds/flagger.yaml",
        "8d7ad05c2d1d242c0cd4c25c5fb3ad0f75f10706da588aeeb950fe2858134630",
        _FLAGGER,
        "charts/flagger/crds/crd.yaml",
    ),
    _file(
        "charts/flagger/values.yaml",
        "fcc57720ce3593d43ddbbc30e50477d7e29c4d42b7e3aa8130c737f751ae0176",
        _FLAGGER,
        "charts/flagger/values.yaml",
    ),
    _file(
        "charts/flagger/Chart.yaml",
        "a4ac0f400a8192bd2a6740a1ec04c725bb5a7410865df497ad06ebba456e60c7",
        _FLAGGER,
        "charts/flagger/Chart.yaml",
    ),
    _file(
        "charts/flagger-loadtester/values.yaml",
        "5b137c7fb4e1f96a4ea697cc934008f78f8029bd995c6fb7fc9eef3c5548a2f0",
        _FLAGGER,
        "charts/loadtester/values.yaml",
    ),
    _file(
        "charts/flagger-loadtester/Chart.yaml",
        "a006ef07e510176262bed7dfb03e1e48b8a9184f7a9e1d274ae67310b0695d66",
        _FLAGGER,
        "charts/loadtester/Chart.yaml",
    ),
    _file(
        "crds/prometheus-operator.yaml",
        "c7ab22d536d2b6cbb2e49e6e06533cc260e074b719c46d190ebc992e5ad406bc",
        _PROMETHEUS_OPERATOR,
        f"{_PROMETHEUS_CRDS}servicemonitors.yaml",
        f"{_PROMETHEUS_CRDS}podmonitors.yaml",
        f"{_PROMETHEUS_CRDS}prometheusrules.yaml",
    ),
    _file(
        "crds/kiali.yaml",
        "56e5bb850829ca9f1f71bfc2dedb4c9f08c48e112450a093434658fff9595894",
        _KIALI_OPERATOR,
        "crd-docs/crd/kiali.io_kialis.yaml",
    ),
    ReferenceFile(
        "charts/kiali-server/values.yaml",
        "10c973f257b1501f65d0f1c7cbf50c85dc9402d27259cc051c33a8cd9c2f1fa9",
        *_KIALI_CHARTS,
        ("docs/kiali-server-2.29.0.tgz",),
        member="kiali-server/values.yaml",
    ),
    ReferenceFile(
        "charts/kiali-server/Chart.yaml",
        "10b4fa991029448f9da4dc5bc8177b8a82b33953b36fcda0512ee8b6deaf0010",
        *_KIALI_CHARTS,
        ("docs/kiali-server-2.29.0.tgz",),
        member="kiali-server/Chart.yaml",
    ),
    _file(
        "charts/jaeger/values.yaml",
        "e19209d788272bf709a976a3b333636f49d32355fe3baa849aec2bd043abf021",
        _JAEGER_CHARTS,
        "charts/jaeger/values.yaml",
    ),
    _file(
        "charts/jaeger/Chart.yaml",
        "d2e133eedc21a05408c384c1fb8aa46cf033231b032c57dec0dc37a86dba0584",
        _JAEGER_CHARTS,
        "charts/jaeger/Chart.yaml",
    ),
    _file(
        "ratelimit/example-config.yaml",
        "0b14a793a26bb459476de71867a9b4086267d6223053cb3a61d32eec4426d32f",
        _RATELIMIT,
        "examples/ratelimit/config/example.yaml",
    ),
)

Fetcher = Callable[[str], bytes]


class ChecksumError(RuntimeError):
    """A fetched file is not the one the tests were written against."""


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        data: bytes = response.read()
        return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(reference: ReferenceFile, fetch: Fetcher = _download) -> bytes:
    """The file's bytes, assembled from upstream and checked against its SHA-256."""
    parts = [fetch(url) for url in reference.urls()]
    if reference.member is None:
        data = b"".join(parts)
    else:
        with tarfile.open(fileobj=io.BytesIO(parts[0]), mode="r:gz") as archive:
            member = archive.extractfile(reference.member)
            if member is None:
                raise ChecksumError(f"{reference.target}: {reference.member} is not a file")
            data = member.read()
    if sha256(data) != reference.sha256:
        raise ChecksumError(
            f"{reference.target}: SHA-256 {sha256(data)} differs from the pinned {reference.sha256}"
        )
    return data


class DataDirError(RuntimeError):
    """Pinned data is neither present nor fetchable; the message is one line for the user."""


@dataclass(frozen=True)
class DataDir:
    """Where one kind of pinned upstream data is read from, first found wins:

    1. `$<env_var>` when set (it must then exist);
    2. `<shared>`, the `../shared/<name>` directory development machines have;
    3. `<cache>`, `.cache/<name>` in the clone, which `ensure` fills by fetching.
    """

    name: str
    env_var: str
    shared: Path
    cache: Path

    @classmethod
    def next_to(cls, project_dir: Path, name: str, env_var: str) -> DataDir:
        shared, cache = project_dir.parent / "shared" / name, project_dir / ".cache" / name
        return cls(name, env_var, shared, cache)

    def _configured(self) -> Path | None:
        value = os.environ.get(self.env_var)
        return Path(value) if value else None

    def how_to_provide(self) -> str:
        return (
            f"set {self.env_var} to a directory holding them (fill one on a machine with "
            f"network: {self.env_var}=<dir> python3 tools/fetch_reference.py)"
        )

    def resolve(self) -> Path:
        """The directory to read from; `DataDirError` (one line) if there is none."""
        configured = self._configured()
        if configured is not None:
            if not configured.is_dir():
                raise DataDirError(
                    f"{self.name} data directory {configured} from ${self.env_var} does not exist"
                )
            return configured
        for candidate in (self.shared, self.cache):
            if candidate.is_dir():
                return candidate
        raise DataDirError(
            f"{self.name} data missing: neither {self.shared} nor {self.cache} exists; run "
            f"`make reference` to fetch it, or {self.how_to_provide()}"
        )

    def target(self) -> Path:
        """Where `ensure` (and a plain fetch) writes: the configured directory, else the
        shared one when it exists, else the cache."""
        configured = self._configured()
        if configured is not None:
            return configured
        return self.shared if self.shared.is_dir() else self.cache

    def ensure(self, fetch_into: Callable[[Path], list[str]]) -> str:
        """Make sure the data is present, fetching what is missing; what happened, one line.

        `../shared/<name>` is used as it is; the configured directory and the cache get
        every missing or changed file (nothing is fetched when all checksums match).
        """
        configured = self._configured()
        if configured is None and self.shared.is_dir():
            return f"{self.name} data: {self.shared}"
        directory = self.target()
        try:
            written = fetch_into(directory)
        except (ChecksumError, OSError) as error:
            where = (
                f"{directory} (${self.env_var}) is incomplete"
                if configured is not None
                else f"{self.shared} is absent"
            )
            raise DataDirError(
                f"{self.name} data missing: {where} and fetching the pinned files into "
                f"{directory} failed ({_reason(error)}); {self.how_to_provide()}"
            ) from None
        absent = "" if configured is not None else f" ({self.shared} is absent)"
        if written:
            return (
                f"{self.name} data: fetched {len(written)} pinned files into {directory}"
                f"{absent}, checksums verified"
            )
        return f"{self.name} data: {directory}{absent}, checksums verified"


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason if reason is not None else error).replace("\n", " ")


REFERENCE: Final = DataDir.next_to(PROJECT_DIR, "reference", ENV_VAR)
"""The reference data the tests validate against."""


def default_directory() -> Path:
    """Where a plain `python tools/fetch_reference.py` writes (see `DataDir.target`)."""
    return REFERENCE.target()


def fetch_all(directory: Path, fetch: Fetcher = _download) -> list[str]:
    """Write every missing or changed reference file; return the targets written."""
    cache: dict[str, bytes] = {}

    def fetch_once(url: str) -> bytes:
        # Both kiali-server files come from the same chart package.
        if url not in cache:
            cache[url] = fetch(url)
        return cache[url]

    written = []
    for reference in REFERENCE_FILES:
        target = directory / reference.target
        if target.is_file() and sha256(target.read_bytes()) == reference.sha256:
            continue
        data = build(reference, fetch_once)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(reference.target)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--ensure"]:
        # `make test`: use what is there, fetch what is missing, one line either way.
        try:
            print(REFERENCE.ensure(fetch_all))
        except DataDirError as error:
            print(error, file=sys.stderr)
            return 2
        return 0
    if args:
        print("usage: fetch_reference.py [--ensure]", file=sys.stderr)
        return 2
    directory = default_directory()
    try:
        written = fetch_all(directory)
    except (ChecksumError, OSError) as error:
        print(f"fetch_reference: {error}", file=sys.stderr)
        return 1
    print(f"reference data in {directory}: {len(written)} fetched, all checksums match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
