#!/usr/bin/env bash
# Builds the node's CSI components, static (CGO_ENABLED=0), into .tools/bin/csi/
# (run by hack/node/tools.sh, i.e. make node-tools, and by images.sh when missing):
#   replicator-csi-hostpath  our own driver, hack/node/csi/driver (Identity,
#                         Controller with snapshots, Node, and the kubelet's plugin
#                         registration: no node-driver-registrar)
#   csi-provisioner       github.com/kubernetes-csi/external-provisioner/v5 v5.3.0 (Go module proxy)
#   csi-snapshotter, snapshot-controller
#                         github.com/kubernetes-csi/external-snapshotter/v8 v8.7.0 (Go module proxy)
# The sidecars are built from wrapper modules (hack/node/csi/{provisioner,snapshotter})
# that pin them; every dependency comes from the Go module proxy.
# Idempotent: each binary has its own stamp (a hash of its module directory, its
# line below and the Go version) and is rebuilt only when that changes, so editing
# the driver does not rebuild the sidecars.
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
# name  module-dir  package  version
COMPONENTS=(
  "replicator-csi-hostpath driver . v0.1.0"
  "csi-provisioner provisioner github.com/kubernetes-csi/external-provisioner/v5/cmd/csi-provisioner v5.3.0"
  "csi-snapshotter snapshotter github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter v8.7.0"
  "snapshot-controller snapshotter github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller v8.7.0"
)

# inputs_hash NAME MODDIR PKG VERSION
inputs_hash() {
  (
    cd "${CSI_SRC}/$2"
    find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    echo "$*"
    go env GOVERSION GOOS GOARCH
  ) | sha256sum | cut -c1-16
}
up_to_date() { # up_to_date NAME MODDIR PKG VERSION
  [[ -x "${CSI_BIN}/$1" && -f "${CSI_BIN}/.stamp-$1" && "$(cat "${CSI_BIN}/.stamp-$1")" == "$(inputs_hash "$@")" ]]
}
stale() {
  local c
  for c in "${COMPONENTS[@]}"; do
    # shellcheck disable=SC2086
    if [[ "${CSI_TOOLS_FORCE:-0}" == 1 ]] || ! up_to_date ${c}; then echo "${c%% *}"; fi
  done
}

if [[ -z "$(stale)" ]]; then
  log "up to date: ${CSI_BIN}"
  exit 0
fi
mkdir -p "${CSI_BIN}"
exec 9>"${CSI_BIN}/.lock"
flock 9
todo="$(stale)"
if [[ -z "${todo}" ]]; then
  log "up to date (built by a concurrent run)"
  exit 0
fi
rm -f "${CSI_BIN}/.stamp" # the single stamp of earlier versions of this script

start=${SECONDS}
TMP_OUT="$(mktemp -d "${CSI_BIN}/.build.XXXXXX")"
trap 'rm -rf "${TMP_OUT}"' EXIT
for c in "${COMPONENTS[@]}"; do
  set -- ${c}
  grep -qx "$1" <<<"${todo}" || continue
  t0=${SECONDS}
  (cd "${CSI_SRC}/$2" && go mod download &&
    nice -n 10 go build -trimpath -ldflags "-s -w -X main.version=$4" -o "${TMP_OUT}/$1" "$3")
  mv -f "${TMP_OUT}/$1" "${CSI_BIN}/$1"
  inputs_hash "$@" >"${CSI_BIN}/.stamp-$1"
  log "$1 $4: $((SECONDS - t0))s"
done
log "built $(echo ${todo}) in ${CSI_BIN} after $((SECONDS - start))s"
