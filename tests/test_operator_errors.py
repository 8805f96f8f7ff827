"""Every input error is one line: YAML syntax errors in stack files, unknown keys with the key
they most likely meant, defaults marked as defaults, types in the stack file's words.

One test per message shape. Settings come from fixture overrides (`make_settings`), stack
files from a temporary project directory: never from the production stack files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from components.constants import ISTIO_RESERVED_PORTS
from tests.conftest import make_settings, settings_error, stack_file_errors
from tools import bench, render
from tools.render import PROJECT_DIR
from tools.stacks import StackFileError, deploy_order, read_stack_file

SERVICE = {"name": "api", "namespace": "shop", "versions": [{"name": "a"}, {"name": "b"}]}
WEIGHTS = [{"subset": "a", "weight": 90}, {"subset": "b", "weight": 10}]


def _project(tmp_path: Path, stack_text: str, stack: str = "broken") -> Path:
    """A project directory with the real Pulumi.yaml and one stack file."""
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(stack_text)
    return tmp_path


def test_a_stack_without_a_stack_file_lists_the_stacks_that_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = _project(tmp_path, "config: {}\n", stack="us-west-9")
    (project / "Pulumi.eu-north-7.yaml").write_text("config: {}\n")
    assert render.main(["nope", "--project-dir", str(project)]) == 2
    assert capsys.readouterr().err == (
        "render nope: no stack file Pulumi.nope.yaml next to Pulumi.yaml; "
        "the stacks are: eu-north-7, us-west-9\n"
    )


# --- YAML syntax errors in stack files ----------------------------------------------------


def test_yaml_syntax_error_names_file_line_and_column_and_render_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = _project(tmp_path, "config:\n  meshstack:region: x\n  meshstack:services: [a\n")
    assert render.main(["broken", "--project-dir", str(project)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "render broken: Pulumi.broken.yaml:4:1: YAML syntax error: "
        "expected ',' or ']', but got the end of the file\n"
    )
    assert not (project / "build").exists(), "nothing is written"


def test_misindented_line_is_named_without_parser_tokens(tmp_path: Path) -> None:
    project = _project(tmp_path, "config:\n  meshstack:services:\n    - name: a\n   namespace: b\n")
    with pytest.raises(StackFileError) as caught:
        read_stack_file(project / "Pulumi.broken.yaml")
    assert str(caught.value) == (
        "Pulumi.broken.yaml:4:4: YAML syntax error: "
        "this line is not indented like the lines around it"
    )


def test_stack_file_without_a_config_mapping(tmp_path: Path) -> None:
    project = _project(tmp_path, "config: [a, b]\n")
    with pytest.raises(StackFileError, match=r"^Pulumi.broken.yaml: must be a mapping with a"):
        read_stack_file(project / "Pulumi.broken.yaml")


def test_bench_reports_a_broken_stack_file_in_one_line_before_running_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = _project(tmp_path, "config:\n  a: b: c\n")
    monkeypatch.setattr(bench, "deploy_order", lambda: deploy_order(project))
    assert bench.main(["--sizes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: Pulumi.broken.yaml:2:7: YAML syntax error: ")
    assert err.count("\n") == 1


# --- unknown keys -------------------------------------------------------------------------


def test_misspelt_key_names_the_closest_valid_key_and_not_the_key_it_left_missing() -> None:
    service = {**SERVICE, "traffic": {"canary": {"weigths": WEIGHTS}}}
    assert settings_error(services=[service]) == (
        "meshstack:services[0] (api).traffic.canary.weigths is not a known setting; "
        "did you mean `weights`?"
    )


def test_every_mistake_is_a_line_of_its_own_unknown_keys_first() -> None:
    service = {**SERVICE, "port": 70000, "protcol": "grpc"}
    assert settings_error(services=[service], istiodReplicas=1).splitlines() == [
        "meshstack:services[0] (api).protcol is not a known setting; did you mean `protocol`?",
        "meshstack:istiodReplicas = 1: must be greater than or equal to 2",
        "meshstack:services[0] (api).port = 70000: must be less than or equal to 65535",
    ]


def test_closest_key_ignores_case() -> None:
    assert settings_error(meshID="m") == (
        "meshstack:meshID is not a known setting; did you mean `meshId`?"
    )


def test_unknown_key_with_no_close_key_points_at_the_reference() -> None:
    assert settings_error(zzz=1) == (
        "meshstack:zzz is not a known setting (check the spelling; see README config reference)"
    )


# --- values that come from defaults ---------------------------------------------------------


def test_a_default_value_in_a_rule_is_marked_default() -> None:
    assert settings_error(istiodReplicas=8) == (
        "meshstack:istiodMaxReplicas = default 5: must be >= istiodReplicas (8)"
    )


def test_a_written_value_in_the_same_rule_is_not_marked() -> None:
    assert settings_error(istiodReplicas=8, istiodMaxReplicas=6) == (
        "meshstack:istiodMaxReplicas = 6: must be >= istiodReplicas (8)"
    )


def test_an_empty_default_reads_not_set() -> None:
    assert settings_error(observability={"role": "spoke"}).startswith(
        "meshstack:observability.hubStack is not set: must name the hub's stack"
    )


# --- types in the stack file's words ------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"services": [{"name": "a", "namespace": "s", "versions": "stable"}]},
            'meshstack:services[0] (a).versions = "stable": must be a list of '
            "{name, labels, minReplicas}",
        ),
        (
            {"services": {"name": "a"}},
            'meshstack:services = {"name": "a"}: must be a list of '
            "{name, namespace, port, protocol, versions, …}",
        ),
        (
            {"services": [{"name": "a", "namespace": "s", "port": "http"}]},
            'meshstack:services[0] (a).port = "http": must be a whole number',
        ),
        ({"accessLogging": "maybe"}, 'meshstack:accessLogging = "maybe": must be true or false'),
        (
            {"eastWestGatewayServiceAnnotations": ["internal"]},
            'meshstack:eastWestGatewayServiceAnnotations = ["internal"]: must be a mapping of '
            "names to strings",
        ),
        (
            {"workloadNamespaces": "jobs"},
            'meshstack:workloadNamespaces = "jobs": must be a list of strings',
        ),
        (
            {"services": [{"name": "a", "namespace": "s", "versions": ["stable"]}]},
            'meshstack:services[0] (a).versions[0] = "stable": must be a mapping '
            "{name, labels, minReplicas}",
        ),
    ],
    ids=["list of models", "list not mapping", "number", "boolean", "mapping", "list", "model"],
)
def test_type_errors_say_what_the_stack_file_must_hold(
    overrides: dict[str, object], expected: str
) -> None:
    message = settings_error(**overrides)
    assert message == expected
    for jargon in ("valid", "tuple", "dictionary", "instance", "Input should"):
        assert jargon not in message


# --- secrets ------------------------------------------------------------------------------


def test_plaintext_kubeconfig_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pulumi.yaml cannot declare the optional kubeconfig `secret: true` (a declared secret is
    required in every stack), so the program refuses a plaintext one itself."""
    stacks = _project(
        tmp_path,
        "config:\n  meshstack:region: lab-1\n  meshstack:kubeconfig: /home/ops/.kube/config\n",
    )
    out = tmp_path / "out"
    assert (
        render.main(["broken", "--stack-dir", str(stacks), "--out", str(out), "--no-charts"]) == 2
    )
    err = capsys.readouterr().err
    assert err == (
        "render broken: invalid stack settings: meshstack:kubeconfig is plaintext in the stack "
        "file; set it with `pulumi config set --secret meshstack:kubeconfig ...`\n"
    )
    assert not out.exists(), "nothing is written"


