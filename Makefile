# meshstack developer commands. Everything runs offline once `make install` has run.
# Python 3.11+ and uv (installed on demand with pip) are all a fresh machine needs.

SHELL := /bin/bash
STACK ?= us-east-1
STACKS := us-east-1 eu-west-1 ap-southeast-1
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PY := .venv/bin/python
export UV_PYTHON_DOWNLOADS := never

.PHONY: install helm charts render render-all test check lint fmt typecheck pytest bench policy clean

.venv/.synced: uv.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet 'uv==0.13.8'
	$(UV) sync --frozen --python python3
	@touch $@

install: .venv/.synced ## Create .venv with the locked dependencies.

# The pinned Helm 3 (tools/helm/go.mod), built with Go from the module proxy into
# .tools/helm-<version>/helm; a binary already there is only verified (version, SHA-256).
helm: install ## Build (or verify) the pinned Helm the chart expansion uses.
	$(PY) -m tools.install_helm

charts: install ## Fill the chart cache .tools/charts from the charts' repositories (pinned).
	$(PY) -m tools.charts fetch

render: install helm ## Offline render of one stack: make render STACK=us-east-1
	$(PY) -m tools.render $(STACK)

render-all: install helm ## Offline render of every region stack.
	@for s in $(STACKS); do $(PY) -m tools.render $$s || exit 1; done

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy

check: lint typecheck ## ruff (lint + format) and mypy (strict on components/).

pytest: install helm
	$(PY) -m pytest -q

test: check pytest ## Everything CI runs: lint, types, tests.

fmt: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: install helm ## Render wall time and peak memory per stack and for 50..400 services.
	$(PY) -m tools.bench

policy: install ## Real preview of STACK with the policy pack (needs the Pulumi CLI and the stack).
	pulumi preview --stack $(STACK) --policy-pack policy --policy-pack-config policy/config.json

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis  # .tools (Helm) is kept
