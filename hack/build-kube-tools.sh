#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries used by the integration tests
# (kube-apiserver, kube-controller-manager, etcd) from the Go module proxy
# only, into .tools/bin/ (git-ignored).
#
#   hack/build-kube-tools.sh            # build if missing/outdated, else no-op
#   KUBE_TOOLS_FORCE=1 hack/build-kube-tools.sh   # rebuild unconditionally
#   KUBE_TOOLS_BIN_DIR=/some/dir hack/build-kube-tools.sh  # other output dir
#
# Versions are pinned by the wrapper modules in hack/kube-tools/{kube,etcd}
# (go.mod + go.sum are the source of truth). A cold build takes ~10-15 min on
# 2 cores; afterwards the Go module and build caches (Go's defaults) make
# rebuilds fast, and when the stamp matches the script exits immediately.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
SRC_DIR="${SCRIPT_DIR}/kube-tools"
BIN_DIR="${KUBE_TOOLS_BIN_DIR:-${ROOT}/.tools/bin}"
mkdir -p "${BIN_DIR}"
BIN_DIR="$(cd "${BIN_DIR}" && pwd)"

log() { printf '[kube-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH (need Go >= 1.26)"

# Reproducible, self-contained build settings. GOMODCACHE/GOCACHE stay at
# Go's defaults so the caches are shared across runs and checkouts.
export GOTOOLCHAIN=local
export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

# Versions come from the checked-in wrapper modules.
# required_version GOMOD MODULE: prints the version that go.mod file $1 requires for module $2.
required_version() {
  awk -v mod="$2" '$1 == "//" {next} {for (i = 1; i < NF; i++) if ($i == mod && $(i + 1) ~ /^v/) {print $(i + 1); exit}}' "$1"
}
K8S_VERSION="$(required_version "${SRC_DIR}/kube/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(required_version "${SRC_DIR}/etcd/go.mod" go.etcd.io/etcd/server/v3)"
[[ -n "${K8S_VERSION}" ]] || die "cannot read k8s.io/kubernetes version from ${SRC_DIR}/kube/go.mod"
[[ -n "${ETCD_VERSION}" ]] || die "cannot read etcd version from ${SRC_DIR}/etcd/go.mod"
K8S_MINOR="$(echo "${K8S_VERSION#v}" | cut -d. -f2)"
K8S_MAJOR="$(echo "${K8S_VERSION#v}" | cut -d. -f1)"

STAMP_NAME=".kube-tools-${K8S_VERSION}-etcd-${ETCD_VERSION}"
STAMP="${BIN_DIR}/${STAMP_NAME}"
BINARIES=(kube-apiserver kube-controller-manager etcd)

# Fingerprint of everything that determines the build output.
inputs_hash() {
  (
    cd "${SRC_DIR}"
    find kube etcd -type f \( -name 'go.mod' -o -name 'go.sum' -o -name '*.go' \) -print | LC_ALL=C sort |
      xargs sha256sum
    go env GOVERSION GOOS GOARCH
  ) | sha256sum | cut -d' ' -f1
}

up_to_date() {
  [[ -f "${STAMP}" ]] || return 1
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x "${BIN_DIR}/${b}" ]] || return 1
  done
  [[ "$(cat "${STAMP}")" == "$(inputs_hash)" ]] || return 1
  has_versions "${BIN_DIR}"
}

# has_versions DIR: the binaries in DIR report the pinned versions.
# (Output is captured first: `cmd | grep -q` can fail with SIGPIPE under pipefail.)
has_versions() {
  local out
  out="$("$1/kube-apiserver" --version 2>/dev/null)" || return 1
  [[ "${out}" == "Kubernetes ${K8S_VERSION}" ]] || return 1
  out="$("$1/kube-controller-manager" --version 2>/dev/null)" || return 1
  [[ "${out}" == "Kubernetes ${K8S_VERSION}" ]] || return 1
  out="$("$1/etcd" --version 2>/dev/null)" || return 1
  [[ "${out}" == *"etcd Version: ${ETCD_VERSION#v}"* ]] || return 1
}

if [[ "${KUBE_TOOLS_FORCE:-0}" != "1" ]] && up_to_date; then
  log "up to date: kube-apiserver/kube-controller-manager ${K8S_VERSION}, etcd ${ETCD_VERSION} in ${BIN_DIR}"
  exit 0
fi

# Serialise concurrent runs (e.g. two test suites starting at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${BIN_DIR}/.kube-tools.lock"
  log "acquiring lock ${BIN_DIR}/.kube-tools.lock"
  flock 9
  if [[ "${KUBE_TOOLS_FORCE:-0}" != "1" ]] && up_to_date; then
    log "up to date (built by a concurrent run)"
    exit 0
  fi
fi

log "go: $(go version)"
log "building kube-apiserver + kube-controller-manager ${K8S_VERSION}, etcd ${ETCD_VERSION} -> ${BIN_DIR}"
log "a cold build (empty Go caches) takes ~10-15 min on 2 cores"

TMP_OUT="$(mktemp -d "${BIN_DIR}/.build.XXXXXX")"
trap 'rm -rf "${TMP_OUT}"' EXIT

start=${SECONDS}

log "[1/3] downloading modules (kube)"
(cd "${SRC_DIR}/kube" && go mod download)
log "[2/3] compiling kube-apiserver and kube-controller-manager"
KUBE_LDFLAGS="-s -w"
KUBE_LDFLAGS+=" -X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
KUBE_LDFLAGS+=" -X k8s.io/component-base/version.gitMajor=${K8S_MAJOR}"
KUBE_LDFLAGS+=" -X k8s.io/component-base/version.gitMinor=${K8S_MINOR}"
KUBE_LDFLAGS+=" -X k8s.io/component-base/version.gitTreeState=clean"
KUBE_LDFLAGS+=" -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}"
KUBE_LDFLAGS+=" -X k8s.io/client-go/pkg/version.gitMajor=${K8S_MAJOR}"
KUBE_LDFLAGS+=" -X k8s.io/client-go/pkg/version.gitMinor=${K8S_MINOR}"
(cd "${SRC_DIR}/kube" &&
  go build -trimpath -ldflags "${KUBE_LDFLAGS}" -o "${TMP_OUT}/" \
    ./cmd/kube-apiserver ./cmd/kube-controller-manager)
log "      done after $((SECONDS - start))s"

log "[3/3] compiling etcd"
(cd "${SRC_DIR}/etcd" && go mod download &&
  go build -trimpath -ldflags "-s -w" -o "${TMP_OUT}/etcd" .)
log "      done after $((SECONDS - start))s"

# Sanity-check the fresh binaries before installing them.
has_versions "${TMP_OUT}" || die "built binaries do not report ${K8S_VERSION} / etcd ${ETCD_VERSION}"

rm -f "${BIN_DIR}"/.kube-tools-v*
for b in "${BINARIES[@]}"; do
  mv -f "${TMP_OUT}/${b}" "${BIN_DIR}/${b}"
done
inputs_hash >"${STAMP}"

log "installed in ${BIN_DIR} ($((SECONDS - start))s):"
log "  $("${BIN_DIR}/kube-apiserver" --version) (kube-apiserver, kube-controller-manager)"
log "  $("${BIN_DIR}/etcd" --version | sed -n 1p)"
