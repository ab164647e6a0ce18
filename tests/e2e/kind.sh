#!/usr/bin/env bash
# tierguard end-to-end on a kind cluster: admission and enforcement for real.
#
#   tests/e2e/kind.sh            # from anywhere; needs docker, kind, kubectl
#   KEEP_CLUSTER=1 tests/e2e/kind.sh   # keep the cluster afterwards
#
# What it does:
#   1. creates a kind cluster (1 control plane, 2 workers) with kind's default
#      CNI, kindnet, which does not enforce NetworkPolicy; kind's own policy
#      addon (kube-network-policies, kind >= 0.24) is removed, so every
#      denial seen here comes from tierguard-enforcer's rules;
#   2. installs cert-manager (pinned) and waits for it;
#   3. builds the two images and loads them into the nodes;
#   4. deploys with `kubectl apply -k deploy/` and waits for the rollout;
#   5. checks first that a deny-all policy blocks nothing before tierguard is
#      installed (no other enforcer), then: namespace mutation (kubernetes.io/metadata.name and tier
#      label), rejection of an unknown tier, rejection of a default-deny that
#      drops DNS (R2), admission of deploy/examples/three-tier, pod-to-pod
#      reachability exactly as that example and the template say, no failed
#      admission while a webhook pod is deleted, and finally that removing
#      the enforcer (and running the cleanup DaemonSet) lifts the denials.
#
# Environment (all optional):
#   CLUSTER_NAME           kind cluster name (tierguard-e2e)
#   KIND_NODE_IMAGE        node image (kindest/node:v1.33.1)
#   CERT_MANAGER_VERSION   cert-manager release (v1.17.2)
#   AGNHOST_IMAGE          probe image (registry.k8s.io/e2e-test-images/agnhost:2.53)
#   KEEP_CLUSTER=1         do not delete the cluster at the end
#   SKIP_BUILD=1           use tierguard-webhook:dev / tierguard-enforcer:dev as built
set -euo pipefail

CLUSTER_NAME=${CLUSTER_NAME:-tierguard-e2e}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.33.1}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.17.2}
AGNHOST_IMAGE=${AGNHOST_IMAGE:-registry.k8s.io/e2e-test-images/agnhost:2.53}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
SKIP_BUILD=${SKIP_BUILD:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d)
CONTEXT="kind-$CLUSTER_NAME"
NS_SYSTEM=tierguard-system
WEBHOOK_IMAGE=tierguard-webhook:dev
ENFORCER_IMAGE=tierguard-enforcer:dev
EXAMPLE_DIR="$ROOT/deploy/examples/three-tier"
EXAMPLE_NS=shop
OUTSIDE_NS=e2e-outside

CHECKS_PASSED=0
CHECKS_FAILED=0

log() { printf '\n=== %s\n' "$*"; }
pass() {
    CHECKS_PASSED=$((CHECKS_PASSED + 1))
    printf 'ok   %s\n' "$*"
}
fail() {
    CHECKS_FAILED=$((CHECKS_FAILED + 1))
    printf 'FAIL %s\n' "$*" >&2
}
die() {
    printf 'ERROR %s\n' "$*" >&2
    exit 1
}
k() { kubectl --context "$CONTEXT" "$@"; }

# retry ATTEMPTS DELAY COMMAND...: runs COMMAND until it succeeds.
retry() {
    local attempts=$1 delay=$2 i
    shift 2
    for ((i = 1; i <= attempts; i++)); do
        if "$@"; then
            return 0
        fi
        sleep "$delay"
    done
    return 1
}

diagnostics() {
    echo "----- diagnostics -----"
    k get nodes -o wide || true
    k get pods -A -o wide || true
    k -n "$NS_SYSTEM" get certificates,issuers,secrets || true
    k -n "$NS_SYSTEM" describe pods || true
    k -n "$NS_SYSTEM" logs -l app.kubernetes.io/name=tierguard-webhook --all-containers --tail=200 --prefix || true
    k -n "$NS_SYSTEM" logs -l app.kubernetes.io/name=tierguard-enforcer --all-containers --tail=200 --prefix || true
    k get events -A --sort-by=.lastTimestamp | tail -n 60 || true
    local node
    for node in $(kind get nodes --name "$CLUSTER_NAME" 2>/dev/null); do
        echo "--- $node: TG- rules"
        docker exec "$node" sh -c 'iptables-save | grep -E "TG-|tg-"; ipset list -n | grep "^tg-"' || true
    done
}

