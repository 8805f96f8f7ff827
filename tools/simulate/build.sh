#!/usr/bin/env bash
# Builds configgen (tools/simulate/configgen: istiod's config generator from istio.io/istio at
# the Istio 1.30.4 release commit) into a cache folder keyed by its sources:
#   ${MESHSTACK_SIMULATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-simulate}/<key>/configgen
# The key hashes the Go version and configgen's go.mod, go.sum and *.go, so a version bump
# builds a new folder and an unchanged tree builds nothing. Modules come from the Go module
# proxy (go.sum checks them); about 10 minutes cold on 2 busy cores, seconds when cached.
#
#   tools/simulate/build.sh            build if missing (make simulate-tools)
#   tools/simulate/build.sh --print    print the cache folder and exit
#   tools/simulate/build.sh --check    exit 0 if the binary is built, else 1
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/configgen"

export CGO_ENABLED=0
export GOFLAGS="${SIMULATE_GOFLAGS:--mod=readonly -buildvcs=false}"

key() {
	{
		go env GOVERSION
		cd "$SRC" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) |
			LC_ALL=C sort | xargs sha256sum
	} | sha256sum | cut -c1-16
}

CACHE="${MESHSTACK_SIMULATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-simulate}/$(key)"
case "${1:-}" in
--print)
	echo "$CACHE"
	exit 0
	;;
--check)
	[[ -x "$CACHE/configgen" ]]
	exit $?
	;;
esac
if [[ -x "$CACHE/configgen" ]]; then
	echo "simulate-tools: configgen present: $CACHE/configgen"
	exit 0
fi
mkdir -p "$CACHE"
log="$CACHE/build.log"
echo "simulate-tools: building configgen (log: $log)"
if ! (cd "$SRC" && nice -n "${SIMULATE_NICE:-19}" go build -trimpath -ldflags "-s -w" \
	-o "$CACHE/configgen.tmp" .) >"$log" 2>&1; then
	echo "simulate-tools: configgen failed to build, see $log" >&2
	exit 1
fi
mv "$CACHE/configgen.tmp" "$CACHE/configgen"
echo "simulate-tools: built $CACHE/configgen"
