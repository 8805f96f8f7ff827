"""Chart expansion: every object each Helm chart of a render creates, as Chart v4 renders it.

`expand(render)` takes the charts a `tools.render.Render` installs (`helm.yaml`) and runs
the pinned Helm 3 (`tools/install_helm.py`) on each, in parallel, the way
pulumi-kubernetes Chart v4 does: `helm template` as a fresh install (never an upgrade),
CRDs included (`--include-crds`), hooks left out (Chart v4 runs none: `--no-hooks`),
Kubernetes 1.35 with the API versions such a cluster advertises (`api_versions()`), and
the release namespace set on namespaced objects that name none, as the provider does.

Charts come from a directory of unpacked charts, one folder per `<chart>-<version>/`:
`$MESHSTACK_CHARTS_DIR`, else `../shared/charts` beside the repository (development
machines), else the project's chart cache `.tools/charts` (`python -m tools.charts fetch`
fills it from the charts' repositories). Every folder is checked against `PINS` before
it is used: the SHA-256 tree digest of the unpacked files, or for a cache entry the
SHA-256 of the package it was unpacked from. Nothing here holds chart content.

Values only known after deploy and secrets (the render's placeholders) get stand-ins of
the right shape (`stand_in`), unique per value, so the secrets check can trace where each
one ends up. Any failure (a missing folder, a checksum mismatch, a template error, a Helm
of the wrong version) raises `ChartError` with one line naming release, chart and cause.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Final

import yaml

from components.versions import ISTIO_REPOSITORY
from tools import install_helm
from tools.fetch_reference import REFERENCE, DataDirError
from tools.manifests import (
    SECRET_PLACEHOLDER,
    UNKNOWN_PLACEHOLDER,
    canonical_object,
    dump_yaml_documents,
)

# tools.verify (CRD catalog, CEL, Kubernetes schemas) is imported where Helm actually runs:
# importing it costs about 0.6 s, more than a whole render whose charts are all cached.

PROJECT_DIR: Final = Path(__file__).resolve().parents[1]
ENV_VAR: Final = "MESHSTACK_CHARTS_DIR"
CACHE_DIR: Final = PROJECT_DIR / ".tools" / "charts"
DEFAULT_LOCATION: Final = "../shared/charts"
"""The charts directory the offline render names when no override is set (relative to the
project directory, as `meshstack:chartSource.location` takes it)."""

KUBE_VERSION: Final = "1.35.0"
"""The oldest Kubernetes minor the program supports (`tools/verify/core.py`)."""

RELEASE_COMMENT: Final = "# release: "

_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML has it: the base chart's CRDs are 900 kB of YAML."""


class ChartError(RuntimeError):
    """A chart cannot be expanded; the message is one line naming release, chart and cause."""


@dataclass(frozen=True)
class PinnedChart:
    """One chart at one version: where it is published and what its files hash to."""

    folder: str
    """`<chart>-<version>`, the folder in a charts directory (`HelmChart.folder`)."""
    chart: str
    version: str
    repository: str
    files: int
    tree_sha256: str
    """`find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum` in the
    folder, as `shared/charts/SOURCES.md` records it."""
    package_sha256: str | None = None
    """SHA-256 of the published package (`index.yaml` digest), when known; a chart cache
    entry is trusted only with it."""


_FLAGGER: Final = "https://flagger.app"


def _istio_pins(version: str, digests: tuple[tuple[int, str], ...]) -> tuple[PinnedChart, ...]:
    """The `base`, `istiod` and `gateway` folders of one Istio release, in that order, each
    with its (file count, tree digest), published in Istio's chart repository."""
    names = (("istio-base", "base"), ("istiod", "istiod"), ("istio-gateway", "gateway"))
    return tuple(
        PinnedChart(f"{folder}-{version}", chart, version, ISTIO_REPOSITORY, files, digest)
        for (folder, chart), (files, digest) in zip(names, digests, strict=True)
    )


