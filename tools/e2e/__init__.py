"""End-to-end harness: pinned tool builds (build.sh) and a local control plane."""
