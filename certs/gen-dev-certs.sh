#!/usr/bin/env bash
# Makes a development CA and a serving certificate for the tierguard webhook,
# for running without cert-manager (see certs/README.md).
#
#   certs/gen-dev-certs.sh OUT_DIR
#
# Writes into OUT_DIR:
#   ca.crt, ca.key    the dev CA (kept and reused when OUT_DIR already has it)
#   tls.crt, tls.key  the serving certificate and its key, signed by the CA,
#                     for <service>.<namespace>.svc, <service>.<namespace>.svc.cluster.local,
#                     localhost and 127.0.0.1
# Environment: TIERGUARD_SERVICE (default tierguard-webhook),
# TIERGUARD_NAMESPACE (default tierguard-system), CERT_DAYS (default 365).
set -euo pipefail

usage() {
    echo "usage: $0 OUT_DIR" >&2
    exit 2
}

[[ $# -eq 1 && -n "$1" ]] || usage
out=$1
service=${TIERGUARD_SERVICE:-tierguard-webhook}
namespace=${TIERGUARD_NAMESPACE:-tierguard-system}
days=${CERT_DAYS:-365}

command -v openssl >/dev/null || {
    echo "gen-dev-certs.sh: openssl is not installed" >&2
    exit 1
}

umask 077
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

svc="$service.$namespace.svc"

if [[ -s "$out/ca.crt" && -s "$out/ca.key" ]]; then
    echo "reusing the CA in $out"
else
    openssl req -x509 -new -nodes -sha256 -days 3650 \
        -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$work/ca.key" -out "$work/ca.crt" \
        -subj "/O=tierguard development/CN=tierguard dev CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" 2>/dev/null
    mv "$work/ca.key" "$work/ca.crt" "$out/"
fi

cat >"$work/serving.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:$svc, DNS:$svc.cluster.local, DNS:localhost, IP:127.0.0.1
EXT

openssl req -new -nodes -sha256 \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$work/tls.key" -out "$work/tls.csr" \
    -subj "/O=tierguard development/CN=$svc" 2>/dev/null
openssl x509 -req -sha256 -days "$days" \
    -in "$work/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$work/serving.ext" -out "$work/tls.crt" 2>/dev/null
openssl verify -CAfile "$out/ca.crt" "$work/tls.crt" >/dev/null
mv "$work/tls.key" "$work/tls.crt" "$out/"

echo "wrote $out/ca.crt, $out/tls.crt and $out/tls.key for $svc (+ .cluster.local, localhost, 127.0.0.1)"