def test_secret_kubeconfig_is_accepted(tmp_path: Path) -> None:
    stacks = _project(
        tmp_path,
        "config:\n  meshstack:region: lab-1\n"
        "  meshstack:kubeconfig:\n    secure: v1:c2VjcmV0:c2VjcmV0\n",
    )
    out = tmp_path / "out"
    assert (
        render.main(["broken", "--stack-dir", str(stacks), "--out", str(out), "--no-charts"]) == 0
    )


def test_make_test_stops_on_a_stack_files_settings_error_with_its_one_line(
    tmp_path: Path,
) -> None:
    """`make test` checks every stack file's settings first (conftest `pytest_sessionstart`)
    and exits with these lines instead of running tests that would all fail on them."""
    (tmp_path / "Pulumi.broken.yaml").write_text(
        "config:\n  meshstack:region: broken\n  meshstack:services:\n"
        "    - {name: api, namespace: shop, port: 70000}\n"
    )
    (tmp_path / "Pulumi.fine.yaml").write_text("config:\n  meshstack:region: fine\n")
    assert stack_file_errors(["broken", "fine"], tmp_path) == [
        "Pulumi.broken.yaml:4: meshstack:services[0] (api).port = 70000: "
        "must be less than or equal to 65535"
    ]


BROKEN = """\
config:
  meshstack:region: lab-1
  meshstack:services:
    - name: ledger
      namespace: bank
    - name: market-data
      namespace: markets
      port: 70000
      protcol: grpc
    - namespace: markets
  meshstack:rateLimit:
    quota:
      anonymousTier: gold
"""


