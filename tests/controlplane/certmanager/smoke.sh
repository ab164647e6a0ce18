#!/usr/bin/env bash
# Smoke test of the cert-manager built by ../build.sh against the control
# plane built next to it: starts etcd and kube-apiserver on loopback (free
# ports, throwaway CA and admin client certificate), applies cert-manager's
# CRDs, runs `cert-manager controller` and `cert-manager cainjector`, applies
# the repository's namespace, cert-manager manifests and both admission
# webhook configurations, and checks that
#   - Secret tierguard-webhook-tls holds a certificate for the webhook's DNS
#     names, signed by the tierguard-ca CA, matching its key;
#   - both webhook configurations carry that CA as caBundle;
#   - a renewal triggered as `cmctl renew` does it (an Issuing condition set
#     through the status subresource) puts a new certificate with a new key
#     into the Secret, still injected and valid.
# Everything it starts is stopped and its files removed on exit. Every wait
# is bounded. Exit status 0 only if every check passed.
#
# Environment: TIERGUARD_CONTROLPLANE_BIN, a bin folder made by build.sh
# (default: run build.sh, which builds what is missing and prints it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
wait_seconds=120

log() { echo "smoke: $*" >&2; }
fail() {
    echo "smoke: FAIL: $*" >&2
    exit 1
}

command -v kubectl >/dev/null || fail "kubectl is not installed"
command -v openssl >/dev/null || fail "openssl is not installed"
bin=${TIERGUARD_CONTROLPLANE_BIN:-$(bash "$here/../build.sh")}
for f in etcd kube-apiserver cert-manager; do
    [[ -x $bin/$f ]] || fail "$bin/$f is missing (run tests/controlplane/build.sh)"
done
[[ -f $bin/cert-manager-crds.yaml ]] || fail "$bin/cert-manager-crds.yaml is missing"

