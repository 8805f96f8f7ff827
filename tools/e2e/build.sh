#!/usr/bin/env bash
# Builds the pinned e2e tools (tools/e2e/VERSIONS.md) into a cache folder keyed by the versions:
#   ${MESHSTACK_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-e2e}/<key>/
#     bin/          kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok istioctl
#                   pulumi pulumi-language-python pulumi-language-python-exec
#                   pulumi-resource-kubernetes pulumi-resource-random (+ pulumi-tfgen-random)
#     pulumi-home/  PULUMI_HOME with the provider plugins installed from bin/
#     logs/         one build log per tool, times.txt
#     kwok-stages.yaml  kwok's stage configuration (from the kwok module)
#     env.sh        exports PATH, PULUMI_HOME and the no-download settings for the harness
# The key is a hash of the Go version and every file under tools/e2e that decides a binary
# (go.mod, go.sum, wrapper sources, versions.env), so a version bump builds a new folder and an
# unchanged tree skips every tool that is already there.
#
#   tools/e2e/build.sh            build what is missing (make e2e-tools)
#   tools/e2e/build.sh --print    print the cache folder and exit
#   tools/e2e/build.sh --check    exit 0 if the cache is complete (every tool built), else 1
# A failing build stops with one line naming the tool and its log file.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# shellcheck source=versions.env
source "$HERE/versions.env"

export CGO_ENABLED=0
export GOFLAGS="${E2E_GOFLAGS:--mod=readonly -buildvcs=false}"
NICE=(nice -n "${E2E_NICE:-19}")

key() {
	{
		go env GOVERSION
		cd "$HERE" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' -o -name versions.env \) |
			LC_ALL=C sort | xargs sha256sum
	} | sha256sum | cut -c1-16
}

ROOT_CACHE="${MESHSTACK_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack-e2e}"
CACHE="$ROOT_CACHE/$(key)"
if [[ "${1:-}" == "--print" ]]; then
	echo "$CACHE"
	exit 0
fi
BIN="$CACHE/bin"
LOGS="$CACHE/logs"

# Every binary a complete cache has; a tool added here is built into an existing cache.
TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok pulumi
	pulumi-language-python pulumi-language-python-exec pulumi-resource-kubernetes
	pulumi-resource-random istioctl)
complete() {
	[[ -f "$CACHE/.complete" ]] || return 1
	local t
	for t in "${TOOLS[@]}"; do [[ -x "$BIN/$t" ]] || return 1; done
}
if [[ "${1:-}" == "--check" ]]; then
	complete
	exit $?
fi
if complete; then
	echo "e2e-tools: cache complete: $CACHE"
	exit 0
fi
mkdir -p "$BIN" "$LOGS"

# moddir WRAPPER MODULE: the module's folder in the module cache (downloaded if needed).
moddir() {
	(cd "$HERE/$1" && go mod download "$2" && go list -m -f '{{.Dir}}' "$2")
}

# build NAME MODULE_DIR LDFLAGS PACKAGE: go build one binary into bin/ unless it is there.
build() {
	local name=$1 dir=$2 ldflags=$3 pkg=$4 log="$LOGS/$1.log" start
	if [[ -x "$BIN/$name" ]]; then
		echo "e2e-tools: $name present"
		return 0
	fi
	echo "e2e-tools: building $name (log: $log)"
	start=$(date +%s)
	if ! (cd "$HERE/$dir" && "${NICE[@]}" go build -trimpath -ldflags "$ldflags" -o "$BIN/$name.tmp" "$pkg") >"$log" 2>&1; then
		echo "e2e-tools: $name failed to build, see $log" >&2
		exit 1
	fi
	mv "$BIN/$name.tmp" "$BIN/$name"
	echo "$name $(($(date +%s) - start))s" >>"$LOGS/times.txt"
}

# kubernetes provider: its main embeds JSON that upstream's `go generate` writes from the committed
# schema.json; run the same generate.go in the wrapper's main package folder (files ignored by git).
generate_k8s_provider() {
	local cmd="$HERE/kubernetes/cmd/pulumi-resource-kubernetes" log="$LOGS/pulumi-resource-kubernetes-generate.log" mdir
	[[ -x "$BIN/pulumi-resource-kubernetes" ]] && return 0
	mdir=$(moddir kubernetes github.com/pulumi/pulumi-kubernetes/provider/v4) || {
		echo "e2e-tools: pulumi-resource-kubernetes: could not download its module" >&2
		exit 1
	}
	install -m 0644 "$mdir/cmd/pulumi-resource-kubernetes/schema.json" \
		"$mdir/cmd/pulumi-resource-kubernetes/terraform-mapping.json" "$cmd/"
	if ! (cd "$cmd" && VERSION="$K8S_PROVIDER_VERSION" "${NICE[@]}" go run "$mdir/cmd/pulumi-resource-kubernetes/generate.go") >"$log" 2>&1; then
		echo "e2e-tools: pulumi-resource-kubernetes failed to generate its schema embeds, see $log" >&2
		exit 1
	fi
}