PINS: Final = (
    # 1.31.0 and 1.30.4: the Go module zips of istio.io/istio at the release commits,
    # stamped as Istio's release builder does (shared/charts/SOURCES.md); digests of the
    # folders as found, their file counts and stamps checked against SOURCES.md.
    *_istio_pins(
        "1.31.0",
        (
            (27, "ebbcd1d7853a0705c166333409741d51bdd79f605347a0cf2019bc73997d360e"),
            (56, "08088f00cf453c09eff1e767b718d73caca95551238f5990fb7cea46d9e620c6"),
            (31, "136ebeb81f2f113c4e52dc58376a584928766e1b8c1a7ad2059e4c62d97ff004"),
        ),
    ),
    *_istio_pins(
        "1.30.4",
        (
            (26, "43bd6dbe33400c45e3665c2c667a12b193c52da7e58d54d9066886a637aae581"),
            (54, "ccce85c8f56efc7290b6cc0cd57aac4d7a0bdd2cad0d1a9c20d21b370cd567c5"),
            (30, "28fde29419bcd19b1c97667c5bb4945146f8c564f9233c5441e249697dc59885"),
        ),
    ),
    *_istio_pins(
        "1.30.3",
        (
            (26, "30aead703e6c99b9b163761b975dd733bf5677d7870cb224075c17633d31502e"),
            (54, "d3ab18f66fcc12aa83dd75c1c0c1c30a345d5e2f5c484abe6f18fe9a1d27af22"),
            (30, "43f674555410b53636f2f80450ebb9f3e6cf55105cf4f90147ee72e8f6a8caa2"),
        ),
    ),
    *_istio_pins(
        "1.30.2",
        (
            (26, "ab7e482880ef67f7d404c670ce4d42a49ad6a2a7af4d7122fd46bfd861504133"),
            (54, "5dd4e1c63d09a9427e2242900726f0801175089963943be32e967fd96bd41c6a"),
            (30, "98f194cad77b11f3b779fb75892763b810733cb91bf5367b8441b53316e7dcd1"),
        ),
    ),
    PinnedChart(
        "flagger-1.44.0",
        "flagger",
        "1.44.0",
        _FLAGGER,
        19,
        "0442c86d93e8815fa0d6e32a83edbd34588b4d23afc3b5593a1d17edc56f4338",
    ),
    PinnedChart(
        "flagger-loadtester-0.38.0",
        "loadtester",
        "0.38.0",
        _FLAGGER,
        14,
        "e35744aa11a9239fa8a2cab9accc17b757c7c3276cf30d27c6c56b069f8f7c9a",
    ),
    PinnedChart(
        "jaeger-4.11.1",
        "jaeger",
        "4.11.1",
        "https://jaegertracing.github.io/helm-charts",
        52,
        "584865bfcbb23ee8d7883408913a21b15012163297b2305d1bf7f15d6e89fb9e",
        package_sha256="120aad01641b88fd73fb097cd63af94aac4e9d49115877f5f63b52b86b512180",
    ),
    PinnedChart(
        "kiali-server-2.29.0",
        "kiali-server",
        "2.29.0",
        "https://kiali.org/helm-charts",
        31,
        "730c213e00744420acac52393adc3c3ea174852594bf6634162076db37d477f1",
        package_sha256="77b88e6bcc657b21c1af595cb87debd707d007b50e6d6bb49d7ffda1331dc749",
    ),
)


def pin_for_folder(folder: str) -> PinnedChart | None:
    return next((p for p in PINS if p.folder == folder), None)


def published_chart(entry: Mapping[str, Any]) -> str:
    """A `helm.yaml` entry's chart as published (`istiod`, `kiali-server`), whatever the
    stack's chart source: the name itself (`upstream`), the last segment of an OCI reference
    (`upstream-oci`, `oci`), or the pinned chart of a local folder (`directory`)."""
    chart = str(entry["chart"])
    if chart.startswith("oci://"):
        return chart.rsplit("/", 1)[-1]
    if "/" in chart:
        folder = PurePosixPath(chart).name
        pin = pin_for_folder(folder)
        return pin.chart if pin else folder
    return chart


def pin_for(chart: str, version: str, repository: str = "") -> PinnedChart | None:
    """The pin of a published chart (`repository` empty: any repository, e.g. a mirror)."""
    return next(
        (
            p
            for p in PINS
            if (p.chart, p.version) == (chart, version)
            and (not repository or p.repository == repository)
        ),
        None,
    )


# --- chart directories and their checksums ------------------------------------------------


