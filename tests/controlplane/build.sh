#!/usr/bin/env bash
# Builds the end-to-end control plane (etcd, kube-apiserver,
# kube-controller-manager, and cert-manager's controller and cainjector as one
# binary `cert-manager`) from their Go modules at the versions pinned in
# versions.env, into a cache folder keyed by version, and prints that folder.
# It also copies cert-manager's CRDs there as cert-manager-crds.yaml.
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
    # the harness applies the CRDs whether or not cert-manager itself was built
    [[ -f "$bin/cert-manager-crds.yaml" ]] || exit 1
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

# cert-manager is not part of the folder's key, so a cached binary or CRD
# file from another cert-manager version is removed here and made again.
cm_module=github.com/cert-manager/cert-manager
cm_required=$(cd "$here/certmanager" && go list -m -f '{{.Version}}' "$cm_module")
if [[ $cm_required != "$CERT_MANAGER_VERSION" ]]; then
    echo "controlplane: certmanager/go.mod requires $cm_module $cm_required but versions.env pins" \
        "$CERT_MANAGER_VERSION; run: (cd $here/certmanager && go get $cm_module@$CERT_MANAGER_VERSION && go mod tidy)" >&2
    exit 1
fi
cm_stamp="$bin/cert-manager.version"
if [[ ! -f $cm_stamp || $(<"$cm_stamp") != "$CERT_MANAGER_VERSION" ]]; then
    rm -f "$bin/cert-manager" "$bin/cert-manager-crds.yaml" "$cm_stamp"
    echo "$CERT_MANAGER_VERSION" >"$cm_stamp"
fi
if [[ -f "$bin/cert-manager-crds.yaml" ]]; then
    echo "controlplane: cert-manager-crds.yaml cached in $bin" >&2
else
    cm_dir=$(cd "$here/certmanager" && go mod download "$cm_module" && go list -m -f '{{.Dir}}' "$cm_module")
    crds=("$cm_dir"/deploy/crds/*.yaml)
    if ((${#crds[@]} < 6)); then
        echo "controlplane: expected 6 CRD files in $cm_dir/deploy/crds, found ${#crds[@]}" >&2
        exit 1
    fi
    cat "${crds[@]}" >"$bin/cert-manager-crds.yaml.part"
    mv "$bin/cert-manager-crds.yaml.part" "$bin/cert-manager-crds.yaml"
    echo "controlplane: copied ${#crds[@]} cert-manager CRDs to $bin/cert-manager-crds.yaml" >&2
fi
build cert-manager certmanager . "-s -w -X $cm_module/pkg/util.AppVersion=$CERT_MANAGER_VERSION"
echo "$bin"