kv=k8s.io/component-base/version
cv=k8s.io/client-go/pkg/version
kube_ld="-s -w"
for v in "$kv" "$cv"; do
	kube_ld+=" -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$(cut -d. -f2 <<<"$KUBE_VERSION")"
	kube_ld+=" -X $v.gitCommit=$KUBE_COMMIT -X $v.gitTreeState=clean -X $v.buildDate=$KUBE_BUILD_DATE"
done

pv=github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION
iv=istio.io/istio/pkg/version

# Control plane and CLI first (what the smoke tests need), providers next, istioctl last.
build kube-apiserver kube "$kube_ld" k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager kube "$kube_ld" k8s.io/kubernetes/cmd/kube-controller-manager
build kube-scheduler kube "$kube_ld" k8s.io/kubernetes/cmd/kube-scheduler
# kubectl: what a user would run instead of Pulumi (make e2e-bench: kubectl apply --server-side).
build kubectl kube "$kube_ld" k8s.io/kubernetes/cmd/kubectl
build etcd etcd "-s -w" .
build kwok kwok "-s -w" sigs.k8s.io/kwok/cmd/kwok
build pulumi pulumi "-s -w -X $pv" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
build pulumi-language-python pulumi "-s -w -X $pv" ./cmd/pulumi-language-python
generate_k8s_provider
build pulumi-resource-kubernetes kubernetes \
	"-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$K8S_PROVIDER_VERSION" \
	./cmd/pulumi-resource-kubernetes
# random provider: build the bridge's schema generator, write the schema, embed it in the provider.
rv="-s -w -X meshstack.local/e2e/random/info.Version=$RANDOM_VERSION"
if [[ ! -x "$BIN/pulumi-resource-random" ]]; then
	rcmd="$HERE/random/cmd/pulumi-resource-random"
	build pulumi-tfgen-random random "$rv" ./cmd/pulumi-tfgen-random
	if ! (cd "$rcmd" && "$BIN/pulumi-tfgen-random" schema --out .) >"$LOGS/random-schema.log" 2>&1; then
		echo "e2e-tools: pulumi-resource-random failed to generate its schema, see $LOGS/random-schema.log" >&2
		exit 1
	fi
	build pulumi-resource-random random "$rv" ./cmd/pulumi-resource-random
fi

# kwok's stages (node ready + heartbeat, pod ready/complete/delete), as kwokctl configures them.
kwokdir=$(moddir kwok sigs.k8s.io/kwok)
for f in node/fast/node-initialize node/heartbeat/node-heartbeat pod/fast/pod-ready \
	pod/fast/pod-complete pod/fast/pod-delete; do
	echo "---"
	cat "$kwokdir/kustomize/stage/$f.yaml"
done >"$CACHE/kwok-stages.yaml"

# The language host runs the SDK's exec script from beside itself.
sdkdir=$(moddir pulumi github.com/pulumi/pulumi/sdk/v3)
install -m 0755 "$sdkdir/python/cmd/pulumi-language-python-exec" "$BIN/pulumi-language-python-exec"

cat >"$CACHE/env.sh" <<EOF
# Generated by tools/e2e/build.sh: the e2e toolchain, with no downloads and no update checks.
export PATH="$BIN:\$PATH"
export PULUMI_HOME="$CACHE/pulumi-home"
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_SKIP_UPDATE_CHECK=true
EOF
# shellcheck source=/dev/null
source "$CACHE/env.sh"
if ! pulumi plugin install resource kubernetes "$K8S_PROVIDER_INSTALL_AS" \
	--file "$BIN/pulumi-resource-kubernetes" >"$LOGS/plugin-install.log" 2>&1; then
	echo "e2e-tools: installing the kubernetes plugin failed, see $LOGS/plugin-install.log" >&2
	exit 1
fi

if ! pulumi plugin install resource random "$RANDOM_INSTALL_AS" \
	--file "$BIN/pulumi-resource-random" >>"$LOGS/plugin-install.log" 2>&1; then
	echo "e2e-tools: installing the random plugin failed, see $LOGS/plugin-install.log" >&2
	exit 1
fi

touch "$CACHE/.pulumi-ready"

# istioctl last: the Pulumi toolchain above is usable while it builds.
build istioctl istioctl "-s -w -X $iv.buildVersion=$ISTIO_VERSION -X $iv.buildGitRevision=$ISTIO_COMMIT -X $iv.buildStatus=Clean" \
	istio.io/istio/istioctl/cmd/istioctl

touch "$CACHE/.complete"
echo "e2e-tools: cache complete: $CACHE"