def charts_dir() -> Path:
    """The unpacked charts: `$MESHSTACK_CHARTS_DIR`, `../shared/charts`, or the cache."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    shared = PROJECT_DIR / DEFAULT_LOCATION
    return shared if shared.is_dir() else CACHE_DIR


def directory_source(project_dir: Path = PROJECT_DIR) -> dict[str, str]:
    """`meshstack:chartSource` of the offline render: `charts_dir()` in directory mode.

    The location is relative to `project_dir` (Chart v4 resolves a local chart from the
    program's directory), so renders name no machine path; an absolute
    `$MESHSTACK_CHARTS_DIR` stays absolute.
    """
    override = os.environ.get(ENV_VAR)
    if override and Path(override).is_absolute():
        location = override
    else:
        location = os.path.relpath(charts_dir().absolute(), project_dir.absolute())
    return {"kind": "directory", "location": Path(location).as_posix()}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_digest(directory: Path) -> tuple[int, str]:
    """(files, digest) of a folder, the digest `sha256sum` gives over the sorted list."""
    files = sorted(
        (p for p in directory.rglob("*") if p.is_file()),
        key=lambda p: f"./{p.relative_to(directory).as_posix()}".encode(),
    )
    lines = "".join(
        f"{sha256(p.read_bytes())}  ./{p.relative_to(directory).as_posix()}\n" for p in files
    )
    return len(files), sha256(lines.encode())


def _package_file(directory: Path) -> Path:
    return directory.with_name(f"{directory.name}.tgz")


def verify_chart_dir(directory: Path, pin: PinnedChart) -> None:
    """Raise `ChartError` unless `directory` holds exactly the pinned chart.

    A cache entry (`<folder>.tgz` beside it) is checked by the package's SHA-256 and must
    be that package's content; any other folder by its tree digest.
    """
    if not directory.is_dir():
        raise ChartError(f"chart directory {directory} does not exist")
    package = _package_file(directory)
    if package.is_file():
        digest = sha256(package.read_bytes())
        if digest != pin.package_sha256:
            raise ChartError(f"package {package.name}: SHA-256 {digest} is not the pinned one")
        with tempfile.TemporaryDirectory() as scratch:
            unpacked = unpack(package.read_bytes(), Path(scratch), pin)
            if tree_digest(unpacked) != tree_digest(directory):
                raise ChartError(f"{directory} differs from the package it was unpacked from")
        return
    files, digest = tree_digest(directory)
    if (files, digest) != (pin.files, pin.tree_sha256):
        raise ChartError(
            f"{directory}: {files} files with tree SHA-256 {digest[:16]}…, pinned "
            f"{pin.files} files {pin.tree_sha256[:16]}…"
        )


@cache
def _verified(directory: Path, pin: PinnedChart) -> None:
    verify_chart_dir(directory, pin)


# --- the chart cache (normal machines) ----------------------------------------------------

Fetcher = Callable[[str], bytes]


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        data: bytes = response.read()
        return data


def unpack(package: bytes, target: Path, pin: PinnedChart) -> Path:
    """Unpack a chart package (`<chart>/...` inside) into `target/<folder>`."""
    destination = target / pin.folder
    with tarfile.open(fileobj=io.BytesIO(package), mode="r:gz") as archive:
        for member in archive.getmembers():
            top, _, rest = member.name.partition("/")
            if top != pin.chart or not rest or not member.isfile():
                continue
            if PurePosixPath(rest).is_absolute() or ".." in PurePosixPath(rest).parts:
                raise ChartError(f"package of {pin.folder}: unsafe path {member.name}")
            source = archive.extractfile(member)
            if source is None:
                continue
            path = destination / rest
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(source.read())
    if not (destination / "Chart.yaml").is_file():
        raise ChartError(f"package of {pin.folder} has no {pin.chart}/Chart.yaml")
    return destination


def package_url(index: Mapping[str, Any], pin: PinnedChart) -> str:
    """The package URL of the pinned version in a repository's `index.yaml`."""
    for entry in (index.get("entries") or {}).get(pin.chart) or []:
        if str(entry.get("version")) == pin.version and entry.get("urls"):
            url = str(entry["urls"][0])
            return url if "://" in url else f"{pin.repository.rstrip('/')}/{url}"
    raise ChartError(f"{pin.repository} lists no {pin.chart} {pin.version}")


def fill_cache(
    cache_dir: Path = CACHE_DIR, pins: Iterable[PinnedChart] = PINS, fetch: Fetcher = _download
) -> list[str]:
    """Download, check and unpack every pinned chart missing from `cache_dir`."""
    written = []
    for pin in pins:
        directory = cache_dir / pin.folder
        if directory.is_dir() and _package_file(directory).is_file():
            verify_chart_dir(directory, pin)
            continue
        if pin.package_sha256 is None:
            raise ChartError(
                f"{pin.folder}: no pinned package SHA-256; record the digest of "
                f"{pin.repository} {pin.chart} {pin.version} in tools/charts.py PINS first"
            )
        index = yaml.safe_load(fetch(f"{pin.repository.rstrip('/')}/index.yaml")) or {}
        package = fetch(package_url(index, pin))
        if sha256(package) != pin.package_sha256:
            raise ChartError(
                f"{pin.folder}: package SHA-256 {sha256(package)} is not the pinned one"
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
            unpacked = unpack(package, Path(scratch), pin)
            _package_file(directory).write_bytes(package)
            unpacked.replace(directory)
        written.append(pin.folder)
    return written


# --- what Helm is told about the cluster --------------------------------------------------


def _crd_api_versions() -> list[str]:
    from tools.verify.crd import default_catalog  # noqa: PLC0415 (heavy, see the imports)

    # Kiali's CRD is reference data for the chart's values; its operator is not installed.
    return sorted(
        f"{api}/{kind}" for api, kind in default_catalog().versions if not api.startswith("kiali.")
    )


@cache
def api_versions() -> tuple[str, ...]:
    """What a Kubernetes 1.35 cluster running this program advertises: every GA built-in
    `group/version` and `group/version/Kind` (from the 1.35 OpenAPI), plus the CRDs it has:
    the Prometheus Operator's (`monitoring.coreos.com/v1`, a prerequisite) and those of
    Istio and Flagger (installed by the charts themselves)."""
    import kubernetes_validate.utils as kv_utils  # noqa: PLC0415 (heavy, see the imports)

    definitions = kv_utils.schema_contents(
        f"kubernetes-json-schema/v{KUBE_VERSION}-local-strict/_definitions.json", KUBE_VERSION
    )["$defs"]
    found: set[str] = set()
    for name, schema in definitions.items():
        if not name.startswith(("io.k8s.api.", "io.k8s.apiextensions-apiserver.")):
            continue
        if "metadata" not in (schema.get("properties") or {}):
            continue
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            version, kind = gvk["version"], gvk["kind"]
            if "alpha" in version or "beta" in version or kind.endswith("List"):
                continue
            group_version = f"{gvk['group']}/{version}" if gvk["group"] else version
            found |= {group_version, f"{group_version}/{kind}"}
    for api_kind in _crd_api_versions():
        found |= {api_kind, api_kind.rsplit("/", 1)[0]}
    return tuple(sorted(found))


# --- stand-ins for values only known at deploy time ----------------------------------------

_STAND_IN_LENGTH: Final = {"signing_key": 32}
"""Keys whose stand-in needs a particular length (Kiali's HMAC key: 32 characters)."""


def stand_in(release: str, path: tuple[str, ...], placeholder: str) -> str:
    """A plausible value for a placeholder at `path`: lowercase alphanumerics (valid in
    names, labels, keys and URLs), unique per release and path, stable between runs."""
    length = _STAND_IN_LENGTH.get(path[-1] if path else "", 24)
    seed = f"{placeholder}\0{release}\0{'.'.join(path)}".encode()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    digest = hashlib.sha256(seed).digest() * 2
    prefix = "s" if placeholder == SECRET_PLACEHOLDER else "u"
    return prefix + "".join(alphabet[b % len(alphabet)] for b in digest[: length - 1])


def with_stand_ins(
    release: str, value: Any, path: tuple[str, ...] = ()
) -> tuple[Any, dict[str, str]]:
    """`value` with placeholders replaced; also {stand-in: placeholder kind} for secrets."""
    secrets: dict[str, str] = {}

    def walk(item: Any, where: tuple[str, ...]) -> Any:
        if item in (UNKNOWN_PLACEHOLDER, SECRET_PLACEHOLDER):
            replacement = stand_in(release, where, item)
            if item == SECRET_PLACEHOLDER:
                secrets[replacement] = ".".join(where)
            return replacement
        if isinstance(item, dict):
            return {k: walk(v, (*where, str(k))) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, (*where, str(i))) for i, v in enumerate(item)]
        return item

    return walk(value, path), secrets


# --- rendering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """One Helm install of a render (a `helm.yaml` document)."""

    name: str
    chart: str
    version: str
    repository: str
    namespace: str
    values: dict[str, Any]

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Release:
        return cls(
            name=str(entry["name"]),
            chart=str(entry["chart"]),
            version=str(entry.get("version") or ""),
            repository=str(entry.get("repository") or ""),
            namespace=str(entry["namespace"]),
            values=dict(entry.get("values") or {}),
        )

    @property
    def label(self) -> str:
        return f"release {self.name} (chart {self.chart} {self.version})".replace(" )", ")")


def locate(release: Release, project_dir: Path = PROJECT_DIR) -> tuple[Path, PinnedChart]:
    """The verified chart folder of a release, wherever its chart source points."""
    chart = release.chart
    if chart.startswith("oci://"):
        pin = pin_for(chart.rsplit("/", 1)[-1], release.version)
        directory = charts_dir() / pin.folder if pin else None
    elif release.repository or "/" not in chart:
        pin = pin_for(chart, release.version, release.repository)
        directory = charts_dir() / pin.folder if pin else None
    else:  # a local chart directory, as Chart v4 takes it (relative to the project)
        directory = project_dir / chart
        pin = pin_for_folder(directory.name)
    if pin is None or directory is None:
        raise ChartError(f"{release.label}: no pinned chart for it in tools/charts.py PINS")
    try:
        _verified(directory, pin)
    except ChartError as error:
        raise ChartError(f"{release.label}: {error}") from None
    return directory, pin


def _namespaced(kind: str, api_version: str) -> bool:
    from tools.verify.core import CLUSTER_SCOPED_KINDS  # noqa: PLC0415 (heavy, see the imports)
    from tools.verify.crd import default_catalog  # noqa: PLC0415

    if kind in CLUSTER_SCOPED_KINDS or kind in {"ClusterRole", "ClusterRoleBinding"}:
        return False
    crd = default_catalog().versions.get((api_version, kind))
    return crd.namespaced if crd is not None else True


def helm_template(
    helm: Path, release: Release, directory: Path, values: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """`helm template` as Chart v4 renders: the objects, hooks left out, namespace set."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        json.dump(values, handle)
        values_file = handle.name
    command = [str(helm), "template", release.name, str(directory)]
    command += ["--namespace", release.namespace, "--values", values_file]
    command += ["--include-crds", "--no-hooks", "--kube-version", KUBE_VERSION]
    command += ["--api-versions", ",".join(api_versions())]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        Path(values_file).unlink()
    if result.returncode != 0:
        cause = " ".join(result.stderr.split()) or f"helm exited with {result.returncode}"
        raise ChartError(f"{release.label}: {cause}")
    objects = []
    try:
        documents = list(yaml.load_all(result.stdout, Loader=_LOADER))
    except yaml.YAMLError as error:
        raise ChartError(f"{release.label}: rendered YAML does not parse: {error}") from None
    for document in documents:
        if not isinstance(document, dict) or not document:
            continue
        metadata = document.setdefault("metadata", {}) or {}
        if "helm.sh/hook" in (metadata.get("annotations") or {}):
            continue  # Chart v4 skips hooks (`--no-hooks` already leaves out most of them)
        kind, api_version = str(document.get("kind", "")), str(document.get("apiVersion", ""))
        if _namespaced(kind, api_version) and not metadata.get("namespace"):
            metadata["namespace"] = release.namespace
        objects.append(document)
    return objects


@dataclass
class ChartObjects:
    """The objects of one release, and where its secret values went in."""

    release: Release
    folder: str
    objects: list[dict[str, Any]]
    values: dict[str, Any]
    """The values Helm rendered with (placeholders replaced)."""
    secret_stand_ins: dict[str, str] = field(default_factory=dict)
    """Stand-in → value path, for values the program passes as secrets."""


def render_release(
    release: Release,
    helm: Path,
    project_dir: Path = PROJECT_DIR,
    cache_dir: Path | None = None,
) -> ChartObjects:
    """The release's objects; with `cache_dir`, read from and written to the expansion cache."""
    directory, pin = locate(release, project_dir)
    values, secrets = with_stand_ins(release.name, release.values)
    key = None
    if cache_dir is not None:
        environment = expansion_environment()
        if environment is not None:
            key = expansion_key(release, pin, values, helm_identity(helm), environment)
            cached = read_cached_expansion(cache_dir, key)
            if cached is not None:
                return ChartObjects(release, pin.folder, cached, values, secrets)
    objects = [canonical_object(o) for o in helm_template(helm, release, directory, values)]
    objects.sort(key=object_key)
    if cache_dir is not None and key is not None:
        write_cached_expansion(cache_dir, key, objects)
    return ChartObjects(release, pin.folder, objects, values, secrets)


# --- the expansion cache ------------------------------------------------------------------
#
# `helm template` of the 9 charts of a region is most of a render that changed nothing in
# them (3-5 s of Helm processes on 2 cores against about 1 s for the program). The cache
# keeps each release's final objects under a key of everything they are a function of, so
# a hit is exactly what Helm would produce: a changed value, chart pin, release name or
# namespace, Helm binary, Kubernetes version, CRD reference data (the advertised API
# versions and which kinds are namespaced) or the code that turns Helm's output into
# objects is a different key. Errors are never cached.

EXPANSION_CACHE_ENV: Final = "MESHSTACK_EXPANSION_CACHE"
"""A directory for the expansion cache, or `off`; default `EXPANSION_CACHE_DIR`."""
EXPANSION_CACHE_DIR: Final = PROJECT_DIR / ".cache" / "expanded-charts"
EXPANSION_CACHE_FORMAT: Final = 1
"""Bumped when an entry's layout changes."""
_SHAPING_SOURCES: Final = (
    Path(__file__),  # helm_template's flags and namespace rule, this cache's layout
    PROJECT_DIR / "tools" / "manifests.py",  # canonical_object
    PROJECT_DIR / "tools" / "verify" / "core.py",  # CLUSTER_SCOPED_KINDS
)


def expansion_cache_dir() -> Path | None:
    """Where `make render` keeps expanded charts (`$MESHSTACK_EXPANSION_CACHE`; `off`: none)."""
    value = os.environ.get(EXPANSION_CACHE_ENV, "")
    if value == "off":
        return None
    return Path(value) if value else EXPANSION_CACHE_DIR


def helm_identity(helm: Path) -> str:
    """The Helm binary as a cache key part: its real path, size and modification time (a
    rebuilt or replaced binary is another identity; its version was checked already)."""
    real = helm.resolve()
    status = real.stat()
    return f"{real}:{status.st_size}:{status.st_mtime_ns}"


@cache
def expansion_environment() -> str | None:
    """Digest of what every release's objects depend on besides the release itself: the
    Kubernetes version, the kubernetes-validate schemas (`api_versions`), the CRD reference
    files (`api_versions`, `_namespaced`) and the code that shapes Helm's output. None when
    the reference data is missing: no key, so the render fails as it would without a cache."""
    try:
        reference = REFERENCE.resolve()
    except DataDirError:
        return None
    digest = hashlib.sha256()
    digest.update(f"{EXPANSION_CACHE_FORMAT}\0{KUBE_VERSION}\0".encode())
    digest.update(importlib.metadata.version("kubernetes-validate").encode() + b"\0")
    for path in (*_SHAPING_SOURCES, *sorted((reference / "crds").glob("*"))):
        digest.update(f"{path.name}\0".encode() + sha256(path.read_bytes()).encode())
    return digest.hexdigest()


def expansion_key(
    release: Release,
    pin: PinnedChart,
    values: Mapping[str, Any],
    helm: str,
    environment: str,
) -> str:
    """The cache key of one release's objects: the chart by its pin (the folder is verified
    against it before use), the release name and namespace, the values Helm receives
    (stand-ins included), the Helm binary (`helm_identity`) and `expansion_environment()`."""
    material = {
        "chart": [pin.folder, pin.chart, pin.version, pin.files, pin.tree_sha256],
        "package": pin.package_sha256,
        "release": release.name,
        "namespace": release.namespace,
        "values": values,
        "helm": helm,
        "environment": environment,
    }
    return sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode())


def _entry(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}.json"


def read_cached_expansion(cache_dir: Path, key: str) -> list[dict[str, Any]] | None:
    """The cached objects under `key`; None when absent or unreadable (then Helm runs)."""
    try:
        entry = json.loads(_entry(cache_dir, key).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    objects = entry.get("objects")
    return objects if isinstance(objects, list) else None


def write_cached_expansion(cache_dir: Path, key: str, objects: list[dict[str, Any]]) -> None:
    """Store `objects` under `key`, atomically (a concurrent render never reads half an
    entry). Objects JSON cannot carry exactly (a YAML timestamp, a non-string key) are not
    stored, so a hit always equals what Helm gave; a cache that cannot be written is only a
    slower next render."""
    try:
        text = json.dumps({"key": key, "objects": objects}, separators=(",", ":"))
    except (TypeError, ValueError):
        return
    if json.loads(text)["objects"] != objects:
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=cache_dir, prefix=".entry-", suffix=".tmp", delete=False
        ) as handle:
            handle.write(text)
        Path(handle.name).replace(_entry(cache_dir, key))
    except OSError:
        return


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    metadata = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion", "")),
        str(obj.get("kind", "")),
        str(metadata.get("namespace", "")),
        str(metadata.get("name", "")),
    )