def test_every_mistake_of_a_stack_file_is_a_line_naming_the_line_of_its_key(
    tmp_path: Path,
) -> None:
    (tmp_path / "Pulumi.broken.yaml").write_text(BROKEN)
    assert stack_file_errors(["broken"], tmp_path) == [
        # Unknown keys first; the key of each mistake is named with its line.
        "Pulumi.broken.yaml:9: meshstack:services[1] (market-data).protcol is not a known "
        "setting; did you mean `protocol`?",
        "Pulumi.broken.yaml:8: meshstack:services[1] (market-data).port = 70000: must be less "
        "than or equal to 65535",
        # A missing key: the line of the item it belongs in (which has no name to show).
        "Pulumi.broken.yaml:10: meshstack:services[2].name is required but not set",
        'Pulumi.broken.yaml:13: meshstack:rateLimit.quota.anonymousTier = "gold": must be one '
        "of the tiers ['free']",
    ]
    # Rules between the keys of one mapping run once its keys are valid (pydantic validates
    # a model's fields first): a broken one then shows up on the next run.


def test_a_rule_broken_by_a_value_the_file_does_not_write_names_only_the_file(
    tmp_path: Path,
) -> None:
    # istiodMaxReplicas comes from Pulumi.yaml's default, not from the stack file.
    (tmp_path / "Pulumi.lab.yaml").write_text(
        "config:\n  meshstack:region: lab-1\n  meshstack:istiodReplicas: 8\n"
    )
    assert stack_file_errors(["lab"], tmp_path) == [
        "Pulumi.lab.yaml: meshstack:istiodMaxReplicas = 5: must be >= istiodReplicas (8)"
    ]


