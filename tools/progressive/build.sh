#!/usr/bin/env bash
# Builds the progressive-delivery tier's Go tools (flagger/go.mod) into a cache folder keyed by them:
#   ${MESHSTACK_PROGRESSIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-progressive}/<key>/bin/
#     flagger      fluxcd/flagger's controller (cmd/flagger), the release the program installs
#     loadtester   its loadtester (cmd/loadtester), which runs the Canaries' webhooks
# (tools/go_tool_cache.sh: the key, --print, --check); 2-4 minutes cold on 2 cores.
#
#   tools/progressive/build.sh           build what is missing (make progressive-tools)
#   tools/progressive/build.sh --print   print the cache folder's bin/ and exit
#   tools/progressive/build.sh --check   exit 0 if both binaries are there, else 1
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/go_tool_cache.sh
source "$HERE/../go_tool_cache.sh"
go_tool_cache progressive-tools "$HERE/flagger" \
	"${MESHSTACK_PROGRESSIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-progressive}" \
	"${PROGRESSIVE_NICE:-10}" \
	flagger=github.com/fluxcd/flagger/cmd/flagger \
	loadtester=github.com/fluxcd/flagger/cmd/loadtester -- "$@"
