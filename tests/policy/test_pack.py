"""The pack as the Pulumi CLI runs it: `policy/__main__.py` started in its own directory.

The CLI launches the pack, reads the gRPC port it prints and talks to it as an analyzer.
These tests do the same, so they catch what unit tests of the rules cannot: the entry
point's imports from the pack directory, the pack's registration of every policy, and
violations coming back through pulumi-policy's own servicer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from policy.meshstack_policies import build_policies

POLICY_DIR = Path(__file__).resolve().parents[2] / "policy"
URN = "urn:pulumi:test::meshstack::kubernetes:apps/v1:Deployment::api"


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [sys.executable, "__main__.py"],
        cwd=POLICY_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        assert port.isdigit(), process.stderr.read() if process.stderr else port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_pack_registers_every_policy_as_mandatory(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "meshstack"
    assert [p.name for p in info.policies] == [p.name for p in build_policies()]
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}


def analyze(analyzer: analyzer_pb2_grpc.AnalyzerStub, image: str, provider: str) -> list[Any]:
    properties = struct_pb2.Struct()
    properties.update(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        }
    )
    request = analyzer_pb2.AnalyzeRequest(
        type="kubernetes:apps/v1:Deployment",
        properties=properties,
        urn=URN,
        name="api",
        options=analyzer_pb2.AnalyzerResourceOptions(),
        provider=analyzer_pb2.AnalyzerProviderResource(
            type="pulumi:providers:kubernetes",
            urn=f"urn:pulumi:test::meshstack::pulumi:providers:kubernetes::{provider}",
            name=provider,
        ),
    )
    return list(analyzer.Analyze(request).diagnostics)


def test_violations_come_back_through_the_engine_protocol(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    diagnostics = analyze(analyzer, "ghcr.io/acme/api:latest", "default_4_34_2")
    found = {(d.policyName, d.message.split("\n", 1)[1]) for d in diagnostics}
    missing = "resources.requests.cpu, resources.requests.memory, resources.limits.cpu, "
    assert found == {
        (
            "images-pinned",
            "apps/Deployment shop/api containers[app]: image 'ghcr.io/acme/api:latest' "
            "uses the mutable tag latest",
        ),
        (
            "container-resources",
            f"apps/Deployment shop/api containers[app]: missing {missing}resources.limits.memory",
        ),
        ("no-default-provider", "uses the default Kubernetes provider default_4_34_2"),
    }
    assert {d.enforcementLevel for d in diagnostics} == {analyzer_pb2.MANDATORY}
