#!/usr/bin/env bash
# go_tool_cache: a test tier's Go tools, built from the Go module proxy into a cache folder
# keyed by their module. Sourced by tools/dataplane/build.sh and tools/progressive/build.sh:
#
#   go_tool_cache <tier> <module dir> <cache root> <nice level> <name>=<package>... -- "$@"
#
# The key hashes the Go version and every go.mod, go.sum and *.go under the module, so a version
# bump builds a new folder (<cache root>/<key>/bin) and an unchanged tree builds nothing.
# "$@" is the build script's argument: --print (print the bin/ folder), --check (exit 0 if
# every binary is there, else 1), or none (build what is missing).

go_tool_cache() {
	local tier=$1 mod=$2 root=$3 nice=$4
	shift 4
	local -a tools=()
	while [[ $# -gt 0 && $1 != -- ]]; do
		tools+=("$1")
		shift
	done
	[[ $# -gt 0 ]] && shift
	local key bin tool
	key=$({
		go env GOVERSION
		cd "$mod" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) |
			LC_ALL=C sort | xargs sha256sum
	} | sha256sum | cut -c1-16)
	bin="$root/$key/bin"
	case "${1:-}" in
	--print)
		echo "$bin"
		return 0
		;;
	--check)
		for tool in "${tools[@]}"; do
			[[ -x "$bin/${tool%%=*}" ]] || return 1
		done
		return 0
		;;
	esac
	mkdir -p "$bin"
	local name package start
	for tool in "${tools[@]}"; do
		name=${tool%%=*}
		package=${tool#*=}
		if [[ -x "$bin/$name" ]]; then
			echo "$tier: $name present"
			continue
		fi
		echo "$tier: building $name ($package)"
		start=$SECONDS
		(cd "$mod" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
			nice -n "$nice" go build -trimpath -o "$bin/$name.tmp" "$package")
		mv "$bin/$name.tmp" "$bin/$name"
		echo "$tier: $name built in $((SECONDS - start)) s"
	done
	echo "$tier: $bin"
}
