# shellcheck shell=bash
# Shared settings and helpers of the hack/node scripts (sourced, not run).
#
# The node lives entirely on private test addresses of this machine:
#   NODE_IP       a /32 alias on lo (the kubelet refuses 127.x; no dummy links here)
#   POD_CIDR      a bridge (NODE_BRIDGE) for the pods; its routes cover only the
#                 service range and the node address, so pod traffic never leaves
#   SERVICE_CIDR  ClusterIPs, handled by kube-proxy (iptables)
# State lives in NODE_ROOT (removed by node-down); the containerd image store
# and the image cache live in NODE_CACHE (kept, so images survive node-down).

NODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${NODE_DIR}/../.." && pwd)"
TOOLS_BIN="${TOOLS_BIN:-${ROOT}/.tools/bin}"

NODE_NAME="${NODE_NAME:-replicator-node}"
NODE_IP="${NODE_IP:-10.243.0.1}"
POD_CIDR="${POD_CIDR:-10.244.0.0/24}"
POD_GATEWAY="${POD_GATEWAY:-10.244.0.1}"
SERVICE_CIDR="${SERVICE_CIDR:-10.0.0.0/24}"
DNS_SERVICE_IP="${DNS_SERVICE_IP:-10.0.0.10}"
NODE_BRIDGE="${NODE_BRIDGE:-rnode0}"
API_PORT="${API_PORT:-16443}"
ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-23790}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-23800}"

NODE_ROOT="${NODE_ROOT:-/var/lib/replicator-node}"
NODE_CACHE="${NODE_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/replicator-node}"
CONTAINERD_ROOT="${NODE_CACHE}/containerd"
RUN_DIR="/run/replicator-node"
CONTAINERD_STATE="${RUN_DIR}/containerd"
CONTAINERD_SOCK="${CONTAINERD_STATE}/containerd.sock"
CNI_BIN_DIR="/usr/lib/cni"
KUBECONFIG_ADMIN="${NODE_ROOT}/admin.kubeconfig"
# The S3 server pods reach (versitygw on the node address; started by node-up).
S3_PORT="${S3_PORT:-17070}"
S3_ENDPOINT="http://${NODE_IP}:${S3_PORT}"
S3_BUCKET="${S3_BUCKET:-replicator-node}"
S3_ROOT="${NODE_ROOT}/s3"
S3_ENV="${NODE_ROOT}/s3.env"

# Images: built and tagged by hack/node/images.sh, keyed by a hash of their inputs.
IMAGE_PREFIX="localhost/replicator"
PAUSE_IMAGE="${IMAGE_PREFIX}/pause:3.10"

