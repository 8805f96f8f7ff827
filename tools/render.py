"""Offline render of a stack: run the real program under the Pulumi SDK's mock runtime.

`python -m tools.render STACK` evaluates `Pulumi.STACK.yaml` exactly as `pulumi preview`
would run `__main__.py` (same settings, same components), but against
`pulumi.runtime.set_mocks` instead of an engine: no CLI, no cluster, no network. It
writes to `build/STACK/`:

- `manifests.yaml`: every Kubernetes object the program registers itself, sorted by
  (apiVersion, kind, namespace, name). Objects inside Helm charts are rendered by Helm at
  deploy time and are described by `helm.yaml` instead;
- `helm.yaml`: one document per Helm chart: name, chart, version, repository, namespace,
  values;
- `resources.json`: every Pulumi resource with urn, type, name, parent, dependencies,
  provider, protect, retain_on_delete and read (for a read of an existing object, not managed,
  the ID it reads);
- `outputs.json`: the stack outputs;
- `summary.md`: what the stack deploys per area and per service (`tools/summary.py`),
  also printed;
- `charts.yaml`: every object the Helm charts create, rendered by the pinned Helm as
  Chart v4 renders them (`tools/charts.py`), each document preceded by
  `# release: <release name>`. For it the program runs with
  `meshstack:chartSource = {kind: directory, location: <charts directory>}`, so
  `helm.yaml` names the local chart folders.

Values only known after deploy are written as `UNKNOWN_PLACEHOLDER`, secrets as
`SECRET_PLACEHOLDER`. A settings error, or a YAML syntax error in the stack file (named
with its line and column), exits with status 2, prints the one-line message and writes
nothing.

The mock runtime is the run of a fixed organization, `OFFLINE_ORGANIZATION`
("organization", as on a self-managed backend), and of the project named in Pulumi.yaml;
`pulumi.get_organization()` in the program returns it. The program runs with
`OFFLINE_RENDER = True`, so it reads nothing from the environment or the git checkout:
alert runbook links use `OFFLINE_RUNBOOK_BASE_URL` unless the stack file sets
`alerts.runbookBaseUrl` (components/run_context.py).

`pulumi.StackReference`s (a spoke reading the observability hub) resolve from
`offline/stack-references.yaml` (`STACK_REFERENCES_FILE`), keyed by stack name, which holds
the referenced stacks' outputs as their own renders write them: a spoke's
`hubStack: us-east-1` references `organization/<project>/us-east-1`, found under
`us-east-1:`. A reference to a stack it does not list stops the render.
"""

from __future__ import annotations

import argparse
import gc
import json
import runpy
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import resource as sdk_resource
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.istio import history
from components.run_context import OFFLINE_ORGANIZATION
from components.settings import CONFIG_NAMESPACE, SettingsError, load_settings
from tools import charts, summary
from tools.manifests import (
    SECRET_PLACEHOLDER,
    UNKNOWN_PLACEHOLDER,
    canonical,
    canonical_object,
    dump_yaml_documents,
)
from tools.stacks import (
    StackFileError,
    invalid_settings_message,
    read_stack_file,
    read_yaml_file,
    settings_error_lines,
    stack_file,
    stack_names,
)

PROJECT_DIR: Final = Path(__file__).resolve().parents[1]


# Sentinels of Pulumi's wire format (sdk/python/lib/pulumi/runtime/rpc.py).
_SIG_KEY: Final = "4dabf18193072939515e22adb298388d"
_SECRET_SIG: Final = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG: Final = "5cf8f73096256a8f31e491e813e4eb8e"
_OUTPUT_SIG: Final = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
_UNKNOWN: Final = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

STACK_REFERENCES_FILE: Final = Path("offline") / "stack-references.yaml"
"""Outputs of other stacks for offline renders: `{<stack>: {<output>: value}}`, the stacks
of `OFFLINE_ORGANIZATION` and this project."""

HELM_CHART_TYPE: Final = "kubernetes:helm.sh/v4:Chart"
STACK_REFERENCE_TYPE: Final = "pulumi:pulumi:StackReference"
READ_STACK_OUTPUTS: Final = "pulumi:pulumi:readStackOutputs"
"""The builtin function a program calls for a stack's last outputs (its own, in `__main__`)."""


