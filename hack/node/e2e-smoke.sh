#!/usr/bin/env bash
# The operator end to end on the test node (make node-e2e-smoke; the node must
# be up with its CSI driver and S3 server: make node-up). In a namespace of its own:
#   1. helm install of charts/replicator-operator with our images;
#   2. deploy/examples/s3-credentials.yaml and repository.yaml with only the
#      S3 endpoint, bucket and credentials substituted: versitygw on the node
#      address (node-up), which pods reach;
#   3. deploy/examples/mariadb-provisioned.yaml applied unchanged (E2E_EXAMPLE
#      names another file): its master db-0 turns Ready (its PVC from the
#      default StorageClass, the CSI driver);
#   4. the ReplicatorBackup of its header (method mariabackup, source the
#      StatefulSet's master) turns Completed with a replication position;
#   5. a row written on the master after the backup;
#   6. `kubectl scale statefulset db --replicas 2`: db-1 is provisioned (the
#      init container restores the physical backup), replicates from the master
#      (SHOW SLAVE STATUS in the pod: both threads Yes, Master_Host db-0.db),
#      and turns Ready only after that (sampled every second: Ready is never
#      seen before replication runs; the readiness gate condition
#      replicator.dev/provisioned is True); the row from step 5 reaches it; the
#      files in its data directory belong to 999;
#   7. the same with a newer mysqldump backup and --replicas 3: db-2 is loaded
#      by a ReplicatorRestore Job once its server runs (E2E_LOGICAL=0 skips it);
#   8. a volumesnapshot backup of the master (a CSI VolumeSnapshot under FTWRL),
#      the spare claim data-db-3 the operator pre-creates from it (dataSource:
#      the snapshot; bound when the new pod is scheduled: WaitForFirstConsumer),
#      and --replicas 4: db-3 starts on the clone and is made a slave by the
#      operator (E2E_SNAPSHOT=0 skips it).
# Prints each step's time, PASS/FAIL per check; exits 1 if any failed.
# KEEP=1 keeps the namespace and the release.
set -uo pipefail
LOG_TAG=node-e2e
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

use_running_node
NS="${E2E_NAMESPACE:-replicator-e2e}"
EXAMPLE="${E2E_EXAMPLE:-${ROOT}/deploy/examples/mariadb-provisioned.yaml}"
TIMEOUT="${E2E_TIMEOUT:-300}"
k() { "${KUBECTL}" -n "${NS}" "$@"; }
"${KUBECTL}" get --raw /readyz >/dev/null 2>&1 || die "the node's API server does not answer (make node-up)"
"${KUBECTL}" get storageclass csi-hostpath-sc >/dev/null 2>&1 || die "no StorageClass csi-hostpath-sc (node-up without NODE_CSI=0 deploys our CSI driver and this class)"