cleanup() {
    local rc=$?
    if ((rc != 0)); then
        diagnostics
    fi
    if [[ "$KEEP_CLUSTER" == 1 ]]; then
        echo "keeping cluster $CLUSTER_NAME (kubectl --context $CONTEXT ...; kind delete cluster --name $CLUSTER_NAME)"
    else
        kind delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}

require_tools() {
    local t
    for t in docker kind kubectl; do
        command -v "$t" >/dev/null || die "$t is required (see deploy/README.md, 'End-to-end test on kind')"
    done
    docker info >/dev/null 2>&1 || die "docker is installed but no engine answers"
    [[ -d "$EXAMPLE_DIR" ]] || die "$EXAMPLE_DIR is missing"
}

create_cluster() {
    log "kind cluster $CLUSTER_NAME ($KIND_NODE_IMAGE)"
    kind delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
    cat >"$WORK/kind.yaml" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # kindnet: routes pod traffic through each node's FORWARD chain and does not
  # itself enforce NetworkPolicy
  disableDefaultCNI: false
nodes:
  - role: control-plane
  - role: worker
  - role: worker
EOF
    kind create cluster --name "$CLUSTER_NAME" --image "$KIND_NODE_IMAGE" --config "$WORK/kind.yaml" --wait 180s
    k wait --for=condition=Ready nodes --all --timeout=180s

    # kind >= 0.24 ships a NetworkPolicy addon; take it out so that only
    # tierguard-enforcer enforces policies in this cluster
    if k -n kube-system get daemonset kube-network-policies >/dev/null 2>&1; then
        echo "removing kind's kube-network-policies addon"
        k -n kube-system delete daemonset kube-network-policies --wait=true --timeout=120s
        retry 60 2 bash -c "! kubectl --context '$CONTEXT' -n kube-system get pods -l app=kube-network-policies -o name | grep -q ."
        local node
        for node in $(kind get nodes --name "$CLUSTER_NAME"); do
            docker exec "$node" sh -c 'nft list tables 2>/dev/null | grep -q kube-network-policies && nft delete table inet kube-network-policies || true'
        done
    fi
}

install_cert_manager() {
    log "cert-manager $CERT_MANAGER_VERSION"
    k apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
    k -n cert-manager rollout status deployment/cert-manager --timeout=300s
    k -n cert-manager rollout status deployment/cert-manager-cainjector --timeout=300s
    k -n cert-manager rollout status deployment/cert-manager-webhook --timeout=300s
}

build_images() {
    if [[ "$SKIP_BUILD" == 1 ]]; then
        log "using prebuilt images"
    else
        log "building images"
        DOCKER_BUILDKIT=1 docker build -f "$ROOT/deploy/docker/webhook.Dockerfile" -t "$WEBHOOK_IMAGE" "$ROOT"
        DOCKER_BUILDKIT=1 docker build -f "$ROOT/deploy/docker/enforcer.Dockerfile" -t "$ENFORCER_IMAGE" "$ROOT"
    fi
    docker pull "$AGNHOST_IMAGE" >/dev/null
    kind load docker-image --name "$CLUSTER_NAME" "$WEBHOOK_IMAGE" "$ENFORCER_IMAGE" "$AGNHOST_IMAGE"
}

deploy_tierguard() {
    log "kubectl apply -k deploy/"
    # cert-manager's own webhook can lag its rollout: retry the apply
    retry 30 5 k apply -k "$ROOT/deploy/" || die "kubectl apply -k deploy/ kept failing"
    k -n "$NS_SYSTEM" wait --for=condition=Ready certificate/tierguard-webhook-serving --timeout=180s
    k -n "$NS_SYSTEM" rollout status deployment/tierguard-webhook --timeout=300s
    k -n "$NS_SYSTEM" rollout status daemonset/tierguard-enforcer --timeout=300s
    local what
    for what in validatingwebhookconfiguration mutatingwebhookconfiguration; do
        retry 60 2 bash -c "[[ -n \"\$(kubectl --context '$CONTEXT' get $what tierguard -o jsonpath='{.webhooks[0].clientConfig.caBundle}')\" ]]" ||
            die "cert-manager did not inject the CA into $what/tierguard"
    done
    pass "tierguard deployed: webhook and enforcer rolled out, CA injected"
}