class RenderError(Exception):
    """The stack cannot be rendered; the message is one line for the user."""


def _plain(value: Any) -> Any:
    """Wire-format value → plain data, with secrets and unknowns made visible."""
    if isinstance(value, str):
        return UNKNOWN_PLACEHOLDER if value == _UNKNOWN else value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        sig = value.get(_SIG_KEY)
        if sig == _SECRET_SIG:
            return SECRET_PLACEHOLDER
        if sig == _RESOURCE_SIG:
            return value.get("urn", UNKNOWN_PLACEHOLDER)
        if sig == _OUTPUT_SIG:
            if value.get("secret"):
                return SECRET_PLACEHOLDER
            return _plain(value["value"]) if "value" in value else UNKNOWN_PLACEHOLDER
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass
class Registration:
    """One resource as the engine would have received it."""

    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    dependencies: list[str]
    provider: str
    protect: bool
    retain_on_delete: bool
    inputs: dict[str, Any] = field(repr=False)
    read: str | None = None
    """For a read of something that exists (`<Resource>.get`, a stack reference), not
    managed: the ID read (`UNKNOWN_PLACEHOLDER` while it is unknown, when the engine skips
    the read); None for a registration."""


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, also keeping what each registration asked of the engine."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def _record(
        self,
        request: Any,
        urn: str,
        properties: Any,
        *,
        custom: bool,
        protect: bool,
        retain: bool,
        read: str | None = None,
    ) -> None:
        inputs = json_format.MessageToDict(properties, preserving_proto_field_name=True)
        self.registrations.append(
            Registration(
                urn=urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=custom,
                dependencies=sorted(set(request.dependencies)),
                provider=request.provider.rsplit("::", 1)[0] if request.provider else "",
                protect=protect,
                retain_on_delete=retain,
                inputs=_plain(inputs),
                read=read,
            )
        )

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        """Reads (stack references, the ingress Service) are recorded too, with the ID they
        read, so renders show what the stack reads and when."""
        response = super().ReadResource(request)  # type: ignore[no-untyped-call]
        self._record(
            request,
            response.urn,
            request.properties,
            custom=True,
            protect=False,
            retain=False,
            read=_plain(request.id),
        )
        return response

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            self._record(
                request,
                response.urn,
                request.object,
                custom=bool(request.custom),
                protect=bool(request.protect),
                retain=bool(request.retainOnDelete),
            )
        return response


KUBERNETES_TYPE_PREFIX: Final = "kubernetes:"
ECHOED_OBJECT_FIELDS: tuple[str, ...] | None = ("apiVersion", "kind", "metadata")
"""The fields of a Kubernetes object echoed back as its outputs: what the program reads of
the objects it registers (names, namespaces, labels). A first preview would echo every
input; the spec's copy, serialized back and forth by the SDK for each of thousands of
objects, was a fifth of the render of 400 services, and a test renders every fixture both
ways and finds them equal (None: echo every input)."""