work=$(mktemp -d "${TMPDIR:-/tmp}/tierguard-cm-smoke.XXXXXX")
declare -A pids=()
cleanup() {
    local status=$?
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if ((status != 0)); then
        for f in "$work"/*.log; do
            [[ -f $f ]] || continue
            echo "---- last lines of $(basename "$f")" >&2
            tail -n 15 "$f" >&2
        done
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

# Three free loopback ports, all above 20000 (the kernel's ephemeral range).
read -r etcd_client_port etcd_peer_port apiserver_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
for p in "$etcd_client_port" "$etcd_peer_port" "$apiserver_port"; do
    ((p > 20000)) || fail "got port $p, not above 20000"
done

# Throwaway PKI: one CA signing the API server's serving certificate and the
# admin client certificate (group system:masters), plus the service-account
# token signing key the API server insists on.
pki=$work/pki
mkdir -p "$pki"
ossl() { openssl "$@" 2>>"$work/openssl.log"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=smoke-ca -keyout "$pki/ca.key" -out "$pki/ca.crt"
issue() {
    local name=$1 subject=$2 ext=$3
    ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$subject" \
        -keyout "$pki/$name.key" -out "$pki/$name.csr"
    ossl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 1 -extfile <(printf '%s\n' "$ext") -out "$pki/$name.crt"
}
issue apiserver /CN=kube-apiserver "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
issue admin "/O=system:masters/CN=smoke-admin" "extendedKeyUsage=clientAuth"
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/sa.key"
ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

kubeconfig=$work/admin.kubeconfig
export KUBECONFIG=$kubeconfig
kubectl config set-cluster smoke --server="https://127.0.0.1:$apiserver_port" \
    --certificate-authority="$pki/ca.crt" --embed-certs >/dev/null
kubectl config set-credentials admin --client-certificate="$pki/admin.crt" \
    --client-key="$pki/admin.key" --embed-certs >/dev/null
kubectl config set-context smoke --cluster=smoke --user=admin >/dev/null
kubectl config use-context smoke >/dev/null

# Fails if a process started here has exited: none of them should.
check_alive() {
    local name
    for name in "${!pids[@]}"; do
        kill -0 "${pids[$name]}" 2>/dev/null || fail "$name exited (see $name.log below)"
    done
}
# Polls a command until it succeeds, at most $wait_seconds.
wait_for() {
    local what=$1
    shift
    local deadline=$((SECONDS + wait_seconds))
    until "$@" >/dev/null 2>&1; do
        check_alive
        ((SECONDS < deadline)) || fail "timed out after ${wait_seconds}s waiting for $what"
        sleep 1
    done
}

log "etcd on 127.0.0.1:$etcd_client_port"
"$bin/etcd" --name smoke --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_client_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "smoke=http://127.0.0.1:$etcd_peer_port" >"$work/etcd.log" 2>&1 &
pids[etcd]=$!

log "kube-apiserver on 127.0.0.1:$apiserver_port"
# --endpoint-reconciler-type=none: the default Service's endpoint would be the
# loopback advertise address, which endpoint validation rejects.
"$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_client_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --secure-port "$apiserver_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode Node,RBAC \
    --endpoint-reconciler-type none \
    --cert-dir "$work/apiserver-certs" >"$work/kube-apiserver.log" 2>&1 &
pids[kube-apiserver]=$!
wait_for "the API server to be ready" kubectl get --raw /readyz

log "applying cert-manager CRDs"
kubectl apply --server-side -f "$bin/cert-manager-crds.yaml" >/dev/null
kubectl wait --for condition=Established --timeout "${wait_seconds}s" \
    crd/certificates.cert-manager.io crd/certificaterequests.cert-manager.io \
    crd/issuers.cert-manager.io crd/clusterissuers.cert-manager.io >/dev/null

log "starting cert-manager $("$bin/cert-manager" version): controller and cainjector"
"$bin/cert-manager" controller --kubeconfig "$kubeconfig" \
    --cluster-resource-namespace tierguard-system >"$work/controller.log" 2>&1 &
pids[controller]=$!
"$bin/cert-manager" cainjector --kubeconfig "$kubeconfig" >"$work/cainjector.log" 2>&1 &
pids[cainjector]=$!

log "applying the namespace, cert-manager manifests and webhook configurations"
kubectl apply -f "$repo/deploy/base/namespace.yaml" >/dev/null
kubectl apply -f "$repo/deploy/base/cert-manager/" >/dev/null
kubectl apply -f "$repo/deploy/base/webhook/validating-webhook.yaml" \
    -f "$repo/deploy/base/webhook/mutating-webhook.yaml" >/dev/null

ns=tierguard-system
cert=certificate/tierguard-webhook-serving
kubectl -n $ns wait --for condition=Ready --timeout "${wait_seconds}s" \
    certificate/tierguard-ca $cert >/dev/null
log "both Certificates Ready (${SECONDS}s since start)"

secret_field() {
    kubectl -n $ns get secret tierguard-webhook-tls -o "jsonpath={.data.$1}" | base64 -d
}
# Checks the Secret's certificate and key (copied into folder $1); sets
# serial and pubkey (sha256 of the certificate's public key).
check_secret() {
    local dir=$1
    mkdir -p "$dir"
    secret_field 'tls\.crt' >"$dir/tls.crt"
    secret_field 'tls\.key' >"$dir/tls.key"
    secret_field 'ca\.crt' >"$dir/ca.crt"
    openssl verify -CAfile "$dir/ca.crt" "$dir/tls.crt" >/dev/null ||
        fail "tls.crt does not verify against ca.crt"
    openssl x509 -in "$dir/tls.crt" -noout -checkend 86400 >/dev/null ||
        fail "tls.crt expires within a day"
    openssl x509 -in "$dir/ca.crt" -noout -subject | grep -q 'CN *= *tierguard-ca' ||
        fail "ca.crt is not the tierguard-ca CA"
    local sans
    sans=$(openssl x509 -in "$dir/tls.crt" -noout -ext subjectAltName | tail -n +2 | tr -d ' ')
    [[ $sans == "DNS:tierguard-webhook.tierguard-system.svc,DNS:tierguard-webhook.tierguard-system.svc.cluster.local" ]] ||
        fail "unexpected subjectAltName: $sans"
    openssl x509 -in "$dir/tls.crt" -noout -ext extendedKeyUsage | grep -q 'TLS Web Server Authentication' ||
        fail "tls.crt lacks the server auth usage"
    local cert_pub key_pub
    cert_pub=$(openssl x509 -in "$dir/tls.crt" -noout -pubkey | openssl sha256 -r | cut -d' ' -f1)
    key_pub=$(openssl pkey -in "$dir/tls.key" -pubout | openssl sha256 -r | cut -d' ' -f1)
    [[ $cert_pub == "$key_pub" ]] || fail "tls.key does not match tls.crt"
    serial=$(openssl x509 -in "$dir/tls.crt" -noout -serial | cut -d= -f2)
    pubkey=$cert_pub
}
# True once every webhook of a configuration carries the expected CA bundle.
ca_injected() {
    local kind=$1 want=$2 bundles
    bundles=$(kubectl get "$kind" tierguard -o jsonpath='{range .webhooks[*]}{.clientConfig.caBundle}{"\n"}{end}')
    [[ -n $bundles ]] && ! grep -vxF "$want" <<<"$bundles" >/dev/null
}
check_injection() {
    local want
    want=$(kubectl -n $ns get secret tierguard-webhook-tls -o 'jsonpath={.data.ca\.crt}')
    for kind in validatingwebhookconfiguration mutatingwebhookconfiguration; do
        wait_for "caBundle in $kind/tierguard" ca_injected "$kind" "$want"
        log "$kind/tierguard: caBundle injected into" \
            "$(kubectl get "$kind" tierguard -o jsonpath='{.webhooks[*].name}')"
    done
}

check_secret "$work/first"
serial1=$serial pub1=$pubkey
log "Secret tierguard-webhook-tls: $(openssl x509 -in "$work/first/tls.crt" -noout -subject -issuer -enddate | tr '\n' ' ')"
log "  serial $serial1, public key sha256 $pub1"
check_injection

log "triggering a renewal (Issuing condition through the status subresource, as cmctl renew)"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kubectl -n $ns patch $cert --subresource status --type json -p "[{\"op\":\"add\",\"path\":\"/status/conditions/-\",\"value\":{\"type\":\"Issuing\",\"status\":\"True\",\"reason\":\"ManuallyTriggered\",\"message\":\"Certificate re-issuance manually triggered by the smoke test\",\"lastTransitionTime\":\"$now\"}}]" >/dev/null
renewed() {
    [[ $(secret_field 'tls\.crt' | openssl x509 -noout -serial | cut -d= -f2) != "$serial1" ]]
}
wait_for "a new certificate in Secret tierguard-webhook-tls" renewed
kubectl -n $ns wait --for condition=Ready --timeout "${wait_seconds}s" $cert >/dev/null
check_secret "$work/second"
serial2=$serial pub2=$pubkey
[[ $serial2 != "$serial1" ]] || fail "the serial did not change"
[[ $pub2 != "$pub1" ]] || fail "the key was not rotated (rotationPolicy Always)"
log "renewed: serial $serial2, public key sha256 $pub2 (both new)"
log "  revision $(kubectl -n $ns get $cert -o jsonpath='{.status.revision}'), not after $(openssl x509 -in "$work/second/tls.crt" -noout -enddate | cut -d= -f2)"
check_injection
log "PASS in ${SECONDS}s"