declare -a RESULTS=() TIMES=()
FAILED=0
pass() { RESULTS+=("PASS  $1 ($2s)"); log "PASS: $1"; }
fail() { RESULTS+=("FAIL  $1: $2"); FAILED=1; log "FAIL: $1: $2"; }
check() { # check NAME FUNCTION: runs it, timing it; stops the run at the first failure
  local name="$1" t0=${SECONDS} out
  shift
  if out="$("$@" 2>&1)"; then
    sed 's/^/    | /' <<<"${out}" >&2
    pass "${name}" "$((SECONDS - t0))"
  else
    sed 's/^/    | /' <<<"${out}" >&2
    fail "${name}" "$(tail -3 <<<"${out}" | tr '\n' ' ')"
    summary
    exit 1
  fi
}
summary() {
  echo
  echo "node e2e smoke (namespace ${NS}, example ${EXAMPLE#"${ROOT}"/}):"
  printf '  %s\n' "${RESULTS[@]}"
  ((${#TIMES[@]})) && printf '  time: %s\n' "${TIMES[@]}"
}
diagnose() {
  k get pods,pvc,replicatorbackups,replicatorrestores,jobs -o wide 2>&1 | tail -25
  k get events --sort-by=.lastTimestamp 2>&1 | tail -25
  k logs deploy/e2e-replicator-operator --tail=30 2>&1
}

cleanup() {
  if [[ "${KEEP:-0}" != 1 ]]; then
    "${HELM}" uninstall -n "${NS}" e2e --wait --timeout 60s >/dev/null 2>&1
    "${KUBECTL}" delete namespace "${NS}" --wait=true --timeout=180s >/dev/null 2>&1
  fi
}
trap cleanup EXIT

t_all=${SECONDS}
"${KUBECTL}" delete namespace "${NS}" --wait=true --timeout=180s >/dev/null 2>&1
"${KUBECTL}" create namespace "${NS}" >/dev/null
for _ in $(seq 1 60); do k get serviceaccount default >/dev/null 2>&1 && break; sleep 0.5; done
# A clean bucket: backups of an earlier run (same cluster name) would be chosen.
rm -rf "${S3_ROOT:?}/${S3_BUCKET:?}" && mkdir -p "${S3_ROOT}/${S3_BUCKET}"

# ---------------------------------------------------------------- 1. operator
helm_install() {
  helm_install_operator e2e "${NS}" || { diagnose; return 1; }
  k get pods -l app.kubernetes.io/instance=e2e
}
check "helm install charts/replicator-operator (our images): operator Ready" helm_install

# ---------------------------------------------------------------- 2. repository
repository() {
  s3_credentials_yaml | k apply -f - || return 1
  repository_yaml | tee /dev/stderr | grep -q "endpoint: ${S3_ENDPOINT}" ||
    { echo "repository.yaml: no endpoint line to substitute"; return 1; }
  repository_yaml | k apply -f - || return 1
  sleep 2
  k get replicatorrepository default -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
}
check "s3-credentials.yaml + repository.yaml (S3 ${S3_ENDPOINT}, bucket ${S3_BUCKET})" repository

# ---------------------------------------------------------------- 3. master
master_ready() {
  k apply -f "${EXAMPLE}" || return 1
  k rollout status statefulset/db --timeout="${TIMEOUT}s" || { diagnose; return 1; }
  k get pod db-0 -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason} {.message}{"\n"}{end}'
  k get pvc data-db-0 -o jsonpath='PVC {.metadata.name}: {.spec.storageClassName} {.status.phase}{"\n"}'
}
t0=${SECONDS}
check "${EXAMPLE#"${ROOT}"/} applied: master db-0 Ready" master_ready
TIMES+=("apply → db-0 Ready: $((SECONDS - t0))s")

PW="$(k get secret db-credentials -o jsonpath='{.data.password}' | base64 -d)"
sql() { local pod="$1"; shift; k exec "${pod}" -c mariadb -- mariadb -uroot -p"${PW}" "$@"; }

# ---------------------------------------------------------------- 4-6. backup, scale
sql db-0 -e 'CREATE DATABASE IF NOT EXISTS e2e; CREATE TABLE IF NOT EXISTS e2e.t (i INT PRIMARY KEY)' >/dev/null
# add_row: one more row on the master (check runs each step in a subshell: the
# master's count is the expected count).
add_row() { sql db-0 -e 'INSERT INTO e2e.t SELECT COALESCE(MAX(i), 0) + 1 FROM e2e.t'; }
backup() { # backup NAME METHOD: a row on the master, then a ReplicatorBackup of it
  local name="$1" method="$2" phase="" i pos
  add_row || return 1
  sql db-0 -N -e 'SELECT @@server_id, @@log_bin, @@gtid_binlog_pos' || return 1
  # As in the example's header (there: seed, mariabackup).
  k apply -f - <<<"{\"apiVersion\":\"replicator.dev/v1alpha1\",\"kind\":\"ReplicatorBackup\",\"metadata\":{\"name\":\"${name}\"},\"spec\":{\"method\":\"${method}\",\"source\":{\"statefulSet\":\"db\",\"credentialsSecret\":{\"name\":\"db-credentials\"}}}}" || return 1
  for ((i = 0; i < TIMEOUT; i++)); do
    phase="$(k get replicatorbackup "${name}" -o jsonpath='{.status.phase}')"
    [[ "${phase}" == Completed || "${phase}" == Failed ]] && break
    sleep 1
  done
  k get replicatorbackup "${name}"
  k get replicatorbackup "${name}" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
  [[ "${phase}" == Completed ]] || { k get replicatorbackup "${name}" -o yaml | tail -30; diagnose; return 1; }
  pos="$(k get replicatorbackup "${name}" -o jsonpath='{.status.position}')"
  echo "position: ${pos:-none}"
  [[ -n "${pos}" ]] || { echo "the backup recorded no replication position"; k logs "job/$(k get replicatorbackup "${name}" -o jsonpath='{.status.jobName}')" --tail=20; return 1; }
}

SCALE_LOG="$(mktemp)"
scale() { # scale REPLICAS: the new pod db-(REPLICAS-1) provisioned, replicating, then Ready
  local replicas="$1" pod="db-$(($1 - 1))" i ready="" st t_ready=-1 t_repl=-1 t_start=${SECONDS} early=0
  # A row after the backup: it must arrive by replication.
  add_row || return 1
  local rows
  rows="$(sql db-0 -N -e 'SELECT count(*) FROM e2e.t')" || return 1
  k scale statefulset db --replicas "${replicas}" || return 1
  for ((i = 0; i < TIMEOUT; i++)); do
    ready="$(k get pod "${pod}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)"
    st="$(sql "${pod}" -e 'SHOW SLAVE STATUS\G' 2>/dev/null)" || st=""
    if [[ "${t_repl}" -lt 0 ]] && grep -q 'Slave_IO_Running: Yes' <<<"${st}" && grep -q 'Slave_SQL_Running: Yes' <<<"${st}"; then
      t_repl=$((SECONDS - t_start))
    fi
    if [[ "${ready}" == True ]]; then
      t_ready=$((SECONDS - t_start))
      [[ "${t_repl}" -lt 0 ]] && early=1
      break
    fi
    sleep 1
  done
  echo "scale to ${replicas} → ${pod} replicating: ${t_repl}s, → Ready: ${t_ready}s" | tee -a "${SCALE_LOG}"
  k get pod "${pod}" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason} {.message}{"\n"}{end}'
  k get pod "${pod}" -o jsonpath='{range .status.initContainerStatuses[*]}init {.name}: {.state.terminated.reason} {.state.terminated.message}{"\n"}{end}'
  k get events --field-selector involvedObject.name="${pod}" -o custom-columns=REASON:.reason,MESSAGE:.message --no-headers | tail -12
  k get replicatorrestores 2>/dev/null
  [[ "${t_ready}" -ge 0 ]] || { diagnose; k logs "${pod}" -c provision --tail=20; k logs "${pod}" -c mariadb --tail=20; return 1; }
  [[ "${early}" == 0 ]] || { echo "${pod} was Ready before its replication threads ran"; return 1; }
  st="$(sql "${pod}" -e 'SHOW SLAVE STATUS\G')" || return 1
  grep -E 'Master_Host|Slave_IO_Running|Slave_SQL_Running:|Gtid_IO_Pos|Using_Gtid' <<<"${st}"
  grep -q 'Master_Host: db-0.db' <<<"${st}" || { echo "${pod} does not replicate from db-0.db"; return 1; }
  [[ "$(k get pod "${pod}" -o jsonpath='{.status.conditions[?(@.type=="replicator.dev/provisioned")].status}')" == True ]] ||
    { echo "the readiness gate replicator.dev/provisioned is not True"; return 1; }
  local n=0
  for _ in $(seq 1 20); do
    n="$(sql "${pod}" -N -e 'SELECT count(*) FROM e2e.t' 2>/dev/null)"
    [[ "${n}" == "${rows}" ]] && break
    sleep 0.5
  done
  [[ "${n}" == "${rows}" ]] || { echo "${pod} has ${n:-no} rows of e2e.t, not ${rows}"; return 1; }
  echo "${pod} holds all ${rows} rows (the last one written after the backup, replicated)"
  k exec "${pod}" -c mariadb -- stat -c '%n %U(%u):%G(%g) %a' /var/lib/mysql /var/lib/mysql/mysql /var/lib/mysql/ibdata1 || return 1
  # Below the subPath directory (the kubelet creates that one: root, group fsGroup, setgid).
  local foreign
  foreign="$(k exec "${pod}" -c mariadb -- find /var/lib/mysql -mindepth 1 ! -uid 999 -print)" || return 1
  [[ -z "${foreign}" ]] || { echo "in ${pod}'s data directory, not owned by 999:"; head -5 <<<"${foreign}"; return 1; }
  echo "every file below /var/lib/mysql belongs to 999"
  k get pvc -o custom-columns=PVC:.metadata.name,CLASS:.spec.storageClassName,STATUS:.status.phase,MARKER:.metadata.annotations.replicator\\.dev/provisioned --no-headers
}