check_namespace_mutation() {
    log "namespace mutation and validation"
    # a dry-run create shows the webhook works before the real checks
    retry 30 2 k create namespace e2e-ready-probe --dry-run=server -o name >/dev/null ||
        die "the API server cannot reach the webhook"

    k create namespace shop-backend
    local name tier
    name=$(k get namespace shop-backend -o jsonpath='{.metadata.labels.kubernetes\.io/metadata\.name}')
    tier=$(k get namespace shop-backend -o jsonpath='{.metadata.labels.tier}')
    if [[ "$name" == shop-backend && "$tier" == backend ]]; then
        pass "namespace shop-backend got kubernetes.io/metadata.name=shop-backend and tier=backend"
    else
        fail "namespace shop-backend labels: metadata.name=$name tier=$tier"
    fi

    k create namespace e2e-untiered
    tier=$(k get namespace e2e-untiered -o jsonpath='{.metadata.labels.tier}')
    if [[ -z "$tier" ]]; then
        pass "namespace e2e-untiered (no matching pattern) got no tier label"
    else
        fail "namespace e2e-untiered got tier=$tier"
    fi

    local out
    if out=$(k apply -f - 2>&1 <<'EOF'
apiVersion: v1
kind: Namespace
metadata:
  name: e2e-bogus-tier
  labels:
    tier: bogus
EOF
    ); then
        fail "a namespace with tier=bogus was admitted"
    elif grep -q "denied the request" <<<"$out"; then
        pass "a namespace with an unknown tier is rejected: $(tail -n1 <<<"$out")"
    else
        fail "tier=bogus failed for another reason: $out"
    fi
}

check_dns_rejection() {
    log "R2: a default-deny that drops DNS is rejected"
    local out
    if out=$(k apply -f - 2>&1 <<'EOF'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-all
  namespace: shop-backend
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
EOF
    ); then
        fail "a default-deny without DNS was admitted"
    elif grep -q "denied the request" <<<"$out" && grep -q "would drop DNS" <<<"$out"; then
        pass "R2 rejection: $(grep -m1 'would drop DNS' <<<"$out")"
    else
        fail "the DNS-dropping policy failed, but not with the R2 message: $out"
    fi
}

# pod NAME NAMESPACE TIER PORT: an agnhost pod serving TCP on PORT.
pod() {
    local name=$1 ns=$2 tier=$3 port=$4
    local tier_label=""
    if [[ -n "$tier" ]]; then
        tier_label="tier: $tier"
    fi
    k apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: $ns
  labels:
    app: e2e-probe
    $tier_label
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: agnhost
      image: $AGNHOST_IMAGE
      imagePullPolicy: IfNotPresent
      args: ["netexec", "--http-port=$port"]
      ports:
        - containerPort: $port
      readinessProbe:
        tcpSocket:
          port: $port
        periodSeconds: 2
EOF
}

pod_ip() { k -n "$1" get pod "$2" -o jsonpath='{.status.podIP}'; }

# can_connect SRC_NS SRC DST_IP PORT: a TCP connect from SRC, 2 s timeout.
can_connect() {
    k -n "$1" exec "$2" -- /agnhost connect --timeout=2s "$3:$4" >/dev/null 2>&1
}

# The reachability cases: source pod, destination pod, port, expected.
# Sources in shop carry their tier in their name; e2e-outside/outsider is a
# pod in another governed namespace without policies.
REACHABILITY=(
    "shop/gateway backend-a 8080 allow"
    "shop/frontend backend-a 8080 allow"
    "shop/backend-a backend-b 8080 allow"
    "shop/backend-a data 5432 allow"
    "e2e-outside/outsider gateway 443 allow"
    "e2e-outside/outsider frontend 8443 allow"
    "shop/gateway data 5432 deny"
    "shop/frontend data 5432 deny"
    "shop/gateway frontend 8443 deny"
    "shop/frontend gateway 443 deny"
    "shop/backend-a gateway 443 deny"
    "shop/data backend-a 8080 deny"
    "shop/data gateway 443 deny"
    "e2e-outside/outsider backend-a 8080 deny"
    "e2e-outside/outsider data 5432 deny"
)

declare -A IPS=()

