"""Pure builders of the Jaeger v2 chart's values: collector config, storage, Badger claim.

Plain functions from settings to dicts, unit-tested without the engine; `JaegerStack`
(`jaeger.py`) only wires them into the chart and derives its endpoints from the chart's
fullname helper (`jaeger_fullname`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from components.constants import SKIP_SERVICE_AWAIT
from components.istio.tracing import OTLP_GRPC_PORT, OTLP_HTTP_PORT
from components.observability.settings import JaegerSettings

QUERY_HTTP_PORT: Final = 16686

QUERY_GRPC_PORT: Final = 16685

RELEASE: Final = "jaeger"

"""Helm release name; the Service name follows from it (`jaeger_fullname`)."""

CHART_NAME: Final = "jaeger"

"""`.Chart.Name` of the jaeger chart, used by its naming helper."""

STORE: Final = "primary"

"""Name of the span store in `extensions.jaeger_storage.backends`."""

BADGER_MOUNT: Final = "/badger"

BADGER_VOLUME: Final = "badger-data"

HEALTH_PORT: Final = 13133

"""healthcheckv2 port: the chart's liveness/readiness probes call `/status` here."""

METRICS_PORT: Final = 8888

"""Jaeger's own Prometheus metrics; the chart annotates the pod for scraping on it."""

CREDENTIAL_ENV: Final = ("ES_USERNAME", "ES_PASSWORD")

NGINX: Final = "nginx.ingress.kubernetes.io"

"""Annotation prefix of ingress-nginx, whose auth annotations guard the UI Ingress."""

CONFIG_HASH_LABEL: Final = "checksum/user-config"

"""Pod-template label carrying the hash of `userconfig`. Chart 4.11.1 mounts the ConfigMap
with `subPath` (never refreshed in a running pod) and has no checksum and no pod-annotation
value, only `jaeger.podLabels`: the label changes the pod template whenever the config
does, so the Deployment rolls out the new config."""


def jaeger_fullname(release: str, name_override: str = "", fullname_override: str = "") -> str:
    """The chart's `jaeger.fullname` helper: the name of its Service and Deployment.

    `fullnameOverride` wins; else the release name if it contains the chart name (or
    `nameOverride`); else `<release>-<name>`; truncated to 63 characters, without a
    trailing '-'.
    """
    if fullname_override:
        return fullname_override[:63].rstrip("-")
    name = name_override or CHART_NAME
    full = release if name in release else f"{release}-{name}"
    return full[:63].rstrip("-")


def _storage_backend(settings: JaegerSettings) -> dict[str, Any]:
    storage = settings.storage
    if storage.type == "badger":
        return {
            "badger": {
                "directories": {
                    "keys": f"{BADGER_MOUNT}/keys",
                    "values": f"{BADGER_MOUNT}/values",
                },
                "ephemeral": False,
                "ttl": {"spans": storage.retention},
            }
        }
    if storage.type == "memory":
        return {"memory": {"max_traces": storage.max_traces}}
    backend: dict[str, Any] = {
        "server_urls": list(storage.server_urls),
        "indices": {"index_prefix": storage.index_prefix},
    }
    if storage.credentials_secret:
        # Expanded by the collector from the pod environment, filled from the Secret.
        user, password = CREDENTIAL_ENV
        backend["auth"] = {
            "basic": {"username": f"${{env:{user}}}", "password": f"${{env:{password}}}"}
        }
    return {storage.type: backend}


def user_config(settings: JaegerSettings) -> dict[str, Any]:
    """Jaeger v2's collector configuration (`userconfig`): OTLP in, one store, query out.

    Every listener binds 0.0.0.0 explicitly: recent collector versions default to
    localhost, which no Service can reach.
    """
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {
                    "level": "detailed",
                    "readers": [
                        {
                            "pull": {
                                "exporter": {
                                    "prometheus": {"host": "0.0.0.0", "port": METRICS_PORT}
                                }
                            }
                        }
                    ],
                },
            },
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"0.0.0.0:{HEALTH_PORT}"}},
            "jaeger_query": {
                "storage": {"traces": STORE},
                "http": {"endpoint": f"0.0.0.0:{QUERY_HTTP_PORT}"},
                "grpc": {"endpoint": f"0.0.0.0:{QUERY_GRPC_PORT}"},
            },
            "jaeger_storage": {"backends": {STORE: _storage_backend(settings)}},
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC_PORT}"},
                    "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP_PORT}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": STORE}},
    }