# Physical: the header's seed backup; db-1 is restored by its init container.
t0=${SECONDS}
check "ReplicatorBackup seed (mariabackup of the master): Completed with a position" backup seed mariabackup
TIMES+=("mariabackup backup → Completed: $((SECONDS - t0))s")
check "kubectl scale --replicas 2 → db-1 restored (physical, init container), replicating from db-0.db, Ready only after, files owned by 999" scale 2
# Logical: a newer mysqldump backup; db-2 is loaded by a restore Job once its server runs.
if [[ "${E2E_LOGICAL:-1}" == 1 ]]; then
  t0=${SECONDS}
  check "ReplicatorBackup seed-logical (mysqldump of the master): Completed with a position" backup seed-logical mysqldump
  TIMES+=("mysqldump backup → Completed: $((SECONDS - t0))s")
  check "kubectl scale --replicas 3 → db-2 loaded (logical, restore Job), replicating from db-0.db, Ready only after, files owned by 999" scale 3
fi
# Snapshot: a volumesnapshot backup through the CSI driver; the operator keeps
# the next ordinal's claim (data-db-3) pre-created from it; db-3 starts on the clone.
spare() { # spare ORDINAL: the claim data-db-ORDINAL exists, cloned from the newest snapshot backup
  local pvc="data-db-$1" i seeded=""
  for ((i = 0; i < TIMEOUT; i++)); do
    seeded="$(k get pvc "${pvc}" -o jsonpath='{.metadata.annotations.replicator\.dev/seeded-from}' 2>/dev/null)"
    [[ -n "${seeded}" ]] && break
    sleep 1
  done
  k get pvc "${pvc}" -o jsonpath='{.metadata.name}: {.status.phase}, dataSource {.spec.dataSource.kind}/{.spec.dataSource.name}, seeded-from {.metadata.annotations.replicator\.dev/seeded-from}, seed-position {.metadata.annotations.replicator\.dev/seed-position}{"\n"}' || { diagnose; return 1; }
  [[ -n "${seeded}" ]] || { diagnose; return 1; }
  [[ "$(k get pvc "${pvc}" -o jsonpath='{.spec.dataSource.kind}')" == VolumeSnapshot ]] || { echo "${pvc} is not cloned from a VolumeSnapshot"; return 1; }
  # csi-hostpath-sc binds on first consumer: the clone is made when the new pod is scheduled.
  k get events --field-selector involvedObject.name="${pvc}" -o custom-columns=REASON:.reason,MESSAGE:.message --no-headers | tail -3
  k get volumesnapshots
}
if [[ "${E2E_SNAPSHOT:-1}" == 1 ]]; then
  t0=${SECONDS}
  check "ReplicatorBackup seed-snap (volumesnapshot of the master, CSI): Completed with a position" backup seed-snap volumesnapshot
  TIMES+=("volumesnapshot backup → Completed: $((SECONDS - t0))s")
  n="$(k get statefulset db -o jsonpath='{.spec.replicas}')"
  t0=${SECONDS}
  check "spare claim data-db-${n} pre-created by the operator from the snapshot (dataSource VolumeSnapshot)" spare "${n}"
  TIMES+=("snapshot backup Completed → spare claim created: $((SECONDS - t0))s")
  check "kubectl scale --replicas $((n + 1)) → db-${n} on the snapshot clone, replicating from db-0.db, Ready only after, files owned by 999" scale "$((n + 1))"
fi
while read -r line; do TIMES+=("${line}"); done <"${SCALE_LOG}"
rm -f "${SCALE_LOG}"
TIMES+=("whole run: $((SECONDS - t_all))s")

summary
exit "${FAILED}"
