#!/usr/bin/env bash
# Builds the data-plane tier's Go tools (ratelimit/go.mod) into a cache folder keyed by them:
#   ${MESHSTACK_DATAPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-dataplane}/<key>/bin/
#     ratelimit   envoyproxy/ratelimit's service (src/service_cmd, the module's `tool`)
#     dpctl       the tier's upstream (HTTP + gRPC), load generator and test-token minter
# (tools/go_tool_cache.sh: the key, --print, --check).
#
#   tools/dataplane/build.sh           build what is missing (make dataplane-tools)
#   tools/dataplane/build.sh --print   print the cache folder's bin/ and exit
#   tools/dataplane/build.sh --check   exit 0 if both binaries are there, else 1
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/go_tool_cache.sh
source "$HERE/../go_tool_cache.sh"
go_tool_cache dataplane-tools "$HERE/ratelimit" \
	"${MESHSTACK_DATAPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-dataplane}" \
	"${DATAPLANE_NICE:-10}" \
	ratelimit=github.com/envoyproxy/ratelimit/src/service_cmd dpctl=./dpctl -- "$@"
