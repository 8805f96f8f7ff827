"""Rules over every stack file at once: what one region's settings cannot know.

The program reads one stack file; a mistake between regions is only visible with all of
them, so `make test` checks these before anything else (tests/conftest.py
`pytest_sessionstart`), with one line per mistake.

- `policy_conflicts`: a service (name and namespace) in several regions has the same
  request policies (`jwt`, `authorization`) in each, unless it is cluster-local. In a
  multi-primary mesh a Service of the same name and namespace in several clusters is one
  service: locality failover (and plain load balancing across the east-west gateway)
  sends one region's callers to the other region's pods, whose AuthorizationPolicy and
  RequestAuthentication answer them; different policies there mean a 403 (or a request a
  region meant to refuse let through) only while failing over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from components.settings import MeshService, StackSettings

POLICY_KEYS: Final = ("jwt", "authorization")
"""The settings of a service that its region's proxies enforce on requests from anywhere."""


def _host(service: MeshService) -> str:
    return f"{service.name}.{service.namespace}.svc.cluster.local"


def _is_cluster_local(service: MeshService, settings: StackSettings) -> bool:
    hosts = set(settings.cluster_local_hosts)
    return _host(service) in hosts or f"*.{service.namespace}.svc.cluster.local" in hosts


def policy_conflicts(stacks: Mapping[str, StackSettings]) -> list[str]:
    """One line per service whose request policies differ between two stack files (compared
    with the first stack, by name, that has it), unless both keep it cluster-local."""
    errors = []
    first: dict[tuple[str, str], tuple[str, MeshService]] = {}
    for stack in sorted(stacks):
        settings = stacks[stack]
        for index, service in enumerate(settings.services):
            key = (service.namespace, service.name)
            if key not in first:
                first[key] = (stack, service)
                continue
            other_stack, other = first[key]
            if _is_cluster_local(service, settings) and _is_cluster_local(
                other, stacks[other_stack]
            ):
                continue
            differing = [
                k
                for k in POLICY_KEYS
                if service.model_dump(include={k}) != other.model_dump(include={k})
            ]
            if differing:
                verb = "differs" if len(differing) == 1 else "differ"
                errors.append(
                    f"Pulumi.{stack}.yaml: meshstack:services[{index}] ({service.name})."
                    f"{' and '.join(differing)} {verb} from "
                    f"Pulumi.{other_stack}.yaml's: "
                    "locality failover sends one region's callers to the other, whose "
                    "policies then answer them (403); make them equal, or list "
                    f"{_host(service)} in clusterLocalHosts of every stack file"
                )
    return errors