setup_probe_pods() {
    log "probe pods in $EXAMPLE_NS (tiers) and $OUTSIDE_NS"
    k apply -f "$EXAMPLE_DIR/00-namespace.yaml"
    k create namespace "$OUTSIDE_NS"
    pod gateway "$EXAMPLE_NS" gateway 443
    pod frontend "$EXAMPLE_NS" frontend 8443
    pod backend-a "$EXAMPLE_NS" backend 8080
    pod backend-b "$EXAMPLE_NS" backend 8080
    pod data "$EXAMPLE_NS" data 5432
    pod outsider "$OUTSIDE_NS" "" 8000
    k -n "$EXAMPLE_NS" wait --for=condition=Ready pod -l app=e2e-probe --timeout=180s
    k -n "$OUTSIDE_NS" wait --for=condition=Ready pod -l app=e2e-probe --timeout=180s
    local p
    for p in gateway frontend backend-a backend-b data; do
        IPS[$p]=$(pod_ip "$EXAMPLE_NS" "$p")
    done
    echo "pods: $(for p in "${!IPS[@]}"; do printf '%s=%s ' "$p" "${IPS[$p]}"; done)"
}

# check_reachability MODE: MODE=baseline expects every case to connect;
# MODE=policy expects each case's verdict (waiting for the enforcer to
# converge first); MODE=lifted expects every case to connect again.
check_reachability() {
    local mode=$1 case src_ref dst port want src_ns src ip
    for case in "${REACHABILITY[@]}"; do
        read -r src_ref dst port want <<<"$case"
        src_ns=${src_ref%%/*}
        src=${src_ref#*/}
        ip=${IPS[$dst]}
        if [[ "$mode" != policy ]]; then
            want=allow
        fi
        if [[ "$want" == allow ]]; then
            if retry 30 2 can_connect "$src_ns" "$src" "$ip" "$port"; then
                pass "[$mode] $src_ref -> $dst:$port connects"
            else
                fail "[$mode] $src_ref -> $dst:$port should connect"
            fi
        else
            # denied once the rules are in, and still denied on a second try
            if retry 30 2 bash -c "! kubectl --context '$CONTEXT' -n '$src_ns' exec '$src' -- /agnhost connect --timeout=2s '$ip:$port' >/dev/null 2>&1" &&
                ! can_connect "$src_ns" "$src" "$ip" "$port"; then
                pass "[$mode] $src_ref -> $dst:$port is denied"
            else
                fail "[$mode] $src_ref -> $dst:$port should be denied"
            fi
        fi
    done
}

check_dns_allowed() {
    # the default-deny allows DNS: TCP/53 to the cluster DNS Service, from every tier
    local dns_ip p
    dns_ip=$(k -n kube-system get service kube-dns -o jsonpath='{.spec.clusterIP}')
    for p in gateway frontend backend-a data; do
        if retry 15 2 can_connect "$EXAMPLE_NS" "$p" "$dns_ip" 53; then
            pass "[policy] shop/$p reaches DNS ($dns_ip TCP/53)"
        else
            fail "[policy] shop/$p cannot reach DNS ($dns_ip TCP/53)"
        fi
    done
}

check_no_other_enforcer() {
    log "control: nothing but tierguard enforces NetworkPolicy here"
    k create namespace e2e-control
    pod server e2e-control "" 8080
    pod client e2e-control "" 8000
    k -n e2e-control wait --for=condition=Ready pod -l app=e2e-probe --timeout=180s
    local ip
    ip=$(pod_ip e2e-control server)
    retry 15 2 can_connect e2e-control client "$ip" 8080 || die "pods cannot connect even without policies"
    k apply -f - <<'EOF2'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: e2e-control
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
EOF2
    sleep 10
    if can_connect e2e-control client "$ip" 8080; then
        pass "without tierguard a deny-all policy blocks nothing (kindnet does not enforce)"
    else
        die "a deny-all policy is enforced before tierguard is installed: another NetworkPolicy implementation runs in this cluster (kind's kube-network-policies?)"
    fi
    k delete namespace e2e-control --wait=true --timeout=120s
}

apply_example() {
    log "the three-tier example is admitted"
    local out
    if out=$(k apply -f "$EXAMPLE_DIR/" 2>&1); then
        pass "deploy/examples/three-tier admitted"
        echo "$out"
    else
        fail "deploy/examples/three-tier was not admitted: $out"
        return 1
    fi
}

