"""The stack files' JSON schema (docs/stack-settings.schema.json): generated from the settings
model, referenced by every stack file's first line, and every stack file fits it.

Validation runs the check-jsonschema CLI (the locked dev dependency), as an editor's YAML
language server or a reviewer would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import FIXTURE_DIR
from tools.config_reference import settings_schema
from tools.render import PROJECT_DIR
from tools.stack_schema import SCHEMA_COMMENT, SCHEMA_PATH, schema_comment, schema_text
from tools.stacks import STACK_FILE_GLOB

SCHEMA = PROJECT_DIR / SCHEMA_PATH
CHECK_JSONSCHEMA = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "check-jsonschema"


def _stack_files() -> list[Path]:
    return sorted([*PROJECT_DIR.glob(STACK_FILE_GLOB), *FIXTURE_DIR.glob(STACK_FILE_GLOB)])


def _check(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_checked_in_schema_is_the_generated_one() -> None:
    assert SCHEMA.read_text() == schema_text(settings_schema()), "run `make docs`"


def test_every_stack_file_names_the_schema_on_its_first_line() -> None:
    files = _stack_files()
    assert len(files) > len(list(PROJECT_DIR.glob(STACK_FILE_GLOB))), "fixtures included"
    for path in files:
        first = path.read_text().splitlines()[0]
        assert first == schema_comment(path, PROJECT_DIR), path.name
        target = (path.parent / first.removeprefix(SCHEMA_COMMENT)).resolve()
        assert target == SCHEMA.resolve(), f"{path.name}: the path resolves to the schema"


def test_every_production_and_fixture_stack_file_fits_the_schema() -> None:
    result = _check(*_stack_files())
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_refuses_what_the_program_refuses(tmp_path: Path) -> None:
    # So the test above can fail: a misspelt key of ours, a wrong type, a plaintext secret.
    broken = tmp_path / "Pulumi.broken.yaml"
    broken.write_text(
        "config:\n"
        "  pulumi:disable-default-providers: [kubernetes]\n"
        "  meshstack:region: lab-1\n"
        "  meshstack:istiodReplica: 2\n"
        "  meshstack:services:\n"
        "    - {name: api, namespace: shop, port: http}\n"
        "  meshstack:kubeconfig: /home/ops/.kube/config\n"
    )
    result = _check(broken)
    assert result.returncode == 1
    for problem in (
        "'meshstack:istiodReplica' does not match any of the regexes",
        "$.config['meshstack:services'][0].port: 'http' is not of type 'integer'",
        "$.config['meshstack:kubeconfig']: '/home/ops/.kube/config' is not of type 'object'",
    ):
        assert problem in result.stdout, result.stdout
    assert "pulumi:disable-default-providers" not in result.stdout, "other namespaces are free"
