#!/usr/bin/env bash
# Builds the progressive-delivery tier's Go tools (flagger/go.mod) into a cache folder keyed by them:
#   ${MESHSTACK_PROGRESSIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-progressive}/<key>/bin/
#     flagger      fluxcd/flagger's controller (cmd/flagger), the release the program installs
#     loadtester   its loadtester (cmd/loadtester), which runs the Canaries' webhooks
# The key hashes the Go version and every go.mod, go.sum and *.go under flagger/, so a version
# bump builds a new folder and an unchanged tree builds nothing (about 2-4 minutes cold).
#
#   tools/progressive/build.sh           build what is missing (make progressive-tools)
#   tools/progressive/build.sh --print   print the cache folder's bin/ and exit
#   tools/progressive/build.sh --check   exit 0 if both binaries are there, else 1
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MOD="$HERE/flagger"
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
NICE=(nice -n "${PROGRESSIVE_NICE:-10}")

key() {
	{
		go env GOVERSION
		cd "$MOD" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) |
			LC_ALL=C sort | xargs sha256sum
	} | sha256sum | cut -c1-16
}

ROOT_CACHE="${MESHSTACK_PROGRESSIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-progressive}"
BIN="$ROOT_CACHE/$(key)/bin"
case "${1:-}" in
--print)
	echo "$BIN"
	exit 0
	;;
--check)
	[[ -x "$BIN/flagger" && -x "$BIN/loadtester" ]]
	exit $?
	;;
esac
mkdir -p "$BIN"

build() { # NAME PACKAGE
	if [[ -x "$BIN/$1" ]]; then
		echo "progressive-tools: $1 present"
		return 0
	fi
	echo "progressive-tools: building $1 ($2)"
	local start=$SECONDS
	(cd "$MOD" && "${NICE[@]}" go build -trimpath -o "$BIN/$1.tmp" "$2")
	mv "$BIN/$1.tmp" "$BIN/$1"
	echo "progressive-tools: $1 built in $((SECONDS - start)) s"
}
build flagger github.com/fluxcd/flagger/cmd/flagger
build loadtester github.com/fluxcd/flagger/cmd/loadtester
echo "progressive-tools: $BIN"