def test_render_prints_every_mistake_on_a_line_of_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks = _project(tmp_path, BROKEN)
    assert render.main(["broken", "--stack-dir", str(stacks), "--no-charts"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "render broken: invalid stack settings (4 mistakes):"
    assert err[1].startswith("Pulumi.broken.yaml:9: meshstack:services[1] (market-data).protcol")
    assert len(err) == 5


# --- silent mistakes ----------------------------------------------------------------------


def test_a_key_repeated_in_a_stack_file_is_refused_with_both_lines(tmp_path: Path) -> None:
    # PyYAML keeps the second block and drops the first: two `services:` blocks would deploy
    # only the second list.
    project = _project(
        tmp_path,
        "config:\n  meshstack:region: x\n  meshstack:services:\n    - {name: a, namespace: b}\n"
        "  meshstack:services:\n    - {name: c, namespace: b}\n",
    )
    with pytest.raises(StackFileError) as caught:
        read_stack_file(project / "Pulumi.broken.yaml")
    assert str(caught.value) == (
        "Pulumi.broken.yaml:5:3: key 'meshstack:services' is repeated (first at line 3); a "
        "YAML mapping holds each key once: merge the two into one"
    )


def test_a_key_repeated_inside_a_value_is_refused_too(tmp_path: Path) -> None:
    project = _project(
        tmp_path, "config:\n  meshstack:traffic:\n    timeout: 1s\n    timeout: 2s\n"
    )
    with pytest.raises(StackFileError, match=r"^Pulumi.broken.yaml:4:5: key 'timeout' is rep"):
        read_stack_file(project / "Pulumi.broken.yaml")


def test_yaml_merge_keys_are_not_repeats(tmp_path: Path) -> None:
    project = _project(tmp_path, "config:\n  a: &x {p: 1}\n  b:\n    <<: *x\n    q: 2\n")
    assert read_stack_file(project / "Pulumi.broken.yaml")["b"] == {"p": 1, "q": 2}


def test_a_malformed_chart_source_stops_make_render_though_it_renders_from_a_directory(
    tmp_path: Path,
) -> None:
    # `make render` replaces the chart source with the chart cache; the stack file's own
    # source is what `pulumi up` pulls from, so it is checked before it is replaced.
    project = _project(
        tmp_path,
        "config:\n  meshstack:region: x\n"
        "  meshstack:chartSource: {kind: oci, location: 'oci://Registry.example.com/'}\n",
    )
    with pytest.raises(render.RenderError) as caught:
        render.render_stack(
            "broken", project, chart_source={"kind": "directory", "location": "charts"}
        )
    assert str(caught.value) == (
        "invalid stack settings: Pulumi.broken.yaml:3: meshstack:chartSource.location = "
        '"oci://Registry.example.com/": must be an OCI registry prefix '
        "`oci://<host>[:<port>]/<path>` in lowercase, without a trailing '/'"
    )


@pytest.mark.parametrize("port", sorted(ISTIO_RESERVED_PORTS))
def test_a_port_istio_reserves_is_refused_as_a_service_port(port: int) -> None:
    # iptables hands these to Envoy itself (or redirects to them): the app never sees them.
    assert settings_error(services=[{**SERVICE, "port": port}]) == (
        f"meshstack:services[0] (api).port = {port}: is reserved by Istio's sidecar "
        f"({ISTIO_RESERVED_PORTS[port]}); use a port other than 15000, 15001, 15004, 15006, "
        "15008, 15009, 15020, 15021, 15053, 15090 (istio.io, Ports used by Istio)"
    )


def test_a_port_istio_reserves_is_refused_in_an_authorization_rule() -> None:
    service = {**SERVICE, "authorization": [{"ports": [9102, 15090], "methods": ["GET"]}]}
    assert settings_error(services=[service]).startswith(
        "meshstack:services[0] (api).authorization[0].ports[1] = 15090: is reserved by Istio's "
        "sidecar (Envoy Prometheus telemetry); use a port other than"
    )


def test_a_port_istio_reserves_is_refused_in_an_mtls_exception() -> None:
    exception = {"name": "x", "namespace": "shop", "selector": {"app": "api"}, "ports": [15020]}
    assert settings_error(security={"mtlsExceptions": [exception]}).startswith(
        "meshstack:security.mtlsExceptions[0].ports[0] = 15020: is reserved by Istio's "
        "sidecar (merged Prometheus telemetry); use a port other than"
    )


def test_an_authorization_rule_on_the_service_port_without_a_source_is_refused() -> None:
    # Every request arrives on the service port: `ports: [8080]` alone is an allow-all.
    service = {**SERVICE, "authorization": [{"ports": [8080], "methods": ["GET"]}]}
    assert settings_error(services=[service]) == (
        "meshstack:services[0] (api).authorization[0].ports[0] = 8080: is the service's own port: "
        "without a source this rule admits every caller of the API; ports are for the "
        "workload's other ports (e.g. a metrics port), name a source (serviceAccounts, "
        "requestPrincipals, ipBlocks) instead"
    )


def test_a_port_level_mtls_exception_on_the_service_port_is_refused() -> None:
    # Its plaintext callers would be admitted by a `ports` rule on the API port: anyone.
    service = {**SERVICE, "authorization": [{"ipBlocks": ["10.0.0.0/8"], "ports": [8080]}]}
    exception = {"name": "x", "namespace": "shop", "selector": {"app": "api"}, "ports": [8080]}
    assert settings_error(services=[service], security={"mtlsExceptions": [exception]}) == (
        "meshstack:security.mtlsExceptions[0].ports[0] = 8080: is the service port of api: a "
        "port-level exception is for the workload's other ports (its plaintext callers are "
        "admitted by port, without an identity); for plaintext API callers leave out `ports` "
        "and admit them by ipBlocks"
    )


def test_cookie_hashing_on_a_grpc_service_is_refused() -> None:
    # gRPC clients keep no cookies: Envoy sets a new one on every call, so no affinity.
    cookie = {"name": "s", "ttl": "30m"}
    service = {
        **SERVICE,
        "protocol": "grpc",
        "traffic": {"policy": {"loadBalancer": {"consistentHash": {"httpCookie": cookie}}}},
    }
    assert settings_error(services=[service]) == (
        "meshstack:services[0] (api).traffic.policy.loadBalancer.consistentHash.httpCookie = "
        '"s": is '
        "refused on a grpc service: gRPC clients store no cookies, so every call gets a new "
        "one and a new host; hash on a metadata header (httpHeaderName) the clients send"
    )


MIRRORED = {
    **SERVICE,
    "versions": [{"name": "a"}, {"name": "b"}, {"name": "shadow"}],
    "traffic": {"canary": {"weights": WEIGHTS, "mirror": {"subset": "shadow"}}},
}


def test_a_mirror_of_a_service_that_accepts_writes_is_refused() -> None:
    # No authorization rule limits the methods: a mirrored POST runs in the shadow too.
    assert settings_error(services=[MIRRORED]) == (
        'meshstack:services[0] (api).traffic.canary.mirror = "shadow": copies every method of a '
        "service that accepts writes, so the shadow executes them again; set readsOnly: true "
        "(GET and HEAD only), or sideEffectFree: true if the shadow's writes stay inside it"
    )


@pytest.mark.parametrize(
    "mirror_or_rules",
    [
        {"mirror": {"subset": "shadow", "readsOnly": True}},
        {"mirror": {"subset": "shadow", "sideEffectFree": True}},
        {"authorization": [{"serviceAccounts": ["shop/web"], "methods": ["GET", "HEAD"]}]},
    ],
    ids=["reads only", "side-effect free", "service accepts only reads"],
)
def test_a_mirror_is_accepted_when_it_copies_no_write(mirror_or_rules: dict[str, Any]) -> None:
    service = json.loads(json.dumps(MIRRORED))
    if "mirror" in mirror_or_rules:
        service["traffic"]["canary"]["mirror"] = mirror_or_rules["mirror"]
    else:
        service["authorization"] = mirror_or_rules["authorization"]
    assert make_settings(services=[service]).services[0].traffic.canary is not None


def test_flagger_mirroring_of_a_grpc_service_needs_the_side_effect_statement() -> None:
    service = {
        "name": "feed",
        "namespace": "shop",
        "protocol": "grpc",
        "delivery": "progressive",
        "traffic": {"progressive": {"mirror": True}},
    }
    assert settings_error(services=[service]) == (
        "meshstack:services[0] (feed).traffic.progressive.mirror = true: Flagger copies every "
        "request "
        "to the canary, and this service accepts writes (every gRPC call is a POST): set "
        "mirrorSideEffectFree: true if the canary's writes stay inside it, or mirror: false"
    )


def test_a_reads_only_mirror_of_a_grpc_service_is_refused() -> None:
    service = json.loads(json.dumps(MIRRORED))
    service["protocol"] = "grpc"
    service["traffic"]["canary"]["mirror"]["readsOnly"] = True
    assert settings_error(services=[service]) == (
        "meshstack:services[0] (api).traffic.canary.mirror.readsOnly = true: copies nothing on a "
        "grpc service (every gRPC call is a POST); set sideEffectFree: true if the shadow's "
        "writes stay inside it, or drop the mirror"
    )
