# Daily tasks for tierguard. `make help` lists them.
#
# Cluster targets use the current kubectl context; images are tagged :dev
# (see deploy/base/kustomization.yaml `images:` to point at a registry).

CARGO ?= cargo
KUBECTL ?= kubectl
DOCKER ?= docker
KIND_CLUSTER ?= tierguard-e2e
CONFORMANCE_CASES ?= ../shared/conformance/cases
DATAPLANE ?= model
CERTS_DIR ?= certs/out
WEBHOOK_IMAGE ?= tierguard-webhook:dev
ENFORCER_IMAGE ?= tierguard-enforcer:dev

.PHONY: help fmt fmt-check clippy test bench build image image-webhook image-enforcer \
	kind-load deploy deploy-audit undeploy render e2e e2e-local conformance conformance-netns certs deploy-deps

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

fmt: ## format the workspace
	$(CARGO) fmt --all

fmt-check: ## check formatting
	$(CARGO) fmt --all --check

clippy: ## lint, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: ## unit, integration and deployment-manifest tests
	$(CARGO) test --workspace

bench: ## benchmarks (hostile_load holds 12,000 connections: the soft open-files limit is raised to the hard one)
	ulimit -n "$$(ulimit -Hn)" 2>/dev/null || true; $(CARGO) bench --workspace

build: ## release binaries
	$(CARGO) build --release -p tierguard-webhook -p tierguard-enforcer

image: image-webhook image-enforcer ## both container images

image-webhook: ## the webhook image
	DOCKER_BUILDKIT=1 $(DOCKER) build -f deploy/docker/webhook.Dockerfile -t $(WEBHOOK_IMAGE) .

image-enforcer: ## the enforcer image
	DOCKER_BUILDKIT=1 $(DOCKER) build -f deploy/docker/enforcer.Dockerfile -t $(ENFORCER_IMAGE) .

kind-load: image ## load the images into the kind cluster $(KIND_CLUSTER)
	kind load docker-image --name $(KIND_CLUSTER) $(WEBHOOK_IMAGE) $(ENFORCER_IMAGE)

render: ## print what `deploy` applies
	$(KUBECTL) kustomize deploy/

deploy: ## install tierguard (cert-manager must be installed)
	$(KUBECTL) apply -k deploy/

deploy-audit: ## install tierguard in audit mode
	$(KUBECTL) apply -k deploy/overlays/audit

undeploy: ## uninstall, node rules included (see deploy/README.md)
	-$(KUBECTL) delete validatingwebhookconfiguration tierguard --ignore-not-found
	-$(KUBECTL) delete mutatingwebhookconfiguration tierguard --ignore-not-found
	-$(KUBECTL) -n tierguard-system delete daemonset tierguard-enforcer --ignore-not-found --wait=true
	$(KUBECTL) apply -k deploy/cleanup
	$(KUBECTL) -n tierguard-system rollout status daemonset/tierguard-enforcer-cleanup --timeout=300s
	$(KUBECTL) delete -k deploy/cleanup --ignore-not-found
	$(KUBECTL) delete -k deploy/ --ignore-not-found

e2e: ## the kind end-to-end test (needs docker and kind)
	bash tests/e2e/kind.sh

e2e-local: ## the end-to-end test against a real control plane built from Go modules (root; no Docker)
	bash tests/controlplane/build.sh >/dev/null
	$(CARGO) build --release -p tierguard-webhook -p tierguard-enforcer
	TIERGUARD_E2E_BIN_DIR=$(CURDIR)/target/release $(CARGO) test -p tierguard-integration --test e2e_controlplane

conformance: ## reachability cases on the policy model (DATAPLANE=netns needs root)
	$(CARGO) run --release -p tierguard-conformance -- --dataplane $(DATAPLANE) $(CONFORMANCE_CASES)

conformance-netns: ## reachability cases with real iptables in network namespaces (root)
	$(MAKE) conformance DATAPLANE=netns

certs: ## dev CA and serving cert into $(CERTS_DIR), for running without cert-manager
	bash certs/gen-dev-certs.sh $(CERTS_DIR)

deploy-deps: ## install openssl, shellcheck and kubectl for the deployment tests (root, Debian)
	bash .ci/deploy-deps.sh
