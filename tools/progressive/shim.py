"""The loadtester's commands (`curl`, `grpc_health_probe`, `hey`, `ghz`) in this tier.

The real loadtester (Flagger's `cmd/loadtester`) runs each webhook's command with `bash -c`
or `sh -c`; the commands find these shims first on its PATH (`run.py` links them by name).
Each one hands its argv to the mesh model (`mesh_model.py`, `/call`), which resolves the
target through its Service to the pods it selects and answers as their image behaves; a load
test keeps running for its `-z` duration, as hey and ghz do.

    python -m tools.progressive.shim <tool> <args...>    (MESHSTACK_MESH_MODEL=<url>)
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    request = json.dumps({"tool": tool, "argv": [tool, *args]}).encode()
    req = urllib.request.Request(
        os.environ["MESHSTACK_MESH_MODEL"] + "/call",
        data=request,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = json.loads(resp.read())
    print(answer["output"], file=sys.stdout if answer["exit"] == 0 else sys.stderr)
    time.sleep(float(answer["seconds"]))
    return int(answer["exit"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