def helm_binary() -> Path:
    """The pinned Helm (`$MESHSTACK_HELM` or `.tools/helm-<version>/helm`), version-checked."""
    override = os.environ.get(install_helm.ENV_VAR)
    helm = Path(override) if override else install_helm.binary_path()
    if not helm.is_file():
        raise ChartError(f"no Helm binary at {helm}: run `make helm`")
    try:
        install_helm.check_version(helm)
    except install_helm.HelmInstallError as error:
        raise ChartError(str(error)) from None
    return helm


def expand(
    releases: Iterable[Mapping[str, Any]],
    *,
    helm: Path | None = None,
    project_dir: Path = PROJECT_DIR,
    workers: int | None = None,
    cache_dir: Path | None = None,
) -> list[ChartObjects]:
    """Every release's objects, rendered in parallel; in (namespace, release) order.

    With `cache_dir` (`expansion_cache_dir()`), releases already expanded with the same
    inputs are read from the expansion cache instead of running Helm again."""
    wanted = sorted((Release.of(r) for r in releases), key=lambda r: (r.namespace, r.name))
    if helm is None:
        try:
            helm = helm_binary()
        except ChartError as error:
            # Every release would fail alike; the first one is named, as for any failure.
            raise ChartError(f"{wanted[0].label}: {error}" if wanted else str(error)) from None
    names = [r.name for r in wanted]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ChartError(f"release {duplicates[0]}: installed twice; release names must differ")
    binary = helm
    with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda r: render_release(r, binary, project_dir, cache_dir), wanted))