def config_hash(config: dict[str, Any]) -> str:
    """A label-sized (32 hex characters) hash of the collector config's content."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def pod_labels(release: str = RELEASE) -> dict[str, str]:
    """Selector labels of the chart's pod (`jaeger.selectorLabels`)."""
    return {"app.kubernetes.io/name": CHART_NAME, "app.kubernetes.io/instance": release}


def badger_claim_name(release: str = RELEASE) -> str:
    """Name of the PersistentVolumeClaim holding Badger's files."""
    return f"{jaeger_fullname(release)}-badger"


def jaeger_values(settings: JaegerSettings, release: str = RELEASE) -> dict[str, Any]:
    """Values of the jaeger chart 4.x for these settings."""
    config = user_config(settings)
    jaeger: dict[str, Any] = {
        "replicas": settings.replicas,
        "podLabels": {CONFIG_HASH_LABEL: config_hash(config)},
        "resources": settings.resources.as_kubernetes(),
        # Jaeger never calls the Kubernetes API; its sidecar has its own projected token.
        "serviceAccount": {"automountServiceAccountToken": False},
        # Kiali installs after this chart only to find Jaeger's pod Ready (the Deployment
        # stays awaited); Kiali and the proxies reach the Service whenever its endpoints
        # are there, so the provider's 10 s endpoint settle guards nothing here.
        "service": {"annotations": dict(SKIP_SERVICE_AWAIT)},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    storage = settings.storage
    if storage.type == "badger":
        jaeger["extraVolumes"] = [
            {
                "name": BADGER_VOLUME,
                "persistentVolumeClaim": {"claimName": badger_claim_name(release)},
            }
        ]
        jaeger["extraVolumeMounts"] = [{"name": BADGER_VOLUME, "mountPath": BADGER_MOUNT}]
    if storage.external and storage.credentials_secret:
        jaeger["extraEnv"] = [
            {
                "name": env,
                "valueFrom": {"secretKeyRef": {"name": storage.credentials_secret, "key": key}},
            }
            for env, key in zip(CREDENTIAL_ENV, ("username", "password"), strict=True)
        ]
    if settings.ingress_host:
        jaeger["ingress"] = {
            "enabled": True,
            "ingressClassName": settings.ingress_class,
            "hosts": [settings.ingress_host],
            "pathType": "Prefix",
            "annotations": ingress_auth_annotations(settings),
            "tls": [{"hosts": [settings.ingress_host], "secretName": settings.ingress_tls_secret}],
        }
    return {"userconfig": config, "jaeger": jaeger}


def ingress_auth_annotations(settings: JaegerSettings) -> dict[str, str]:
    """ingress-nginx annotations that authenticate every request before it reaches the UI.

    External authentication (`auth-url`, with `auth-signin` for browsers) or basic
    authentication from an htpasswd Secret; the settings require exactly one of them.
    """
    if settings.ingress_basic_auth_secret:
        return {
            f"{NGINX}/auth-type": "basic",
            f"{NGINX}/auth-secret": settings.ingress_basic_auth_secret,
            f"{NGINX}/auth-realm": "Jaeger",
        }
    annotations = {f"{NGINX}/auth-url": settings.ingress_auth_url}
    if settings.ingress_auth_signin:
        annotations[f"{NGINX}/auth-signin"] = settings.ingress_auth_signin
    return annotations


def badger_claim_spec(settings: JaegerSettings) -> dict[str, Any]:
    """Spec of the Badger volume claim: one writer, ReadWriteOnce."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": settings.storage.size}},
    }
    if settings.storage.storage_class:
        spec["storageClassName"] = settings.storage.storage_class
    return spec
