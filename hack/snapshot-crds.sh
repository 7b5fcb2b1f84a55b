#!/usr/bin/env bash
# Copies the CSI snapshot CRDs (VolumeSnapshot, VolumeSnapshotContent,
# VolumeSnapshotClass; snapshot.storage.k8s.io/v1) into .tools/snapshot-crds/
# (git-ignored), from the external-snapshotter client module on the Go module
# proxy (github.com/kubernetes-csi/external-snapshotter/client/v8 carries
# config/crd/*.yaml). The e2e tests install them in the test API server; a
# real cluster gets them with its CSI snapshotter.
#
#   hack/snapshot-crds.sh                  # copy if missing or another version, else no-op
#   SNAPSHOT_CRDS_DIR=/some/dir hack/snapshot-crds.sh
set -euo pipefail

MODULE="github.com/kubernetes-csi/external-snapshotter/client/v8"
VERSION="v8.7.0"   # pinned; `go list -m -versions ${MODULE}` lists others

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${SNAPSHOT_CRDS_DIR:-${ROOT}/.tools/snapshot-crds}"
STAMP="${OUT}/.version"
FILES=(
  snapshot.storage.k8s.io_volumesnapshotclasses.yaml
  snapshot.storage.k8s.io_volumesnapshotcontents.yaml
  snapshot.storage.k8s.io_volumesnapshots.yaml
)

log() { printf '[snapshot-crds] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

up_to_date() {
  [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${MODULE}@${VERSION}" ]] || return 1
  local f
  for f in "${FILES[@]}"; do [[ -f "${OUT}/${f}" ]] || return 1; done
}

if up_to_date; then
  log "up to date: ${OUT} (${MODULE}@${VERSION})"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH (it downloads ${MODULE} from the module proxy)"
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod

# `go mod download -json` prints the module's directory in the module cache.
DIR="$(go mod download -json "${MODULE}@${VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
[[ -d "${DIR}/config/crd" ]] || die "cannot download ${MODULE}@${VERSION} from the module proxy, or it has no config/crd"

mkdir -p "${OUT}"
for f in "${FILES[@]}"; do
  [[ -f "${DIR}/config/crd/${f}" ]] || die "${MODULE}@${VERSION} has no config/crd/${f}"
  # The module cache is read-only: copy without its modes.
  install -m 0644 "${DIR}/config/crd/${f}" "${OUT}/${f}"
done
printf '%s@%s\n' "${MODULE}" "${VERSION}" >"${STAMP}"
log "copied ${#FILES[@]} CRDs from ${MODULE}@${VERSION} to ${OUT}"
