#!/usr/bin/env bash
# Builds the end-to-end control plane (etcd, kube-apiserver,
# kube-controller-manager) from their Go modules at the versions pinned in
# versions.env, into a cache folder keyed by version, and prints that folder.
# A second run with the same versions reuses the binaries and builds nothing.
#
# `build.sh --check` builds nothing: it prints the bin folder and exits 0
# when every binary is there, exits 1 otherwise.
#
# Environment: TIERGUARD_CONTROLPLANE_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/tierguard-controlplane).
# Log lines go to stderr; stdout is only the bin folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${TIERGUARD_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tierguard-controlplane}
bin="$cache/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath" GOTOOLCHAIN=local

if [[ "${1:-}" == --check ]]; then
    for name in etcd kube-apiserver kube-controller-manager; do
        [[ -x "$bin/$name" ]] || exit 1
    done
    echo "$bin"
    exit 0
fi

command -v go >/dev/null || {
    echo "controlplane: go is not installed (needed to build the control plane)" >&2
    exit 1
}
mkdir -p "$bin"

# Builds one command unless its binary is already there; the binary appears
# under its final name only once complete, so an interrupted build is redone.
build() {
    local name=$1 dir=$2 pkg=$3 ldflags=$4
    if [[ -x "$bin/$name" ]]; then
        echo "controlplane: $name cached in $bin" >&2
        return
    fi
    echo "controlplane: building $name ($pkg)" >&2
    local start=$SECONDS
    (cd "$here/$dir" && go build -ldflags "$ldflags" -o "$bin/$name.part" "$pkg")
    mv "$bin/$name.part" "$bin/$name"
    echo "controlplane: built $name in $((SECONDS - start)) s" >&2
}

minor=${KUBERNETES_VERSION#v*.}
minor=${minor%%.*}
kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
build etcd etcd . "-s -w"
build kube-apiserver kube k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
build kube-controller-manager kube k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags"
echo "$bin"
