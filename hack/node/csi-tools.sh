#!/usr/bin/env bash
# Builds the node's CSI sidecars, static (CGO_ENABLED=0), into .tools/bin/csi/
# (run by hack/node/tools.sh, i.e. make node-tools, and by images.sh when missing):
#   csi-provisioner       github.com/kubernetes-csi/external-provisioner/v5 v5.3.0 (Go module proxy)
#   csi-snapshotter, snapshot-controller
#                         github.com/kubernetes-csi/external-snapshotter/v8 v8.7.0 (Go module proxy)
# built from wrapper modules (hack/node/csi/{provisioner,snapshotter}) that pin them.
# The CSI driver itself (hostpathplugin) and csi-node-driver-registrar are NOT built
# here: the Go module proxy, the only source of code this project may build from,
# does not serve kubernetes-csi's csi-driver-host-path or node-driver-registrar (403
# "not available" for every version). Until the project has a minimal CSI driver of
# its own, node-up runs without CSI (NODE_CSI=0: hostPath PVs); NODE_CSI=1 needs those
# two binaries placed in .tools/bin/csi by other means.
# Idempotent: skipped when the stamp (a hash of hack/node/csi and the Go version) matches.
#
#   hack/node/csi-tools.sh               # build what is missing or stale
#   CSI_TOOLS_FORCE=1 hack/node/csi-tools.sh
set -euo pipefail
LOG_TAG=csi-tools
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v go >/dev/null 2>&1 || die "go is not on PATH"
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
CSI_SRC="${NODE_DIR}/csi"
CSI_BIN="${CSI_BIN:-${TOOLS_BIN}/csi}"
STAMP="${CSI_BIN}/.stamp"
# name  module-dir  package  version
COMPONENTS=(
  "csi-provisioner provisioner github.com/kubernetes-csi/external-provisioner/v5/cmd/csi-provisioner v5.3.0"
  "csi-snapshotter snapshotter github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter v8.7.0"
  "snapshot-controller snapshotter github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller v8.7.0"
)

inputs_hash() {
  (
    cd "${CSI_SRC}"
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    printf '%s\n' "${COMPONENTS[@]}"
    go env GOVERSION GOOS GOARCH
  ) | sha256sum | cut -c1-16
}
all_built() {
  local c
  for c in "${COMPONENTS[@]}"; do
    set -- ${c}
    [[ -x "${CSI_BIN}/$1" ]] || return 1
  done
}
up_to_date() { [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "$(inputs_hash)" ]] && all_built; }

if [[ "${CSI_TOOLS_FORCE:-0}" != 1 ]] && up_to_date; then
  log "up to date: ${CSI_BIN} ($(inputs_hash))"
  exit 0
fi
mkdir -p "${CSI_BIN}"
exec 9>"${CSI_BIN}/.lock"
flock 9
if [[ "${CSI_TOOLS_FORCE:-0}" != 1 ]] && up_to_date; then
  log "up to date (built by a concurrent run)"
  exit 0
fi

start=${SECONDS}
TMP_OUT="$(mktemp -d "${CSI_BIN}/.build.XXXXXX")"
trap 'rm -rf "${TMP_OUT}"' EXIT
for c in "${COMPONENTS[@]}"; do
  set -- ${c}
  t0=${SECONDS}
  (cd "${CSI_SRC}/$2" && go mod download &&
    nice -n 10 go build -trimpath -ldflags "-s -w -X main.version=$4" -o "${TMP_OUT}/$1" "$3")
  log "$1 $4: $((SECONDS - t0))s"
done
for c in "${COMPONENTS[@]}"; do
  set -- ${c}
  mv -f "${TMP_OUT}/$1" "${CSI_BIN}/$1"
done
inputs_hash >"${STAMP}"
log "built in ${CSI_BIN} after $((SECONDS - start))s"
