#!/usr/bin/env bash
# The e2e stage of `make test` (as root): the node's tools and images (both
# cached: a warm run builds nothing), node-up, the e2e suite on the node
# (hack/node/e2e.sh), every deploy/examples manifest as its header says
# (hack/node/examples.sh), node-down. A node that was already up is used and left
# up. Prints the time of each step.
set -uo pipefail
LOG_TAG=test-e2e
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ "$(id -u)" != 0 ]]; then
  die "the e2e suite runs on a real node (hack/node), which needs root; without root, run it on the test kubelet: make test-e2e-local"
fi
t() { local label="$1" t0=${SECONDS}; shift; "$@"; local rc=$?; TIMES+=("${label}: $((SECONDS - t0))s (exit ${rc})"); return "${rc}"; }
TIMES=()
summary() { log "times: ${TIMES[*]}"; }
trap summary EXIT
was_up=0
if pid_alive "${NODE_ROOT}/run/kubelet.pid" && [[ -f "${KUBECONFIG_ADMIN}" ]]; then was_up=1; fi
t "node tools" "${NODE_DIR}/tools.sh" || exit 1
t "images" "${NODE_DIR}/images.sh" || exit 1
if [[ "${was_up}" == 0 ]]; then
  trap '"${NODE_DIR}/down.sh" >/dev/null 2>&1 || log "node-down failed: run make node-down"; summary' EXIT
fi
t "node-up" "${NODE_DIR}/up.sh" >/dev/null || exit 1
t "e2e suite" "${NODE_DIR}/e2e.sh"
suite=$?
t "examples" "${NODE_DIR}/examples.sh"
examples=$?
exit $((suite || examples))
