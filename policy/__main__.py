"""Entry point the Pulumi CLI runs for `--policy-pack policy`: the meshstack policy pack.

The rules live in `policy.meshstack_policies` so the tests import them directly; this
file only assembles them.
"""

import sys
from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack

# The CLI runs this file with the pack directory as its working directory; the repository
# root goes on the path so the rules import as the same package the tests use.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.meshstack_policies import build_policies

PolicyPack(
    name="meshstack",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=build_policies(),
)
