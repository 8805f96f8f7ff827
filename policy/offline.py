"""Run the policy pack over an offline render, the way the engine runs it during a preview.

`evaluate(render)` turns every registration of a `tools.render.Render` into the
`ResourceValidationArgs` / `StackValidationArgs` pulumi-policy builds from the engine's
analyzer requests (`pulumi_policy.policy._PolicyAnalyzerServicer`): properties behind the
unknown-checking proxy, resource options, the resolved provider (a custom resource without
an explicit provider gets the engine's default provider), per-policy config with the
schema defaults filled in. It then runs every policy and collects what they report, so
`make test` enforces the pack on every stack without a Pulumi CLI.

One addition over the engine: the options also carry `retain_on_delete`, which the
render records but the analyzer protocol does not transmit.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from pulumi_policy import (
    Policy,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy.meshstack_policies import STACK_ENV, build_policies
from tools.manifests import UNKNOWN_PLACEHOLDER
from tools.render import Registration, Render

PROVIDER_TYPE_PREFIX: Final = "pulumi:providers:"


class OfflineResourceOptions(PolicyResourceOptions):
    """Resource options as the engine passes them, plus the render's `retain_on_delete`."""

    retain_on_delete: bool
    """Whether the resource is left in the cluster when Pulumi deletes it."""

    def __init__(self, *, protect: bool, retain_on_delete: bool, parent: str | None) -> None:
        super().__init__(
            protect=protect,
            ignore_changes=[],
            delete_before_replace=None,
            aliases=[],
            custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
            additional_secret_outputs=[],
            parent=parent,
        )
        self.retain_on_delete = retain_on_delete


@dataclass(frozen=True)
class Finding:
    """One thing a policy said about a resource (urn) or the whole stack (urn empty)."""

    policy: str
    urn: str
    message: str


@dataclass
class Report:
    """Everything the pack reported for one render."""

    violations: list[Finding] = field(default_factory=list)
    """Violations: each would fail `pulumi preview` (every policy is mandatory)."""
    not_applicable: list[Finding] = field(default_factory=list)
    """Policies that declared themselves not applicable to a resource, with the reason."""
    unknown: list[Finding] = field(default_factory=list)
    """Policies that read a value only known after deploy (advisory in a real preview)."""

    def of(self, policy: str) -> list[Finding]:
        """The violations one policy reported."""
        return [v for v in self.violations if v.policy == policy]


def _engine_value(value: Any) -> Any:
    """Render value → engine value: unknown placeholders become the engine's sentinel."""
    if isinstance(value, str):
        return UNKNOWN_STRING_VALUE if value == UNKNOWN_PLACEHOLDER else value
    if isinstance(value, list):
        return [_engine_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _engine_value(v) for k, v in value.items()}
    return value


def _provider(
    registration: Registration, providers: Mapping[str, Registration]
) -> PolicyProviderResource | None:
    """The provider the engine resolves for a registration (default when none is given)."""
    if registration.provider:
        known = providers.get(registration.provider)
        props = unknown_checking_proxy(_engine_value(known.inputs)) if known else {}
        name = registration.provider.rsplit("::", 1)[-1]
        provider_type = known.type if known else registration.provider.split("::")[-2]
        return PolicyProviderResource(
            provider_type.rsplit("$", 1)[-1], props, registration.provider, name
        )
    if not registration.custom or registration.type.startswith(PROVIDER_TYPE_PREFIX):
        return None
    # The engine gives a custom resource without a provider the package's default provider.
    package = registration.type.split(":", 1)[0]
    prefix = registration.urn.split("::", 2)[:2]
    urn = "::".join([*prefix, f"{PROVIDER_TYPE_PREFIX}{package}", "default"])
    return PolicyProviderResource(f"{PROVIDER_TYPE_PREFIX}{package}", {}, urn, "default")


def _config(policy: Policy, config: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A policy's config as the CLI hands it over: schema defaults, then the pack config."""
    defaults: dict[str, Any] = {}
    if policy.config_schema is not None:
        for key, schema in policy.config_schema.properties.items():
            if "default" in schema:
                defaults[key] = schema["default"]
    return {**defaults, **config.get(policy.name, {})}


@contextmanager
def _stack_environment(stack: str) -> Iterator[None]:
    previous = os.environ.get(STACK_ENV)
    os.environ[STACK_ENV] = stack
    try:
        yield
    finally:
        if previous is None:
            del os.environ[STACK_ENV]
        else:
            os.environ[STACK_ENV] = previous


def _run(result: Any) -> None:
    if inspect.isawaitable(result):

        async def wait() -> None:
            await result

        asyncio.run(wait())


def _collect(
    report: Report,
    policy: Policy,
    urn: str,
    validate: Callable[[ReportViolation], Any],
) -> None:
    """Run one validation; file its violations (under `urn` for a resource policy)."""

    def report_violation(message: str, violation_urn: str | None = None) -> None:
        # Like the engine: a resource policy's violations always belong to that resource.
        where = urn if isinstance(policy, ResourceValidationPolicy) else (violation_urn or "")
        report.violations.append(Finding(policy.name, where, message))

    try:
        _run(validate(report_violation))
    except UnknownValueError as error:
        report.unknown.append(Finding(policy.name, urn, error.message))
    except _NotApplicableError as error:
        report.not_applicable.append(Finding(policy.name, urn, error.message))


def _options(r: Registration) -> OfflineResourceOptions:
    return OfflineResourceOptions(
        protect=r.protect, retain_on_delete=r.retain_on_delete, parent=r.parent or None
    )


def _stack_resources(render: Render, providers: Mapping[str, Registration]) -> list[PolicyResource]:
    """Every registration as a `PolicyResource`, parents and dependencies linked."""
    resources = {
        r.urn: PolicyResource(
            r.type,
            unknown_checking_proxy(_engine_value(r.inputs)),
            r.urn,
            r.name,
            _options(r),
            _provider(r, providers),
            None,
            [],
            {},
        )
        for r in render.registrations
    }
    for r in render.registrations:
        resources[r.urn].parent = resources.get(r.parent)
        resources[r.urn].dependencies = [resources[d] for d in r.dependencies if d in resources]
    return list(resources.values())


def evaluate(
    render: Render,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    policies: list[Policy] | None = None,
) -> Report:
    """Run `policies` (default: the whole pack) over `render` with the pack `config`."""
    config = config or {}
    report = Report()
    providers = {r.urn: r for r in render.registrations if r.type.startswith(PROVIDER_TYPE_PREFIX)}
    with _stack_environment(render.stack):
        for policy in policies if policies is not None else build_policies():
            policy_config = _config(policy, config)
            if isinstance(policy, StackValidationPolicy):
                stack_args = StackValidationArgs(_stack_resources(render, providers), policy_config)
                _collect(report, policy, "", functools.partial(policy.validate, stack_args))
                continue
            if not isinstance(policy, ResourceValidationPolicy):
                raise TypeError(f"policy {policy.name} is neither a resource nor a stack policy")
            for r in render.registrations:
                if r.read:
                    # The engine validates registrations only; a read is not applied
                    # (GenerateReadSteps runs no analyzer).
                    continue
                args = ResourceValidationArgs(
                    r.type,
                    unknown_checking_proxy(_engine_value(r.inputs)),
                    r.urn,
                    r.name,
                    _options(r),
                    _provider(r, providers),
                    policy_config,
                )
                _collect(report, policy, r.urn, functools.partial(policy.validate, args))
    return report
