#!/usr/bin/env bash
# make kind-e2e: the end-to-end suite (test/e2e) on a kind cluster of your own,
# the same suite `make node-e2e` runs on hack/node's node. It builds our images
# with docker from our Dockerfiles, loads them and the official mariadb:10.11
# into the cluster, and runs the suite with E2E_KUBECONFIG pointing at it.
#
# NOT RUN in this project's CI (its machines have no Docker engine): written
# for users and contributors with kind; report what fails.
#
# Needs: docker, kind (a one-node cluster: `kind create cluster`), root or
# sudo for one route, Node 22 and `make tools build`. The suite reaches pods by
# their IPs and pods reach the suite's S3 server on the kind network's gateway,
# so the script adds a route to the pod network via the kind node (removed
# at the end). Volume snapshots: kind's default StorageClass (local-path) has
# none; install a CSI driver with snapshots and a default VolumeSnapshotClass
# (kubernetes-csi's csi-driver-host-path deploy/ does both), or leave out the
# snapshot file: E2E_FILES="test/e2e/operator.test.ts ...".
#   KIND_CLUSTER=kind make kind-e2e
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-kind}"
TAG="${E2E_TAG:-e2e-$(git -C "${ROOT}" rev-parse --short HEAD)}"
log() { printf '[kind-e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for t in docker kind kubectl; do command -v "${t}" >/dev/null || die "${t} is not on PATH"; done
kind get clusters | grep -qxF "${CLUSTER}" || die "no kind cluster ${CLUSTER} (kind create cluster --name ${CLUSTER})"

AGENT="localhost/replicator-agent:${TAG}"
OPERATOR="localhost/replicator-operator:${TAG}"
PLUGIN="localhost/replicator-failing-plugin:${TAG}"
log "building ${AGENT}, ${OPERATOR}, ${PLUGIN}"
docker build -q -t "${AGENT}" -f "${ROOT}/Dockerfile.agent" "${ROOT}" >/dev/null
docker build -q -t "${OPERATOR}" -f "${ROOT}/Dockerfile" "${ROOT}" >/dev/null
ctx="$(mktemp -d)"
trap 'rm -rf "${ctx}"' EXIT
cp "${ROOT}/hack/node/images/failing-plugin/Containerfile" "${ROOT}/test/fixtures/failing-plugin.mjs" "${ctx}/"
docker build -q -t "${PLUGIN}" --build-arg BASE="${AGENT}" -f "${ctx}/Containerfile" "${ctx}" >/dev/null
docker image inspect mariadb:10.11 >/dev/null 2>&1 || docker pull -q mariadb:10.11 >/dev/null
for i in "${AGENT}" "${OPERATOR}" "${PLUGIN}" mariadb:10.11; do kind load docker-image --name "${CLUSTER}" "${i}" >/dev/null; done

kubeconfig="${ctx}/kubeconfig"
kind get kubeconfig --name "${CLUSTER}" >"${kubeconfig}"
node="$(kubectl --kubeconfig "${kubeconfig}" get nodes -o jsonpath='{.items[0].metadata.name}')"
node_ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "${node}" | awk '{print $1}')"
gateway="$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -m1 '\.')"
pod_cidr="$(kubectl --kubeconfig "${kubeconfig}" get node "${node}" -o jsonpath='{.spec.podCIDR}')"
[[ -n "${node_ip}" && -n "${gateway}" && -n "${pod_cidr}" ]] || die "could not read the node address, the kind network's gateway or the pod CIDR"
SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO=sudo
if ! ip route show "${pod_cidr}" | grep -q .; then
  ${SUDO} ip route add "${pod_cidr}" via "${node_ip}"
  trap 'rm -rf "${ctx}"; ${SUDO} ip route del "${pod_cidr}" via "${node_ip}" || true' EXIT
fi
log "suite on kind-${CLUSTER}: S3 on ${gateway}, pods ${pod_cidr} via ${node_ip}"
export E2E_KUBECONFIG="${kubeconfig}" E2E_AGENT_IMAGE="${AGENT}" E2E_OPERATOR_IMAGE="${OPERATOR}" \
  E2E_MARIADB_IMAGE=mariadb:10.11 E2E_FAILING_PLUGIN_IMAGE="${PLUGIN}" E2E_S3_HOST="${gateway}" \
  E2E_HELM="${E2E_HELM:-$(command -v helm || echo "${ROOT}/.tools/bin/helm")}"
cd "${ROOT}"
# shellcheck disable=SC2086
npx vitest run --project cluster ${E2E_FILES:-test/e2e}