class RenderMocks(pulumi_mocks.Mocks):
    """Echo inputs as outputs (a Kubernetes object's `ECHOED_OBJECT_FIELDS`); leave
    everything else unknown, as a first preview does.

    Stack references resolve from `stack_references`, so stacks that read another stack's
    outputs render without a backend.
    """

    def __init__(self, stack_references: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.stack_references = dict(stack_references or {})

    def new_resource(
        self, args: pulumi_mocks.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        if args.typ == STACK_REFERENCE_TYPE:
            name = str(args.inputs.get("name", args.name))
            if name not in self.stack_references:
                raise RenderError(f"stack reference {name!r} has no offline outputs file")
            outputs = dict(self.stack_references[name])
            return name, {"name": name, "outputs": outputs, "secretOutputNames": []}
        if args.typ == HELM_CHART_TYPE:
            # The chart's rendered objects exist only after Helm runs at deploy time.
            return None, {}
        resource_id = f"{args.name}-id" if args.custom else None
        fields = ECHOED_OBJECT_FIELDS
        if fields is not None and args.custom and args.typ.startswith(KUBERNETES_TYPE_PREFIX):
            return resource_id, {k: args.inputs[k] for k in fields if k in args.inputs}
        return resource_id, dict(args.inputs)

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == READ_STACK_OUTPUTS:
            # The program reads its own last outputs (`__main__.py`): from the offline
            # outputs file when it has the stack, else none, as before a first deployment.
            name = str(args.args.get("name", ""))
            outputs = dict(self.stack_references.get(name, {}))
            return {"name": name, "outputs": outputs, "secretOutputNames": []}, []
        return {}, []


# --- stack config ------------------------------------------------------------------------


def _encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def load_stack_config(
    stack: str, project_dir: Path = PROJECT_DIR, *, stack_dir: Path | None = None
) -> tuple[dict[str, str], list[str]]:
    """Config as the CLI hands it to the program: project defaults, then the stack file.

    The stack file is `Pulumi.<stack>.yaml` in `stack_dir` (default: next to Pulumi.yaml);
    the test fixtures (tests/fixtures/) are stack files of this project kept elsewhere, so
    that stack discovery (tools/stacks.py) never sees them.
    """
    project = read_yaml_file(project_dir / "Pulumi.yaml")
    path = stack_file(stack, stack_dir or project_dir)
    if not path.is_file():
        where = "next to Pulumi.yaml" if stack_dir is None else f"in {stack_dir}"
        known = ", ".join(stack_names(stack_dir or project_dir)) or "none"
        raise RenderError(f"no stack file {path.name} {where}; the stacks are: {known}")
    namespace = project["name"]
    config: dict[str, str] = {}
    for key, declaration in (project.get("config") or {}).items():
        full_key = key if ":" in key else f"{namespace}:{key}"
        if isinstance(declaration, dict):
            if "default" in declaration:
                config[full_key] = _encode(declaration["default"])
            elif "value" in declaration:
                config[full_key] = _encode(declaration["value"])
        else:
            config[full_key] = _encode(declaration)
    secret_keys: list[str] = []
    for key, value in read_stack_file(path).items():
        full_key = key if ":" in key else f"{namespace}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[full_key] = SECRET_PLACEHOLDER
            secret_keys.append(full_key)
        else:
            config[full_key] = _encode(value)
    return config, secret_keys


# --- running the program -------------------------------------------------------------------


@dataclass
class Render:
    """Everything one offline run of the program produced."""

    stack: str
    registrations: list[Registration]
    outputs: dict[str, Any]

    def kubernetes_objects(self) -> list[dict[str, Any]]:
        """Kubernetes objects the program registers itself, in deterministic order."""
        objects = [
            canonical_object(r.inputs)
            for r in self.registrations
            if r.custom and not r.read and r.type.startswith("kubernetes:") and "kind" in r.inputs
        ]
        return sorted(objects, key=_object_sort_key)

    def _by_urn(self) -> dict[str, Registration]:
        # Built once per registration count: area_of runs for every object, and a map per
        # call made the summary of 400 services quadratic.
        cached = self.__dict__.get("_urn_index")
        if cached is None or len(cached) != len(self.registrations):
            cached = {r.urn: r for r in self.registrations}
            self.__dict__["_urn_index"] = cached
        return cached

    def area_of(self, registration: Registration) -> str:
        """The area a resource belongs to: the `<area>` of the nearest `meshstack:<area>:`
        component above it (`region` for what region.py registers itself)."""
        by_urn = self._by_urn()
        current: Registration | None = registration
        while current is not None:
            parts = current.type.split(":")
            if parts[0] == "meshstack" and len(parts) == 3 and parts[1] != "region":
                return parts[1]
            current = by_urn.get(current.parent)
        return "region"

    def objects_by_area(self) -> list[tuple[str, dict[str, Any]]]:
        """(area, object) of every Kubernetes object the program registers itself."""
        return sorted(
            (
                (self.area_of(r), canonical_object(r.inputs))
                for r in self.registrations
                if r.custom and r.type.startswith("kubernetes:") and "kind" in r.inputs
            ),
            key=lambda pair: _object_sort_key(pair[1]),
        )

    def chart_areas(self) -> dict[str, str]:
        """Release name → area of each Helm chart."""
        return {
            str(r.inputs.get("name", r.name)): self.area_of(r)
            for r in self.registrations
            if r.type == HELM_CHART_TYPE
        }

    def hub_stack(self) -> str | None:
        """The stack a spoke reads its observability hub from (None in a hub)."""
        names = [
            str(r.inputs.get("name", r.name)).rsplit("/", 1)[-1]
            for r in self.registrations
            if r.type == STACK_REFERENCE_TYPE
        ]
        return names[0] if names else None

    def helm_charts(self) -> list[dict[str, Any]]:
        """One entry per Helm chart, sorted by namespace then release name.

        Install order is not a property of this list: it is expressed by each chart's
        dependencies in resources.json.
        """
        charts = []
        for r in self.registrations:
            if r.type != HELM_CHART_TYPE:
                continue
            repository = (r.inputs.get("repositoryOpts") or {}).get("repo", "")
            charts.append(
                {
                    "name": r.inputs.get("name", r.name),
                    "chart": r.inputs.get("chart"),
                    "version": r.inputs.get("version"),
                    "repository": repository,
                    "namespace": r.inputs.get("namespace"),
                    "values": canonical(r.inputs.get("values", {})),
                }
            )
        return sorted(charts, key=lambda c: (str(c["namespace"]), str(c["name"])))

    def resources(self) -> list[dict[str, Any]]:
        """Every Pulumi resource, without its inputs, sorted by URN.

        Registration order depends on how the SDK's threads interleave, so it is not
        stable between runs; the URN order is.
        """
        # The fields one by one: `asdict` deep-copied every resource's inputs only to drop
        # them (a quarter of writing the render of 400 services).
        listed = [f.name for f in fields(Registration) if f.name not in {"inputs", "custom"}]
        return sorted(
            ({name: getattr(r, name) for name in listed} for r in self.registrations),
            key=lambda r: str(r["urn"]),
        )


def _object_sort_key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    metadata = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion", "")),
        str(obj.get("kind", "")),
        str(metadata.get("namespace", "")),
        str(metadata.get("name", "")),
    )


@contextmanager
def _project_on_path(project_dir: Path) -> Iterator[None]:
    sys.path.insert(0, str(project_dir))
    try:
        yield
    finally:
        sys.path.remove(str(project_dir))


@contextmanager
def _without_source_positions() -> Iterator[None]:
    """The SDK walks and formats the whole Python stack of every resource it registers, for
    the source position it sends the engine (`runtime.resource._get_stack_trace`: 7 % of a
    render's CPU, more with many services). A render records no source positions, so it
    sends an empty stack trace, as the SDK itself does when it finds no user frame."""
    original = getattr(sdk_resource, "_get_stack_trace", None)
    if original is None:  # another SDK layout: nothing to skip
        yield
        return
    sdk_resource._get_stack_trace = source_pb2.StackTrace
    try:
        yield
    finally:
        sdk_resource._get_stack_trace = original


async def _resolve(value: Any) -> Any:
    output = pulumi.Output.from_input(value)
    if not await output.is_known():
        return UNKNOWN_PLACEHOLDER
    if await output.is_secret():
        return SECRET_PLACEHOLDER
    return await output.future()


def run_program(
    stack: str,
    config: Mapping[str, str],
    secret_keys: list[str] | None = None,
    *,
    project_dir: Path = PROJECT_DIR,
    program: Callable[[], Any] | None = None,
    stack_references: Mapping[str, Mapping[str, Any]] | None = None,
    organization: str = OFFLINE_ORGANIZATION,
) -> Render:
    """Run the program (or `program`) under mocks with `config`; return what it registered.

    Runs as a preview (`dry_run`), so outputs the mocks do not provide stay unknown, as
    they are in a first `pulumi preview`. The run's organization is `organization`.
    """
    project = yaml.safe_load((project_dir / "Pulumi.yaml").read_text())["name"]
    monitor = RecordingMonitor(RenderMocks(stack_references))
    runtime_settings.SETTINGS.rpc_manager.clear()
    runtime_settings.SETTINGS.outputs.clear()
    runtime_settings.ROOT.set(None)
    pulumi_mocks.set_mocks(
        monitor.mocks,
        project=project,
        stack=stack,
        preview=True,
        monitor=monitor,
        organization=organization,
    )
    set_all_config(dict(config), secret_keys or [])

    def main() -> None:
        with _project_on_path(project_dir):
            runpy.run_path(
                str(project_dir / "__main__.py"),
                init_globals={"OFFLINE_RENDER": True},
                run_name="__main__",
            )

    with _without_source_positions():
        _sync_await(run_pulumi_func(program or main))
    root = runtime_settings.get_root_resource()
    stack_outputs: dict[str, Any] = dict(getattr(root, "outputs", {}) or {})
    outputs = {k: _sync_await(_resolve(v)) for k, v in sorted(stack_outputs.items())}
    return Render(stack=stack, registrations=monitor.registrations, outputs=_plain(outputs))


def load_stack_references(
    project_dir: Path = PROJECT_DIR, *, stack_dir: Path | None = None
) -> dict[str, dict[str, Any]]:
    """The offline outputs of referenced stacks, from `offline/stack-references.yaml` next
    to the stack files (`stack_dir`, default the project's).

    Keyed as `pulumi.StackReference` names them in an offline run:
    `<OFFLINE_ORGANIZATION>/<project>/<stack>`.
    """
    path = (stack_dir or project_dir) / STACK_REFERENCES_FILE
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise RenderError(f"{STACK_REFERENCES_FILE} must map stack names to their outputs")
    if any("/" in str(name) for name in data):
        raise RenderError(
            f"{STACK_REFERENCES_FILE} must be keyed by stack name (us-east-1), "
            "not organization/project/stack"
        )
    project = read_yaml_file(project_dir / "Pulumi.yaml")["name"]
    return {
        f"{OFFLINE_ORGANIZATION}/{project}/{name}": dict(outputs) for name, outputs in data.items()
    }


def render_stack(
    stack: str,
    project_dir: Path = PROJECT_DIR,
    *,
    stack_dir: Path | None = None,
    chart_source: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Render:
    """Render `Pulumi.<stack>.yaml` of `project_dir` (or of `stack_dir`, e.g. tests/fixtures).

    Stack references resolve from `offline/stack-references.yaml` next to the stack file
    unless `stack_references` is given. `chart_source` overrides `meshstack:chartSource`.
    """
    kwargs.setdefault("stack_references", load_stack_references(project_dir, stack_dir=stack_dir))
    config, secret_keys = load_stack_config(stack, project_dir, stack_dir=stack_dir)
    # Checked here, where the stack file is known, so each mistake names its line; also
    # before an override replaces the stack file's own chart source, which `pulumi up` uses
    # (a malformed one must still stop the render, as it would stop the deploy).
    try:
        load_settings(config)
    except SettingsError as error:
        path = stack_file(stack, stack_dir or project_dir)
        raise RenderError(
            invalid_settings_message(settings_error_lines(error, path, CONFIG_NAMESPACE))
        ) from None
    if chart_source is not None:
        config["meshstack:chartSource"] = json.dumps(dict(chart_source))
    return run_program(stack, config, secret_keys, project_dir=project_dir, **kwargs)


# --- writing -------------------------------------------------------------------------------


def write_render(render: Render, out_dir: Path, charts: str | None = None) -> None:
    """Write the render's files into `out_dir`, replacing what was there; `charts` is the
    text of `charts.yaml` (`tools.charts.dump_charts`)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    if charts is not None:
        (out_dir / "charts.yaml").write_text(charts)
    (out_dir / "manifests.yaml").write_text(dump_yaml_documents(render.kubernetes_objects()))
    (out_dir / "helm.yaml").write_text(dump_yaml_documents(render.helm_charts()))
    (out_dir / "resources.json").write_text(json.dumps(render.resources(), indent=2) + "\n")
    (out_dir / "outputs.json").write_text(
        json.dumps(render.outputs, indent=2, sort_keys=True) + "\n"
    )


def write_summary(
    stack: str, render: Render, expanded: list[charts.ChartObjects] | None, out_dir: Path
) -> str:
    """Write `summary.md` (`tools/summary.py`) into `out_dir`; returns its text."""
    chart_areas = render.chart_areas()
    releases = [
        summary.ChartRelease(
            name=c.release.name,
            chart=c.release.chart.rsplit("/", 1)[-1].removesuffix(f"-{c.release.version}"),
            version=c.release.version,
            namespace=c.release.namespace,
            area=chart_areas.get(c.release.name, "region"),
            objects=c.objects,
        )
        for c in expanded or []
    ]
    text = summary.render_summary(
        stack, render.objects_by_area(), releases, render.outputs, hub=render.hub_stack()
    )
    (out_dir / "summary.md").write_text(text)
    return text


def control_plane_summary(
    outputs: Mapping[str, Any], previous: Mapping[str, Any] | None = None
) -> str:
    """One line: the istiod revisions the render runs and, when the offline outputs file
    has this stack's last outputs, which revisions the update adds and removes (the real run
    reads them from the backend and refuses a replacement, `components.istio.history`)."""
    revisions = outputs.get(history.REVISIONS_OUTPUT) or {}
    running = ", ".join(
        f"{name} {entry['version']} [{', '.join(entry['tags'])}]"
        for name, entry in sorted(revisions.items())
    )
    deployed = history.deployed_revisions(previous or {})
    if deployed is None:
        return f"istiod revisions: {running} (no last deployment offline)"
    added, removed = history.revision_changes(deployed, revisions)
    return (
        f"istiod revisions: {running}; against the last deployment: "
        f"adds {', '.join(added) or 'none'}, removes {', '.join(removed) or 'none'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", help="stack name: renders Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument(
        "--project-dir", type=Path, default=PROJECT_DIR, help="directory of Pulumi.yaml"
    )
    parser.add_argument(
        "--no-charts",
        action="store_true",
        help="skip the chart expansion (charts.yaml); the charts' own sources in helm.yaml",
    )
    parser.add_argument(
        "--no-chart-cache",
        action="store_true",
        help="run Helm for every chart, neither reading nor writing the expansion cache",
    )
    parser.add_argument(
        "--stack-dir",
        type=Path,
        default=None,
        help="directory of Pulumi.<stack>.yaml when not the project's (tests/fixtures)",
    )
    args = parser.parse_args(argv)
    out_dir = args.out or args.project_dir / "build" / args.stack
    try:
        source = None if args.no_charts else charts.directory_source(args.project_dir)
        render = render_stack(
            args.stack, args.project_dir, stack_dir=args.stack_dir, chart_source=source
        )
        expanded = (
            None
            if args.no_charts
            else charts.expand(
                render.helm_charts(),
                project_dir=args.project_dir,
                cache_dir=None if args.no_chart_cache else charts.expansion_cache_dir(),
            )
        )
    except (pulumi.RunError, RenderError, StackFileError, charts.ChartError) as error:
        print(f"render {args.stack}: {error}", file=sys.stderr)
        return 2
    write_render(render, out_dir, None if expanded is None else charts.dump_charts(expanded))
    print(write_summary(args.stack, render, expanded, out_dir))
    previous = load_stack_references(args.project_dir, stack_dir=args.stack_dir).get(
        f"{OFFLINE_ORGANIZATION}/{read_yaml_file(args.project_dir / 'Pulumi.yaml')['name']}/"
        f"{args.stack}"
    )
    print(control_plane_summary(render.outputs, previous))
    chart_objects = sum(len(c.objects) for c in expanded or [])
    print(
        f"rendered {args.stack}: {len(render.kubernetes_objects())} objects, "
        f"{len(render.helm_charts())} Helm charts ({chart_objects} objects), "
        f"{len(render.registrations)} resources "
        f"-> {out_dir.relative_to(Path.cwd()) if out_dir.is_relative_to(Path.cwd()) else out_dir}"
    )
    return 0


if __name__ == "__main__":
    status = main()
    # The mock runtime leaves one asyncio event loop per worker thread. Collected during
    # interpreter shutdown, after their sockets, they print "Exception ignored ... Invalid
    # file descriptor"; collecting them now, while everything is alive, closes them cleanly.
    gc.collect()
    sys.exit(status)
