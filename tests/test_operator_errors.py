"""Every input error is one line: YAML syntax errors in stack files, unknown keys with the key
they most likely meant, defaults marked as defaults, types in the stack file's words.

One test per message shape. Settings come from fixture overrides (`make_settings`), stack
files from a temporary project directory: never from the production stack files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import settings_error, stack_file_errors
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
        "meshstack:services[0].traffic.canary.weigths is not a known setting; "
        "did you mean `weights`?"
    )


def test_unknown_key_is_reported_before_other_errors() -> None:
    service = {**SERVICE, "port": 70000, "protcol": "grpc"}
    assert settings_error(services=[service]) == (
        "meshstack:services[0].protcol is not a known setting; did you mean `protocol`? "
        "(and 1 more)"
    )


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
            'meshstack:services[0].versions = "stable": must be a list of '
            "{name, labels, minReplicas}",
        ),
        (
            {"services": {"name": "a"}},
            'meshstack:services = {"name": "a"}: must be a list of '
            "{name, namespace, port, protocol, versions, …}",
        ),
        (
            {"services": [{"name": "a", "namespace": "s", "port": "http"}]},
            'meshstack:services[0].port = "http": must be a whole number',
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
            'meshstack:services[0].versions[0] = "stable": must be a mapping '
            "{name, labels, minReplicas} (and 1 more)",
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
        "Pulumi.broken.yaml: meshstack:services[0].port = 70000: "
        "must be less than or equal to 65535"
    ]
