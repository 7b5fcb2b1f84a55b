#!/usr/bin/env bash
# Installs what the test node needs (make node-tools):
#  - Debian packages: containerd, runc and the CNI plugins (the node's runtime),
#    podman (builds the images from our Dockerfiles), iptables and conntrack
#    (kube-proxy), nftables (node-down removes the tables node-up brought),
#    debootstrap (the base image), busybox-static and gcc (small images: pause);
#  - kubelet, kube-scheduler, kube-proxy (Kubernetes, the version of
#    hack/kube-tools) and a minimal CoreDNS, built from the Go module proxy into
#    .tools/bin beside kube-apiserver, kube-controller-manager and etcd
#    (hack/build-kube-tools.sh, run by `make kube-tools`);
#  - our CSI driver (replicator-csi-hostpath, hack/node/csi/driver; it registers
#    itself with the kubelet, so no node-driver-registrar), csi-provisioner,
#    csi-snapshotter and snapshot-controller into .tools/bin/csi (hack/node/csi-tools.sh).
# Idempotent: installed packages are skipped, and the Go build is skipped when
# the stamp (a hash of the wrapper modules and the Go version) matches.
#
#   hack/node/tools.sh                  # install/build what is missing
#   NODE_TOOLS_FORCE=1 hack/node/tools.sh   # rebuild the Go binaries
#   NODE_TOOLS_SKIP_APT=1 hack/node/tools.sh
set -euo pipefail
LOG_TAG=node-tools
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_PACKAGES=(containerd runc containernetworking-plugins podman iptables conntrack nftables
  debootstrap busybox-static gcc libc6-dev openssl curl ca-certificates)

start=${SECONDS}

# ---------------------------------------------------------------- Debian packages
install_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q '^install ok installed$' || missing+=("${p}")
  done
  if ((${#missing[@]} == 0)); then
    log "Debian packages: all installed"
    return 0
  fi
  need_root
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No recommends: podman's would pull in extra runtimes and networks we do not use.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts containerd as a service on install; the node runs its own
  # private containerd (hack/node/lib.sh), so the packaged one is left as the
  # package set it up. The CNI plugins are in /usr/lib/cni.
  log "Debian packages installed after $((SECONDS - start))s"
}

if [[ "${NODE_TOOLS_SKIP_APT:-0}" != 1 ]]; then
  install_packages
fi
for p in /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback /usr/lib/cni/portmap; do
  [[ -x "${p}" ]] || die "missing CNI plugin ${p} (package containernetworking-plugins)"
done

# ---------------------------------------------------------------- Go binaries
command -v go >/dev/null 2>&1 || die "go is not on PATH (need Go >= 1.26)"
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0

required_version() {
  awk -v mod="$2" '$1 == "//" {next} {for (i = 1; i < NF; i++) if ($i == mod && $(i + 1) ~ /^v/) {print $(i + 1); exit}}' "$1"
}
K8S_VERSION="$(required_version "${NODE_DIR}/kube/go.mod" k8s.io/kubernetes)"
COREDNS_VERSION="$(required_version "${NODE_DIR}/coredns/go.mod" github.com/coredns/coredns)"
[[ -n "${K8S_VERSION}" && -n "${COREDNS_VERSION}" ]] || die "cannot read the pinned versions from hack/node/{kube,coredns}/go.mod"
K8S_MAJOR="$(echo "${K8S_VERSION#v}" | cut -d. -f1)"
K8S_MINOR="$(echo "${K8S_VERSION#v}" | cut -d. -f2)"
KUBE_BINARIES=(kubelet kube-scheduler kube-proxy)
mkdir -p "${TOOLS_BIN}"
STAMP="${TOOLS_BIN}/.node-tools.stamp"

inputs_hash() {
  (
    cd "${NODE_DIR}"
    find kube coredns -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print | LC_ALL=C sort | xargs sha256sum
    sed -n '/^# build-recipe/,/^# end-build-recipe/p' "${NODE_DIR}/tools.sh" | sha256sum
    go env GOVERSION GOOS GOARCH
  ) | sha256sum | cut -d' ' -f1
}

has_versions() {
  local b out
  for b in "${KUBE_BINARIES[@]}"; do
    out="$("$1/${b}" --version 2>/dev/null)" || return 1
    [[ "${out}" == "Kubernetes ${K8S_VERSION}" ]] || return 1
  done
  out="$("$1/coredns" -version 2>/dev/null)" || return 1
  [[ "${out}" == *"CoreDNS-${COREDNS_VERSION#v}"* ]] || return 1
}

up_to_date() {
  [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "$(inputs_hash)" ]] && has_versions "${TOOLS_BIN}"
}

# The CSI driver, its sidecars and the snapshot controller (own stamp, own script).
"${NODE_DIR}/csi-tools.sh"

if [[ "${NODE_TOOLS_FORCE:-0}" != 1 ]] && up_to_date; then
  log "up to date: kubelet, kube-scheduler, kube-proxy ${K8S_VERSION}, CoreDNS ${COREDNS_VERSION} in ${TOOLS_BIN}"
  exit 0
fi

exec 9>"${TOOLS_BIN}/.node-tools.lock"
flock 9
if [[ "${NODE_TOOLS_FORCE:-0}" != 1 ]] && up_to_date; then
  log "up to date (built by a concurrent run)"
  exit 0
fi

TMP_OUT="$(mktemp -d "${TOOLS_BIN}/.node-build.XXXXXX")"
trap 'rm -rf "${TMP_OUT}"' EXIT

# build-recipe (hashed into the stamp: edit it and the binaries are rebuilt)
KUBE_LDFLAGS="-s -w"
KUBE_LDFLAGS+=" -X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
KUBE_LDFLAGS+=" -X k8s.io/component-base/version.gitMajor=${K8S_MAJOR}"
KUBE_LDFLAGS+=" -X k8s.io/component-base/version.gitMinor=${K8S_MINOR}"
KUBE_LDFLAGS+=" -X k8s.io/component-base/version.gitTreeState=clean"
KUBE_LDFLAGS+=" -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}"
KUBE_LDFLAGS+=" -X k8s.io/client-go/pkg/version.gitMajor=${K8S_MAJOR}"
KUBE_LDFLAGS+=" -X k8s.io/client-go/pkg/version.gitMinor=${K8S_MINOR}"
COREDNS_LDFLAGS="-s -w -X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}"
# end-build-recipe

log "go: $(go version); nice -n 10 (the machine is shared)"
log "[1/2] kubelet, kube-scheduler, kube-proxy ${K8S_VERSION} (a few minutes with warm Go caches, 10+ cold)"
(cd "${NODE_DIR}/kube" && go mod download &&
  nice -n 10 go build -trimpath -ldflags "${KUBE_LDFLAGS}" -o "${TMP_OUT}/" \
    ./cmd/kubelet ./cmd/kube-scheduler ./cmd/kube-proxy)
log "      done after $((SECONDS - start))s"
log "[2/2] CoreDNS ${COREDNS_VERSION} (minimal plugin set)"
(cd "${NODE_DIR}/coredns" && go mod download &&
  nice -n 10 go build -trimpath -ldflags "${COREDNS_LDFLAGS}" -o "${TMP_OUT}/coredns" .)
log "      done after $((SECONDS - start))s"

has_versions "${TMP_OUT}" || die "built binaries do not report Kubernetes ${K8S_VERSION} / CoreDNS ${COREDNS_VERSION}"
for b in "${KUBE_BINARIES[@]}" coredns; do
  mv -f "${TMP_OUT}/${b}" "${TOOLS_BIN}/${b}"
done
inputs_hash >"${STAMP}"
log "installed in ${TOOLS_BIN} after $((SECONDS - start))s: kubelet, kube-scheduler, kube-proxy ${K8S_VERSION}, coredns ${COREDNS_VERSION}"