check_rules_on_nodes() {
    local node chains sets
    for node in $(kind get nodes --name "$CLUSTER_NAME"); do
        chains=$(docker exec "$node" sh -c 'iptables-save -t filter | grep -c "^:TG-"' || true)
        sets=$(docker exec "$node" sh -c 'ipset list -n | grep -c "^tg-"' || true)
        echo "$node: ${chains:-0} TG- chains, ${sets:-0} tg- sets"
    done
    local probe_node
    probe_node=$(k -n "$EXAMPLE_NS" get pod data -o jsonpath='{.spec.nodeName}')
    chains=$(docker exec "$probe_node" sh -c 'iptables-save -t filter | grep -c "^:TG-"' || true)
    if ((${chains:-0} > 0)); then
        pass "node $probe_node (runs shop/data) has TG- chains from tierguard-enforcer"
    else
        fail "node $probe_node has no TG- chains"
    fi
}

check_webhook_survives_pod_deletion() {
    log "no failed admission while a webhook pod is deleted"
    k -n "$NS_SYSTEM" rollout status deployment/tierguard-webhook --timeout=120s
    cat >"$WORK/dry-run-policy.yaml" <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: e2e-dry-run
  namespace: $EXAMPLE_NS
spec:
  podSelector:
    matchLabels: {tier: gateway}
  policyTypes: [Ingress]
  ingress:
    - ports:
        - {protocol: TCP, port: 443}
EOF
    local victim
    victim=$(k -n "$NS_SYSTEM" get pods -l app.kubernetes.io/name=tierguard-webhook -o jsonpath='{.items[0].metadata.name}')
    local ok=0 failed=0 i
    local end=$((SECONDS + 40))
    for ((i = 0; SECONDS < end; i++)); do
        if ((i == 5)); then
            echo "deleting webhook pod $victim"
            k -n "$NS_SYSTEM" delete pod "$victim" --wait=false
        fi
        if k create --dry-run=server -f "$WORK/dry-run-policy.yaml" -o name >/dev/null 2>"$WORK/dry-run.err"; then
            ok=$((ok + 1))
        else
            failed=$((failed + 1))
            cat "$WORK/dry-run.err" >&2
        fi
        sleep 0.2
    done
    if ((failed == 0 && ok > 20)); then
        pass "$ok dry-run admissions during the deletion of $victim, none failed"
    else
        fail "$failed of $((ok + failed)) admissions failed while $victim was deleted"
    fi
    k -n "$NS_SYSTEM" rollout status deployment/tierguard-webhook --timeout=120s
}

check_enforcement_is_ours() {
    log "control: without tierguard-enforcer the denials go away"
    k -n "$NS_SYSTEM" delete daemonset tierguard-enforcer --wait=true --timeout=120s
    retry 60 2 bash -c "! kubectl --context '$CONTEXT' -n '$NS_SYSTEM' get pods -l app.kubernetes.io/name=tierguard-enforcer -o name | grep -q ." ||
        die "enforcer pods did not go away"
    k apply -k "$ROOT/deploy/cleanup"
    k -n "$NS_SYSTEM" rollout status daemonset/tierguard-enforcer-cleanup --timeout=180s
    local node chains leftover=0
    for node in $(kind get nodes --name "$CLUSTER_NAME"); do
        chains=$(docker exec "$node" sh -c 'iptables-save | grep -c "TG-"' || true)
        if ((${chains:-0} > 0)); then
            leftover=1
            echo "$node still has $chains TG- lines"
        fi
    done
    if ((leftover == 0)); then
        pass "tierguard-enforcer cleanup removed every TG- chain on every node"
    else
        fail "TG- rules left after cleanup"
    fi
    k delete -k "$ROOT/deploy/cleanup" --wait=true
    check_reachability lifted
}

main() {
    require_tools
    trap cleanup EXIT
    create_cluster
    install_cert_manager
    build_images
    check_no_other_enforcer
    deploy_tierguard
    check_namespace_mutation
    check_dns_rejection
    setup_probe_pods
    check_reachability baseline
    apply_example
    check_reachability policy
    check_dns_allowed
    check_rules_on_nodes
    check_webhook_survives_pod_deletion
    check_enforcement_is_ours
    echo
    echo "kind e2e: $CHECKS_PASSED passed, $CHECKS_FAILED failed"
    if ((CHECKS_FAILED > 0)); then
        exit 1
    fi
}

main "$@"
