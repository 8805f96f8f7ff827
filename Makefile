# meshstack developer commands. Everything runs offline once `make install` has run.
# Python 3.11+ and uv (installed on demand with pip) are all a fresh machine needs.

SHELL := /bin/bash
STACK ?= us-east-1
STACKS := us-east-1 eu-west-1 ap-southeast-1
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PY := .venv/bin/python
export UV_PYTHON_DOWNLOADS := never

.PHONY: install render render-all test check lint fmt typecheck pytest bench policy clean e2e-tools

.venv/.synced: uv.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet 'uv==0.13.8'
	$(UV) sync --frozen --python python3
	@touch $@

install: .venv/.synced ## Create .venv with the locked dependencies.

render: install ## Offline render of one stack: make render STACK=us-east-1
	$(PY) -m tools.render $(STACK)

render-all: install ## Offline render of every region stack.
	@for s in $(STACKS); do $(PY) -m tools.render $$s || exit 1; done

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy

check: lint typecheck ## ruff (lint + format) and mypy (strict on components/).

pytest: install
	$(PY) -m pytest -q

test: check pytest ## Everything CI runs: lint, types, tests.

fmt: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: install ## Render wall time and peak memory per stack and for 50..400 services.
	$(PY) -m tools.bench

policy: install ## Real preview of STACK with the policy pack (needs the Pulumi CLI and the stack).
	pulumi preview --stack $(STACK) --policy-pack policy --policy-pack-config policy/config.json

e2e-tools: ## Build the pinned e2e tools (Go) into a cache keyed by their versions: tools/e2e/README.md
	@bash tools/e2e/build.sh

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis
