#!/usr/bin/env bash
# make demo-cluster: the operator on a real single-node cluster, step by step, for
# a newcomer (as root). It brings the node up (hack/node/up.sh; `make demo-cluster`
# builds the tools and images first), installs the chart with our images, puts the
# repository on the node's S3 server, applies deploy/examples/mariadb-provisioned.yaml
# unchanged, writes a few rows on the master, backs it up (ReplicatorBackup,
# mariabackup), writes one more row, runs `kubectl scale statefulset/db --replicas=2`
# and shows, as they happen: the backup's status, the new pod's readiness gate
# condition, init container and events, SHOW SLAVE STATUS on the new slave, the
# slave turning Ready only after it replicates, the rows (the one written after
# the backup included) on the slave. Then node-down, unless KEEP=1.
# Each wait is bounded by DEMO_TIMEOUT (300 s); a step that does not happen ends
# the demo with exit 1 and one line "DEMO FAILED: ...". Verbose output (node-up,
# node-down, helm) goes to .tools/node/demo-cluster.log.
set -uo pipefail
LOG_TAG=demo-cluster
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

NS=demo
TIMEOUT="${DEMO_TIMEOUT:-300}"
LOGFILE="${ROOT}/.tools/node/demo-cluster.log"
mkdir -p "${ROOT}/.tools/node" && : >"${LOGFILE}"
export KUBECONFIG="${KUBECONFIG_ADMIN}"
KUBECTL="$(command -v "${TOOLS_BIN}/kubectl" || command -v kubectl)" || die "no kubectl on PATH"
HELM="$(command -v "${TOOLS_BIN}/helm" || command -v helm)" || die "no helm (make helm)"
k() { "${KUBECTL}" -n "${NS}" "$@"; }

if [[ -t 1 ]]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'; else B='' G='' R='' D='' N=''; fi
T0=${SECONDS}
STEP=0
step() { STEP=$((STEP + 1)); printf '\n%s== %d. %s%s %s[+%ds]%s\n' "${B}" "${STEP}" "$*" "${N}" "${D}" "$((SECONDS - T0))" "${N}"; }
say() { printf '   %s\n' "$*"; }
show() { sed 's/^/   | /'; }
ok() { printf '   %s✔ %s%s\n' "${G}" "$*" "${N}"; }
ts() { printf '%s[+%3ds]%s' "${D}" "$((SECONDS - T_SCALE))" "${N}"; }
fail() {
  printf '\n%sDEMO FAILED: %s%s\n' "${R}${B}" "$*" "${N}" >&2
  printf '   (details: %s; KEEP=1 keeps the node to look around)\n' "${LOGFILE#"${ROOT}"/}" >&2
  exit 1
}
teardown() {
  local rc=$?
  if [[ "${KEEP:-0}" == 1 ]]; then
    printf '\nKEEP=1: the node stays up. Look around:\n   export KUBECONFIG=%s\n   kubectl -n %s get pods,replicatorbackups\n   make node-down   # when done\n' "${KUBECONFIG_ADMIN}" "${NS}"
  else
    printf '\n%s== tearing the node down (make node-down)%s\n' "${B}" "${N}"
    local t=${SECONDS}
    if "${NODE_DIR}/down.sh" >>"${LOGFILE}" 2>&1; then say "node down in $((SECONDS - t))s; the host is as node-up found it"
    else printf '%sDEMO FAILED: node-down failed (see %s)%s\n' "${R}${B}" "${LOGFILE}" "${N}" >&2; rc=1; fi
  fi
  ((rc == 0)) && printf '\n%sdemo-cluster done in %ds%s\n' "${G}${B}" "$((SECONDS - T0))" "${N}"
  exit "${rc}"
}

# until SECONDS_MAX DESCRIPTION COMMAND...: runs COMMAND every second until it succeeds.
until_ok() {
  local max="$1" what="$2" i
  shift 2
  for ((i = 0; i < max; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  fail "${what} did not happen within ${max}s"
}

# ------------------------------------------------------------------ node
step "Bring the node up (etcd, kube-apiserver, kubelet on containerd, CoreDNS, CSI driver, S3)"
trap teardown EXIT
t=${SECONDS}
"${NODE_DIR}/up.sh" >>"${LOGFILE}" 2>&1 || fail "node-up failed (see ${LOGFILE})"
"${KUBECTL}" get --raw /readyz >/dev/null 2>&1 || fail "the node's API server does not answer after node-up"
say "node up in $((SECONDS - t))s"
"${KUBECTL}" get nodes -o wide 2>&1 | cut -c1-100 | show
# shellcheck disable=SC1090,SC1091
source "${ROOT}/.tools/node/images.env" || fail "no .tools/node/images.env (make images)"
# shellcheck disable=SC1090
source "${S3_ENV}" || fail "no ${S3_ENV}: node-up did not start the S3 server"

# ------------------------------------------------------------------ operator
step "helm install the operator (charts/replicator-operator) into namespace ${NS}"
"${KUBECTL}" create namespace "${NS}" >/dev/null || fail "kubectl create namespace ${NS}"
until_ok 30 "the namespace's default ServiceAccount" k get serviceaccount default
rm -rf "${S3_ROOT:?}/${S3_BUCKET:?}" && mkdir -p "${S3_ROOT}/${S3_BUCKET}"
say "\$ helm install demo charts/replicator-operator -n ${NS} --set image... (our images)"
helm_install_operator demo "${NS}" >>"${LOGFILE}" 2>&1 || fail "helm install did not get the operator Ready (see ${LOGFILE})"
k get pods -l app.kubernetes.io/instance=demo | show

step "A backup repository on the node's S3 server (${S3_ENDPOINT}, bucket ${S3_BUCKET})"
say "\$ kubectl apply -f deploy/examples/s3-credentials.yaml -f deploy/examples/repository.yaml   (endpoint, bucket, keys filled in)"
s3_credentials_yaml | k apply -f - >/dev/null || fail "s3-credentials.yaml did not apply"
repository_yaml | k apply -f - >/dev/null || fail "repository.yaml did not apply"
k get replicatorrepositories | show

# ------------------------------------------------------------------ master
step "The MariaDB StatefulSet: deploy/examples/mariadb-provisioned.yaml, unchanged (1 replica: the master db-0)"
say "\$ kubectl apply -f deploy/examples/mariadb-provisioned.yaml"
k apply -f "${ROOT}/deploy/examples/mariadb-provisioned.yaml" | show
k rollout status statefulset/db --timeout="${TIMEOUT}s" >>"${LOGFILE}" 2>&1 || fail "the master db-0 did not turn Ready within ${TIMEOUT}s"
k get pods -o wide | cut -c1-90 | show

PW="$(k get secret db-credentials -o jsonpath='{.data.password}' | base64 -d)"
sql() { local pod="$1"; shift; k exec "${pod}" -c mariadb -- mariadb -uroot -p"${PW}" "$@"; }

step "Write a few rows on the master"
say "\$ mariadb -e \"CREATE TABLE demo.orders ...; INSERT ... 3 rows\"   (on db-0)"
sql db-0 -e "CREATE DATABASE demo; CREATE TABLE demo.orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40), note VARCHAR(40));
  INSERT INTO demo.orders (item, note) VALUES ('coffee', 'before the backup'), ('tea', 'before the backup'), ('cake', 'before the backup')" ||
  fail "could not write rows on the master db-0"
sql db-0 -t -e 'SELECT * FROM demo.orders' | show

# ------------------------------------------------------------------ backup
step "Back the master up: a ReplicatorBackup (method mariabackup, source the StatefulSet's master)"
BACKUP='{"apiVersion":"replicator.dev/v1alpha1","kind":"ReplicatorBackup","metadata":{"name":"seed"},"spec":{"method":"mariabackup","source":{"statefulSet":"db","credentialsSecret":{"name":"db-credentials"}}}}'
say "\$ kubectl apply -f - <<< '${BACKUP}'"
k apply -f - <<<"${BACKUP}" >/dev/null || fail "the ReplicatorBackup did not apply"
T_SCALE=${SECONDS} last="" phase=""
for ((i = 0; i < TIMEOUT; i++)); do
  phase="$(k get replicatorbackup seed -o jsonpath='{.status.phase}' 2>/dev/null)"
  cur="phase=${phase:-<none yet>}  job=$(k get replicatorbackup seed -o jsonpath='{.status.jobName}' 2>/dev/null)"
  [[ "${cur}" != "${last}" ]] && { printf '   %s %s\n' "$(ts)" "${cur}"; last="${cur}"; }
  [[ "${phase}" == Completed || "${phase}" == Failed ]] && break
  sleep 1
done
[[ "${phase}" == Completed ]] || fail "the backup seed is not Completed after ${i}s (phase: ${phase:-none})"
say "\$ kubectl get replicatorbackup seed"
k get replicatorbackup seed | show
k get replicatorbackup seed -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' | show
POS="$(k get replicatorbackup seed -o jsonpath='{.status.position}')"
[[ -n "${POS}" ]] || fail "the backup seed recorded no replication position"
ok "Completed in $((SECONDS - T_SCALE))s; replication position ${POS}"

step "One more row on the master, AFTER the backup (it can reach a slave only by replication)"
sql db-0 -e "INSERT INTO demo.orders (item, note) VALUES ('pie', 'after the backup')" || fail "could not write on the master"
sql db-0 -t -e "SELECT * FROM demo.orders WHERE note = 'after the backup'" | show
ROWS="$(sql db-0 -N -e 'SELECT COUNT(*) FROM demo.orders')"

# ------------------------------------------------------------------ scale
step "kubectl scale statefulset/db --replicas=2: db-1 provisions itself"
say "\$ kubectl scale statefulset/db --replicas=2"
k scale statefulset/db --replicas=2 | show
say "watching db-1 every second (only changes are printed):"
T_SCALE=${SECONDS}
declare -A SEEN=()
last_phase="" last_init="" last_gate="" last_repl="" last_ready="" t_repl=-1 t_ready=-1
for ((i = 0; i < TIMEOUT; i++)); do
  pj="$(k get pod db-1 -o json 2>/dev/null)" || pj=""
  if [[ -n "${pj}" ]]; then
    v="$(jq -r '.status.phase // "-"' <<<"${pj}")"
    [[ "${v}" != "${last_phase}" ]] && { printf '   %s pod phase:   %s\n' "$(ts)" "${v}"; last_phase="${v}"; }
    v="$(jq -r '[.status.initContainerStatuses[]? | "\(.name)=\(.state | keys[0])\(if .state.terminated then "(\(.state.terminated.reason))" else "" end)"] | join(" ")' <<<"${pj}")"
    [[ -n "${v}" && "${v}" != "${last_init}" ]] && { printf '   %s init:        %s\n' "$(ts)" "${v}"; last_init="${v}"; }
    v="$(jq -r '.status.conditions[]? | select(.type == "replicator.dev/provisioned") | "\(.status) \(.reason // "") \(.message // "")"' <<<"${pj}")"
    [[ -n "${v}" && "${v}" != "${last_gate}" ]] && { printf '   %s %sgate%s replicator.dev/provisioned=%s\n' "$(ts)" "${B}" "${N}" "${v}"; last_gate="${v}"; }
    v="$(jq -r '.status.conditions[]? | select(.type == "Ready") | .status' <<<"${pj}")"
    ready="${v}"
    # Events of the pod (the kubelet's, the scheduler's and the operator's), each once.
    while IFS= read -r ev; do
      [[ -z "${ev}" || -n "${SEEN[${ev}]:-}" ]] && continue
      SEEN["${ev}"]=1
      printf '   %s event:       %s\n' "$(ts)" "${ev}"
    done < <(k get events --field-selector involvedObject.name=db-1 --sort-by=.metadata.creationTimestamp -o json 2>/dev/null |
      jq -r '.items[] | "\(if (.source.component // "") != "" then .source.component else (.reportingComponent // "-") end): \(.reason): \(.message | gsub("\n"; " "))"' | cut -c1-220)
    st="$(sql db-1 -e 'SHOW SLAVE STATUS\G' 2>/dev/null)" || st=""
    io="$(awk '/ Slave_IO_Running:/ {print $2}' <<<"${st}")" sq="$(awk '/ Slave_SQL_Running:/ {print $2}' <<<"${st}")"
    v="IO=${io:--} SQL=${sq:--}"
    [[ -n "${io}${sq}" && "${v}" != "${last_repl}" ]] && { printf '   %s replication: Slave_IO_Running=%s Slave_SQL_Running=%s\n' "$(ts)" "${io:--}" "${sq:--}"; last_repl="${v}"; }
    [[ "${t_repl}" -lt 0 && "${io}" == Yes && "${sq}" == Yes ]] && t_repl=$((SECONDS - T_SCALE))
    [[ -n "${ready}" && "${ready}" != "${last_ready}" ]] && { printf '   %s %sReady=%s%s\n' "$(ts)" "${B}" "${ready}" "${N}"; last_ready="${ready}"; }
    if [[ "${ready}" == True ]]; then
      t_ready=$((SECONDS - T_SCALE))
      [[ "${t_repl}" -ge 0 ]] || fail "db-1 turned Ready before its replication threads were seen running"
      break
    fi
  fi
  sleep 1
done
[[ "${t_ready}" -ge 0 ]] || fail "db-1 did not turn Ready within ${TIMEOUT}s (gate: ${last_gate:-none}; replication: ${last_repl:-none})"
ok "db-1 replicating after ${t_repl}s, Ready after ${t_ready}s: Ready only once it replicates (the readiness gate)"

step "Replication on the new slave: SHOW SLAVE STATUS on db-1 (key fields)"
st="$(sql db-1 -e 'SHOW SLAVE STATUS\G')" || fail "SHOW SLAVE STATUS on db-1 failed"
grep -E ' (Master_Host|Master_User|Slave_IO_Running|Slave_SQL_Running|Using_Gtid|Gtid_IO_Pos|Seconds_Behind_Master|Last_IO_Error|Last_SQL_Error):' <<<"${st}" | sed 's/^ *//' | show
grep -q 'Master_Host: db-0.db' <<<"${st}" || fail "db-1 does not replicate from db-0.db"
k get pod db-1 -o jsonpath='{range .status.conditions[*]}{.type}={.status}{"  "}{end}{"\n"}' | show
k get pods | show

step "The rows on the slave db-1 (the one written after the backup came by replication)"
n=""
for _ in $(seq 1 30); do n="$(sql db-1 -N -e 'SELECT COUNT(*) FROM demo.orders' 2>/dev/null)"; [[ "${n}" == "${ROWS}" ]] && break; sleep 1; done
[[ "${n}" == "${ROWS}" ]] || fail "db-1 has ${n:-no} rows of demo.orders, the master ${ROWS}"
sql db-1 -t -e 'SELECT * FROM demo.orders' | show
ok "db-1 holds all ${ROWS} rows, 'pie' (written after the backup) included"

step "Live: a row written on the master now appears on the slave"
sql db-0 -e "INSERT INTO demo.orders (item, note) VALUES ('scone', 'live, after scale')" || fail "could not write on the master"
t=${SECONDS} got=""
for _ in $(seq 1 30); do got="$(sql db-1 -N -e "SELECT item FROM demo.orders WHERE item = 'scone'" 2>/dev/null)"; [[ "${got}" == scone ]] && break; sleep 0.5; done
[[ "${got}" == scone ]] || fail "the row written on db-0 did not reach db-1 within 15s"
sql db-1 -t -e "SELECT * FROM demo.orders WHERE item = 'scone'" | show
ok "on db-1 within $((SECONDS - t))s"

printf '\n%sSummary%s: backup Completed with position %s; kubectl scale -> db-1 replicating %ss, Ready %ss\n' "${B}" "${N}" "${POS}" "${t_repl}" "${t_ready}"