log() { printf '[%s %s] %s\n' "${LOG_TAG:-node}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# has_lo_alias: the node address is on lo. (Outputs are captured, not piped into
# grep -q, which can fail a pipeline with SIGPIPE under pipefail.)
has_lo_alias() { local a; a="$(ip -4 addr show dev lo)"; [[ "${a}" == *" ${NODE_IP}/32 "* ]]; }
# has_image REF: containerd (k8s.io) has an image of that name.
has_image() { local l; l="$(ctr_k8s images ls -q 2>/dev/null)"; grep -qxF "$1" <<<"${l}"; }

need_root() { [[ "$(id -u)" == 0 ]] || die "must run as root (it configures containerd, iptables and a bridge)"; }

# ctr_k8s ARGS...: ctr against the private containerd, namespace k8s.io.
ctr_k8s() { ctr --address "${CONTAINERD_SOCK}" --namespace k8s.io "$@"; }

# pid_alive NAME: the process recorded in NODE_ROOT/run/NAME.pid (or given file) runs.
pid_alive() {
  local f="$1" pid
  [[ -f "${f}" ]] || return 1
  pid="$(cat "${f}")"
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null
}

# stop_pidfile FILE [SECONDS]: TERM the process in FILE, KILL it after SECONDS (10).
stop_pidfile() {
  local f="$1" secs="${2:-10}" pid i
  [[ -f "${f}" ]] || return 0
  pid="$(cat "${f}")"
  if [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null; then
    kill -TERM "${pid}" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
      log "pid ${pid} ($(basename "${f}" .pid)) ignored SIGTERM; killing it"
      kill -KILL "${pid}" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "${f}"
}

# containerd_config: the private containerd configuration (root in the cache,
# state under /run, its own CNI conf dir, our pause image, cgroupfs).
containerd_config() {
  cat <<TOML
version = 2
root = "${CONTAINERD_ROOT}"
state = "${CONTAINERD_STATE}"
oom_score = 0

[grpc]
  address = "${CONTAINERD_SOCK}"

[ttrpc]
  address = "${CONTAINERD_STATE}/containerd.sock.ttrpc"

[debug]
  level = "warn"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "${PAUSE_IMAGE}"
    restrict_oom_score_adj = true
    enable_selinux = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "${CNI_BIN_DIR}"
      conf_dir = "${RUN_DIR}/net.d"
      max_conf_num = 1
TOML
}

# containerd_start: starts the private containerd unless it runs (records
# whether this call started it in CONTAINERD_STARTED).
CONTAINERD_STARTED=0
containerd_start() {
  local pidfile="${RUN_DIR}/containerd.pid" i
  mkdir -p "${RUN_DIR}/net.d" "${CONTAINERD_ROOT}"
  if pid_alive "${pidfile}" && [[ -S "${CONTAINERD_SOCK}" ]] && ctr --address "${CONTAINERD_SOCK}" version >/dev/null 2>&1; then
    return 0
  fi
  containerd_config >"${RUN_DIR}/containerd.toml"
  log "starting containerd ($(containerd --version | awk '{print $3}')), root ${CONTAINERD_ROOT}"
  setsid containerd --config "${RUN_DIR}/containerd.toml" \
    >>"${RUN_DIR}/containerd.log" 2>&1 </dev/null &
  echo $! >"${pidfile}"
  for ((i = 0; i < 150; i++)); do
    ctr --address "${CONTAINERD_SOCK}" version >/dev/null 2>&1 && { CONTAINERD_STARTED=1; return 0; }
    kill -0 "$(cat "${pidfile}")" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "${RUN_DIR}/containerd.log" >&2 || true
  die "containerd did not start"
}

containerd_stop() { stop_pidfile "${RUN_DIR}/containerd.pid" 20; }

# For scripts that drive a running node: the image tags (make images), the
# node's S3 server settings, KUBECONFIG, KUBECTL and HELM; and node_lock (each
# of them installs an operator), held by the script's own shell.
use_running_node() {
  local images="${ROOT}/.tools/node/images.env"
  [[ -f "${images}" ]] || die "no ${images}: run make images"
  # shellcheck disable=SC1090
  source "${images}"
  [[ -f "${S3_ENV}" ]] || die "no ${S3_ENV}: node-up starts the S3 server (NODE_S3=1)"
  # shellcheck disable=SC1090
  source "${S3_ENV}"
  export KUBECONFIG="${KUBECONFIG:-${KUBECONFIG_ADMIN}}"
  KUBECTL="$(command -v "${TOOLS_BIN}/kubectl" || command -v kubectl)" || die "no kubectl on PATH"
  HELM="$(command -v "${TOOLS_BIN}/helm" || command -v helm)" || die "helm not found (make helm)"
  node_lock
}

# node_lock: one script at a time installs an operator on the node (two
# operators would both reconcile every namespace: doubled events, split metrics,
# races). Waits for the lock, then holds it until the calling script exits.
node_lock() {
  [[ -n "${NODE_LOCK_FD:-}" ]] && return 0
  mkdir -p "${RUN_DIR}"
  exec {NODE_LOCK_FD}>"${RUN_DIR}/operator.lock"
  if ! flock -n "${NODE_LOCK_FD}"; then
    log "another script runs an operator on the node: waiting for it to finish (${RUN_DIR}/operator.lock)"
    flock "${NODE_LOCK_FD}"
  fi
}

# Shared by the scripts that drive a running node (after use_running_node):
# helm_install_operator RELEASE NAMESPACE [HELM ARGS...]: the chart with our
# images, --wait (under node_lock); more arguments go to helm (e.g. --set
# watchNamespace=NS).
helm_install_operator() {
  node_lock
  "${HELM}" install "$1" "${ROOT}/charts/replicator-operator" -n "$2" \
    --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" --set image.pullPolicy=Never \
    --set agentImage.repository="${AGENT_IMAGE%:*}" --set agentImage.tag="${AGENT_IMAGE##*:}" \
    --wait --timeout 180s "${@:3}"
}
# s3_credentials_yaml, repository_yaml: deploy/examples/s3-credentials.yaml and
# repository.yaml with only the node's S3 credentials, bucket and endpoint substituted.
s3_credentials_yaml() {
  sed -e "s|AWS_ACCESS_KEY_ID: change-me|AWS_ACCESS_KEY_ID: ${AWS_ACCESS_KEY_ID}|" \
    -e "s|AWS_SECRET_ACCESS_KEY: change-me|AWS_SECRET_ACCESS_KEY: ${AWS_SECRET_ACCESS_KEY}|" \
    "${ROOT}/deploy/examples/s3-credentials.yaml"
}
repository_yaml() {
  sed -e "s|bucket: my-backups|bucket: ${S3_BUCKET}|" \
    -e "s|# endpoint: http://minio.storage:9000|endpoint: ${S3_ENDPOINT}|" \
    "${ROOT}/deploy/examples/repository.yaml"
}
