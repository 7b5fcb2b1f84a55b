#!/usr/bin/env bash
# Smoke test for the binaries built by hack/build-kube-tools.sh: starts etcd,
# kube-apiserver and kube-controller-manager on 127.0.0.1 (random high ports,
# temp dir), checks /readyz, lists namespaces and creates a Job whose Pod must
# be created by the Job controller (proving kube-controller-manager works; the
# Pod stays Pending because there is no node). Everything is stopped on exit.
#
#   hack/kube-tools/smoke.sh                 # builds the tools first if needed
#   KUBE_TOOLS_SKIP_BUILD=1 hack/kube-tools/smoke.sh
#   KEEP_TMP=1 hack/kube-tools/smoke.sh      # keep the temp dir (logs, certs)
#   KUBECTL= hack/kube-tools/smoke.sh        # no kubectl: use curl only
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
BIN_DIR="${KUBE_TOOLS_BIN_DIR:-${ROOT}/.tools/bin}"
HOST=127.0.0.1

log() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ "${KUBE_TOOLS_SKIP_BUILD:-0}" != "1" ]]; then
  "${ROOT}/hack/build-kube-tools.sh"
fi
for b in etcd kube-apiserver kube-controller-manager; do
  [[ -x "${BIN_DIR}/${b}" ]] || { log "missing ${BIN_DIR}/${b}; run hack/build-kube-tools.sh"; exit 1; }
done
for t in openssl curl; do
  command -v "${t}" >/dev/null 2>&1 || { log "missing required tool: ${t}"; exit 1; }
done
# kubectl from .tools/bin or PATH; KUBECTL= (empty) forces the curl-only path.
KUBECTL="${KUBECTL-$(command -v "${BIN_DIR}/kubectl" || command -v kubectl || true)}"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/kube-smoke.XXXXXX")"
PIDS=() # started in order etcd, apiserver, kcm; stopped in reverse
OK=0

stop_all() {
  local i pid n
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid="${PIDS[i]}"
    kill -0 "${pid}" 2>/dev/null || continue
    kill -TERM "${pid}" 2>/dev/null || true
    for ((n = 0; n < 100; n++)); do # up to 10s, then SIGKILL
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
      log "pid ${pid} did not stop on SIGTERM, killing"
      kill -KILL "${pid}" 2>/dev/null || true
    fi
    wait "${pid}" 2>/dev/null || true
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  log "stopping control plane"
  stop_all
  if [[ "${OK}" != "1" ]]; then
    local f
    for f in etcd apiserver kcm; do
      [[ -f "${TMP}/${f}.log" ]] || continue
      log "---- last lines of ${f}.log ----"
      tail -n 25 "${TMP}/${f}.log" >&2 || true
    done
    log "FAILED (rc=${rc})"
    [[ "${rc}" != "0" ]] || rc=1
  fi
  if [[ "${KEEP_TMP:-0}" == "1" ]]; then
    log "kept ${TMP}"
  else
    rm -rf "${TMP}"
  fi
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pick_port VAR: sets VAR to a random TCP port that no local socket uses (any
# state, per /proc/net/tcp*) and that was not picked before. Ports come from
# below the kernel's ephemeral range, so outgoing connections cannot take them
# between the pick and the bind.
USED_PORTS=" "
EPHEMERAL_LOW="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
PORT_MAX=$((EPHEMERAL_LOW > 20000 ? EPHEMERAL_LOW - 1 : 59999))
pick_port() {
  local p i hex
  for ((i = 0; i < 200; i++)); do
    p=$((15000 + RANDOM % (PORT_MAX - 15000 + 1)))
    [[ "${USED_PORTS}" == *" ${p} "* ]] && continue
    printf -v hex '%04X' "${p}"
    if ! cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h=":${hex}" '$2 ~ h"$" {f = 1} END {exit !f}'; then
      USED_PORTS+="${p} "
      printf -v "$1" '%s' "${p}"
      return 0
    fi
  done
  log "no free port found"
  return 1
}

# wait_for NAME SECONDS PID CMD... : poll CMD until it succeeds.
wait_for() {
  local name="$1" secs="$2" pid="$3" i
  shift 3
  for ((i = 0; i < secs * 4; i++)); do
    if "$@" >/dev/null 2>&1; then
      log "ok: ${name} ($((i / 4))s)"
      return 0
    fi
    kill -0 "${pid}" 2>/dev/null || { log "${name} exited early"; return 1; }
    sleep 0.25
  done
  log "timed out after ${secs}s waiting for ${name}"
  return 1
}

pick_port ETCD_PORT
pick_port ETCD_PEER_PORT
pick_port API_PORT
pick_port KCM_PORT
log "temp dir ${TMP}; ports: etcd=${ETCD_PORT} etcd-peer=${ETCD_PEER_PORT} apiserver=${API_PORT} kcm=${KCM_PORT}"

# ---------------------------------------------------------------- PKI
log "generating CA, serving cert and service-account key pair"
PKI="${TMP}/pki"
mkdir -p "${PKI}"
(
  cd "${PKI}"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 \
    -subj "/CN=smoke-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
    -subj "/CN=kube-apiserver" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
    "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment" >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out apiserver.crt -days 1 -extfile apiserver.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
TOKEN="$(openssl rand -hex 24)"
printf '%s,admin,admin-uid,"system:masters"\n' "${TOKEN}" >"${PKI}/tokens.csv"
cat >"${TMP}/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smoke
  cluster:
    server: https://${HOST}:${API_PORT}
    certificate-authority: ${PKI}/ca.crt
users:
- name: admin
  user:
    token: ${TOKEN}
contexts:
- name: smoke
  context: {cluster: smoke, user: admin}
current-context: smoke
EOF

# ---------------------------------------------------------------- etcd
log "starting etcd $("${BIN_DIR}/etcd" --version | head -1 | awk '{print $3}')"
"${BIN_DIR}/etcd" \
  --name=smoke \
  --data-dir="${TMP}/etcd-data" \
  --listen-client-urls="http://${HOST}:${ETCD_PORT}" \
  --advertise-client-urls="http://${HOST}:${ETCD_PORT}" \
  --listen-peer-urls="http://${HOST}:${ETCD_PEER_PORT}" \
  --initial-advertise-peer-urls="http://${HOST}:${ETCD_PEER_PORT}" \
  --initial-cluster="smoke=http://${HOST}:${ETCD_PEER_PORT}" \
  --unsafe-no-fsync=true \
  >"${TMP}/etcd.log" 2>&1 &
PIDS+=($!)
etcd_healthy() { curl -fsS --max-time 2 "http://${HOST}:${ETCD_PORT}/health" | grep -q '"health":"true"'; }
wait_for etcd 30 "${PIDS[-1]}" etcd_healthy

# ---------------------------------------------------------------- apiserver
APISERVER_FLAGS=(
  --etcd-servers="http://${HOST}:${ETCD_PORT}"
  --bind-address="${HOST}"
  --advertise-address="${HOST}"
  --endpoint-reconciler-type=none
  --secure-port="${API_PORT}"
  --cert-dir="${TMP}/apiserver-certs"
  --tls-cert-file="${PKI}/apiserver.crt"
  --tls-private-key-file="${PKI}/apiserver.key"
  --client-ca-file="${PKI}/ca.crt"
  --service-cluster-ip-range=10.0.0.0/24
  --allow-privileged=true
  --authorization-mode=RBAC
  --token-auth-file="${PKI}/tokens.csv"
  --service-account-issuer=https://kubernetes.default.svc
  --service-account-key-file="${PKI}/sa.pub"
  --service-account-signing-key-file="${PKI}/sa.key"
)
log "starting $("${BIN_DIR}/kube-apiserver" --version)"
"${BIN_DIR}/kube-apiserver" "${APISERVER_FLAGS[@]}" >"${TMP}/apiserver.log" 2>&1 &
PIDS+=($!)
# The serving cert is verified against our CA (no -k).
api() { curl -fsS --max-time 5 --cacert "${PKI}/ca.crt" -H "Authorization: Bearer ${TOKEN}" "$@"; }
apiserver_ready() { [[ "$(api "https://${HOST}:${API_PORT}/readyz")" == ok ]]; }
wait_for kube-apiserver/readyz 90 "${PIDS[-1]}" apiserver_ready

# ---------------------------------------------------------------- kcm
KCM_FLAGS=(
  --kubeconfig="${TMP}/kubeconfig"
  --authentication-kubeconfig="${TMP}/kubeconfig"
  --authorization-kubeconfig="${TMP}/kubeconfig"
  --authentication-skip-lookup=true
  --bind-address="${HOST}"
  --secure-port="${KCM_PORT}"
  --cert-dir="${TMP}/kcm-certs"
  --leader-elect=false
  --controllers='*,-nodeipam'
  --use-service-account-credentials=false
  --service-account-private-key-file="${PKI}/sa.key"
  --root-ca-file="${PKI}/ca.crt"
  --cluster-signing-cert-file="${PKI}/ca.crt"
  --cluster-signing-key-file="${PKI}/ca.key"
)
log "starting kube-controller-manager"
"${BIN_DIR}/kube-controller-manager" "${KCM_FLAGS[@]}" >"${TMP}/kcm.log" 2>&1 &
PIDS+=($!)
# kcm serves with its own self-signed cert, hence -k.
kcm_healthy() { [[ "$(curl -fsSk --max-time 2 "https://${HOST}:${KCM_PORT}/healthz")" == ok ]]; }
wait_for kube-controller-manager/healthz 60 "${PIDS[-1]}" kcm_healthy

# ---------------------------------------------------------------- checks
API="https://${HOST}:${API_PORT}"
JOB_JSON='{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"smoke-job","namespace":"default"},
 "spec":{"backoffLimit":0,"template":{"spec":{"restartPolicy":"Never",
 "containers":[{"name":"c","image":"registry.k8s.io/pause:3.10"}]}}}}'

if [[ -n "${KUBECTL}" ]]; then
  log "using kubectl: ${KUBECTL}"
  KC=("${KUBECTL}" --server "${API}" --token "${TOKEN}" --insecure-skip-tls-verify)
  log "kubectl get ns"
  "${KC[@]}" get ns
  log "creating Job default/smoke-job"
  echo "${JOB_JSON}" | "${KC[@]}" create -f -
  list_job_pods() { "${KC[@]}" -n default get pods -l job-name=smoke-job -o name 2>/dev/null | grep -q pod/; }
else
  log "kubectl not found; using curl against the API"
  log "GET /api/v1/namespaces"
  api "${API}/api/v1/namespaces" | grep -o '"name": *"[^"]*"' | sort -u
  log "creating Job default/smoke-job"
  api -X POST -H 'Content-Type: application/json' --data "${JOB_JSON}" \
    "${API}/apis/batch/v1/namespaces/default/jobs" >/dev/null
  list_job_pods() { api "${API}/api/v1/namespaces/default/pods?labelSelector=job-name%3Dsmoke-job" | grep -q '"generateName"'; }
fi

# Objects that only kube-controller-manager creates.
root_ca_published() { api "${API}/api/v1/namespaces/default/configmaps/kube-root-ca.crt"; }
default_sa_created() { api "${API}/api/v1/namespaces/default/serviceaccounts/default"; }
KCM_PID="${PIDS[-1]}"
wait_for "Pod of Job smoke-job (job controller)" 60 "${KCM_PID}" list_job_pods
wait_for "ServiceAccount default/default (serviceaccount controller)" 30 "${KCM_PID}" default_sa_created
wait_for "ConfigMap default/kube-root-ca.crt (root-ca-cert-publisher)" 30 "${KCM_PID}" root_ca_published
if [[ -n "${KUBECTL}" ]]; then
  "${KC[@]}" -n default get job,pods -o wide
fi

OK=1
log "PASS: etcd, kube-apiserver and kube-controller-manager work"