# --- charts.yaml --------------------------------------------------------------------------


def dump_charts(expanded: Iterable[ChartObjects]) -> str:
    """`charts.yaml`: every object, each document preceded by `# release: <name>`."""
    parts = []
    for chart in expanded:
        for obj in chart.objects:
            parts.append(f"{RELEASE_COMMENT}{chart.release.name}\n{dump_yaml_documents([obj])}")
    return "".join(parts)


def load_charts(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(release, object) pairs of a `charts.yaml`."""
    pairs: list[tuple[str, dict[str, Any]]] = []
    release = ""
    chunk: list[str] = []

    def flush() -> None:
        body = "".join(chunk)  # not stripped: a `|+` block keeps its trailing newlines
        if body.strip() not in ("", "---"):
            pairs.append((release, yaml.load(body, Loader=_LOADER)))

    for line in text.splitlines(keepends=True):
        if line.startswith(RELEASE_COMMENT):
            flush()
            chunk = []
            release = line[len(RELEASE_COMMENT) :].strip()
        else:
            chunk.append(line)
    flush()
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chart sources: verify or fill the chart cache.")
    parser.add_argument("command", choices=["verify", "fetch"])
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            written = fill_cache()
            print(f"chart cache {CACHE_DIR}: {len(written)} fetched, all checksums match")
            return 0
        root = charts_dir()
        for pin in PINS:
            verify_chart_dir(root / pin.folder, pin)
        print(f"charts in {root}: {len(PINS)} folders, all checksums match")
    except (ChartError, OSError) as error:
        print(f"charts: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
