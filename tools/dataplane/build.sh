#!/usr/bin/env bash
# Builds the data-plane tier's Go tools (ratelimit/go.mod) into a cache folder keyed by them:
#   ${MESHSTACK_DATAPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-dataplane}/<key>/bin/
#     ratelimit   envoyproxy/ratelimit's service (src/service_cmd, the module's `tool`)
#     dpctl       the tier's upstream (HTTP + gRPC), load generator and test-token minter
# The key hashes the Go version and every go.mod, go.sum and *.go under ratelimit/, so a
# version bump builds a new folder and an unchanged tree builds nothing.
#
#   tools/dataplane/build.sh           build what is missing (make dataplane-tools)
#   tools/dataplane/build.sh --print   print the cache folder's bin/ and exit
#   tools/dataplane/build.sh --check   exit 0 if both binaries are there, else 1
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MOD="$HERE/ratelimit"
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
NICE=(nice -n "${DATAPLANE_NICE:-10}")

key() {
	{
		go env GOVERSION
		cd "$MOD" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) |
			LC_ALL=C sort | xargs sha256sum
	} | sha256sum | cut -c1-16
}

ROOT_CACHE="${MESHSTACK_DATAPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-dataplane}"
BIN="$ROOT_CACHE/$(key)/bin"
case "${1:-}" in
--print)
	echo "$BIN"
	exit 0
	;;
--check)
	[[ -x "$BIN/ratelimit" && -x "$BIN/dpctl" ]]
	exit $?
	;;
esac
mkdir -p "$BIN"

build() { # NAME PACKAGE
	if [[ -x "$BIN/$1" ]]; then
		echo "dataplane-tools: $1 present"
		return 0
	fi
	echo "dataplane-tools: building $1 ($2)"
	local start=$SECONDS
	(cd "$MOD" && "${NICE[@]}" go build -trimpath -o "$BIN/$1.tmp" "$2")
	mv "$BIN/$1.tmp" "$BIN/$1"
	echo "dataplane-tools: $1 built in $((SECONDS - start)) s"
}
build ratelimit github.com/envoyproxy/ratelimit/src/service_cmd
build dpctl ./dpctl
echo "dataplane-tools: $BIN"
