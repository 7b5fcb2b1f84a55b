#!/usr/bin/env bash
# Installs helm v3 into .tools/bin/ (git-ignored), built from the Go module
# proxy with the local Go toolchain (no downloads from get.helm.sh).
#
#   hack/install-helm.sh                      # install if missing/other version, else no-op
#   HELM_FORCE=1 hack/install-helm.sh         # reinstall unconditionally
#   HELM_BIN_DIR=/some/dir hack/install-helm.sh
#
# A cold build (empty Go module/build caches) takes a few minutes on 2 cores;
# when the pinned version is already installed the script exits immediately.
set -euo pipefail

HELM_VERSION="v3.22.0"   # pinned; must exist on the Go module proxy (go list -m -versions helm.sh/helm/v3)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
BIN_DIR="${HELM_BIN_DIR:-${ROOT}/.tools/bin}"
mkdir -p "${BIN_DIR}"
BIN_DIR="$(cd "${BIN_DIR}" && pwd)"
HELM="${BIN_DIR}/helm"
# Records how the binary was built; bump RECIPE when the build flags change.
RECIPE="2"
STAMP="${BIN_DIR}/.helm.stamp"

log() { printf '[install-helm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# installed_version: what ${HELM} reports, e.g. v3.22.0+gabc123 -> v3.22.0 (empty if none).
installed_version() {
  local out
  [[ -x "${HELM}" ]] || return 0
  out="$("${HELM}" version --short 2>/dev/null)" || return 0
  printf '%s' "${out%%+*}"
}

up_to_date() {
  [[ "$(installed_version)" == "${HELM_VERSION}" ]] || return 1
  [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${HELM_VERSION} recipe=${RECIPE}" ]]
}

if [[ "${HELM_FORCE:-0}" != "1" ]] && up_to_date; then
  log "up to date: helm ${HELM_VERSION} in ${BIN_DIR}"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH (need Go >= 1.26)"

# Serialise concurrent runs (e.g. two test suites starting at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${BIN_DIR}/.helm.lock"
  flock 9
  if [[ "${HELM_FORCE:-0}" != "1" ]] && up_to_date; then
    log "up to date (installed by a concurrent run)"
    exit 0
  fi
fi

export GOTOOLCHAIN=local
export GOWORK=off
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0

log "go: $(go version)"
start=${SECONDS}

# `go install` does not stamp versions into helm, so set them with -X like
# helm's Makefile does: its own version, and the Kubernetes version that
# `helm template`/`helm lint` assume (without it: v1.20, which fails charts
# with a kubeVersion constraint). The latter follows k8s.io/client-go's
# v0.MINOR.x in helm's go.mod, as in the Makefile.
HELM_GOMOD="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
[[ -f "${HELM_GOMOD}" ]] || die "cannot download helm.sh/helm/v3@${HELM_VERSION} from the module proxy"
CLIENT_GO="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "${HELM_GOMOD}")"
[[ "${CLIENT_GO}" =~ ^v0\.([0-9]+)\. ]] || die "cannot read the k8s.io/client-go version from ${HELM_GOMOD}"
K8S_MINOR="${BASH_REMATCH[1]}"
log "building helm ${HELM_VERSION} (default Kubernetes version 1.${K8S_MINOR}) -> ${BIN_DIR} (a cold build takes a few minutes)"

# Build into a temp dir first so a failed/interrupted build never leaves a
# half-written binary behind.
TMP_OUT="$(mktemp -d "${BIN_DIR}/.helm-build.XXXXXX")"
trap 'rm -rf "${TMP_OUT}"' EXIT
LDFLAGS="-s -w"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  LDFLAGS+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${K8S_MINOR}"
done
GOBIN="${TMP_OUT}" go install -trimpath -ldflags "${LDFLAGS}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"

got="$("${TMP_OUT}/helm" version --short)"
[[ "${got%%+*}" == "${HELM_VERSION}" ]] || die "built helm reports ${got}, expected ${HELM_VERSION}"
mv -f "${TMP_OUT}/helm" "${HELM}"
printf '%s recipe=%s\n' "${HELM_VERSION}" "${RECIPE}" >"${STAMP}"

log "installed ${HELM} ($("${HELM}" version --short)) in $((SECONDS - start))s"
