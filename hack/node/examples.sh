#!/usr/bin/env bash
# Every manifest in deploy/examples on the test node (make node-examples; the
# node must be up with its CSI driver and S3 server: make node-up), applied as
# its header comment says: unchanged, except the S3 endpoint, bucket and
# credentials of s3-credentials.yaml and repository.yaml (lib.sh's
# s3_credentials_yaml, repository_yaml; the bucket is one of our own per
# namespace, see below). The image names need no change: images.sh tags our
# images in containerd with the public names the examples use.
#
# The operator: one helm install (lib.sh's helm_install_operator) of release
# EX_RELEASE (ex) in namespace EX_OPERATOR_NAMESPACE (ex-operator). Each example
# runs in a namespace of its own, with a bucket of its own on the node's S3
# server (named as the namespace: e2e-smoke.sh and bench-provision.sh empty the
# shared bucket, and a repository imports every backup it finds under its
# prefix, so a shared bucket would mix runs):
#
#   ex-cluster (EX_SECTIONS has "cluster"):
#     1. s3-credentials.yaml + repository.yaml: the ReplicatorRepository Ready
#        (reason Synced: the operator listed the bucket);
#     2. mariadb-cluster.yaml: db-0..db-2 Ready;
#     3. db-1 and db-2 replicate from db-0.db (SHOW SLAVE STATUS: both threads
#        Yes, GTID slave_pos); rows written on the master reach both;
#     4. backup.yaml (the master, mysqldump): Completed, from db-0, with a
#        replication position (condition ReplicationPosition True);
#     5. backup-slave.yaml (a slave, the repository's method): Completed, from
#        db-1 or db-2, with the slave's position;
#     6. restore.yaml: db-new Ready, the ReplicatorRestore Completed from the
#        newest logical backup (step 5's), db-new holds every row the master had
#        when it was taken, replicates from the master (both threads Yes) and
#        catches up on rows written after the backup and after the restore.
#   ex-provisioned (EX_SECTIONS has "provisioned"):
#     1. the repository, as above;
#     2. mariadb-provisioned.yaml: the master db-0 Ready (its readiness gate
#        replicator.dev/provisioned True);
#     3. the header's ReplicatorBackup seed (mariabackup; its JSON is taken from
#        the header): Completed with a position;
#     4. the header's `kubectl scale --replicas 3`: db-1 and db-2 provisioned,
#        replicating from db-0.db before they turn Ready (sampled every second),
#        the gate True, every row of the master (one written after the seed);
#     5-7. backup.yaml, backup-slave.yaml and restore.yaml as in ex-cluster;
#     8. `kubectl scale --replicas 4`: db-3 from the newest backup (step 6's,
#        logical), replicating, Ready, every row.
# Each check prints PASS/FAIL with its time; after a failure the rest of that
# namespace's checks are skipped (SKIP) and the next namespace runs; exits 1 if
# any check failed. A namespace is deleted once its checks are done, and the
# release and the operator's namespace at the end, unless KEEP=1.
# EX_TIMEOUT (300 s) bounds each wait. The chart's operator watches all
# namespaces, so another release installed meanwhile also reconciles ours, and
# ours theirs: the script first takes lib.sh's node_lock where lib.sh has one
# (held until it exits), and says so when it finds another release at its start
# or end (helm_install_operator passes no --set watchNamespace).
# The checks are functions run through check (SC2317: "unreachable").
# shellcheck disable=SC2317,SC2001
set -uo pipefail
LOG_TAG=node-examples
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

use_running_node
EXAMPLES="${ROOT}/deploy/examples"
TIMEOUT="${EX_TIMEOUT:-300}"
RELEASE="${EX_RELEASE:-ex}"
OP_NS="${EX_OPERATOR_NAMESPACE:-ex-operator}"
SECTIONS="${EX_SECTIONS:-cluster provisioned}"
"${KUBECTL}" get --raw /readyz >/dev/null 2>&1 || die "the node's API server does not answer (make node-up)"
"${KUBECTL}" get storageclass csi-hostpath-sc >/dev/null 2>&1 || die "no StorageClass csi-hostpath-sc (node-up without NODE_CSI=0 deploys our CSI driver and this class)"

NS=""
k() { "${KUBECTL}" -n "${NS}" "$@"; }

declare -a RESULTS=() TIMES=()
FAILED=0
SECTION_FAILED=0
check() { # check NAME FUNCTION [ARGS...]: runs it (in a subshell), timing it
  local name="$1" t0=${SECONDS} out rc
  shift
  if ((SECTION_FAILED)); then
    RESULTS+=("SKIP  [${NS}] ${name} (an earlier check in ${NS} failed)")
    log "SKIP: ${name}"
    return 1
  fi
  log "[${NS}] ${name} ..."
  out="$("$@" 2>&1)"
  rc=$?
  sed 's/^/    | /' <<<"${out}" >&2
  if ((rc == 0)); then
    RESULTS+=("PASS  [${NS}] ${name} ($((SECONDS - t0))s)")
    log "PASS: ${name} ($((SECONDS - t0))s)"
  else
    RESULTS+=("FAIL  [${NS}] ${name} ($((SECONDS - t0))s): $(tail -3 <<<"${out}" | tr '\n' ' ')")
    log "FAIL: ${name}"
    FAILED=1
    SECTION_FAILED=1
    diagnose 2>&1 | sed 's/^/    ! /' >&2
  fi
  return "${rc}"
}
# other_releases: other helm releases of the chart (they watch all namespaces too).
other_releases() {
  "${HELM}" list -A 2>/dev/null | awk 'NR > 1 && $0 ~ /replicator-operator/ {print $1 " (namespace " $2 ")"}' | grep -vxF "${RELEASE} (namespace ${OP_NS})"
}
others=""
summary() {
  others="$(sort -u <<<"${others}"$'\n'"$(other_releases)" | sed '/^$/d')"
  echo
  echo "node examples (deploy/examples; operator release ${RELEASE} in ${OP_NS}):"
  [[ -z "${others}" ]] || echo "  (other releases of the operator, also reconciling these namespaces, were installed: $(tr '\n' ' ' <<<"${others}"))"
  ((${#RESULTS[@]})) && printf '  %s\n' "${RESULTS[@]}"
  ((${#TIMES[@]})) && printf '  time: %s\n' "${TIMES[@]}"
}
diagnose() {
  [[ -n "${NS}" ]] || return 0
  echo "--- ${NS}: pods, claims, backups, restores, jobs"
  k get pods,pvc,replicatorrepositories,replicatorbackups,replicatorrestores,jobs -o wide 2>&1 | tail -30
  echo "--- ${NS}: events"
  k get events --sort-by=.lastTimestamp 2>&1 | tail -25
  echo "--- the operator's log"
  "${KUBECTL}" -n "${OP_NS}" logs -l app.kubernetes.io/instance="${RELEASE}" --tail=30 2>&1
}

delete_namespace() { # delete_namespace NS [WAIT]: the namespace and its bucket
  "${KUBECTL}" delete namespace "$1" --ignore-not-found --wait="${2:-true}" --timeout=180s >/dev/null 2>&1
  rm -rf "${S3_ROOT:?}/${1:?}"
}
cleanup() { # the examples' namespaces first, while the operator still runs
  if [[ "${KEEP:-0}" != 1 ]]; then
    local s t0=${SECONDS}
    for s in ${SECTIONS}; do delete_namespace "ex-${s}" false; done
    for s in ${SECTIONS}; do "${KUBECTL}" wait --for=delete "namespace/ex-${s}" --timeout=180s >/dev/null 2>&1; done
    "${HELM}" uninstall -n "${OP_NS}" "${RELEASE}" --wait --timeout 60s >/dev/null 2>&1
    delete_namespace "${OP_NS}"
    log "cleanup (namespaces, release): $((SECONDS - t0))s"
  fi
}
trap cleanup EXIT

# new_namespace NS: a fresh namespace, and a fresh bucket named after it.
new_namespace() {
  NS="$1"
  SECTION_FAILED=0
  delete_namespace "${NS}"
  "${KUBECTL}" create namespace "${NS}" >/dev/null || die "cannot create namespace ${NS}"
  for _ in $(seq 1 60); do k get serviceaccount default >/dev/null 2>&1 && break; sleep 0.5; done
  mkdir -p "${S3_ROOT}/${NS}"
}

# ---------------------------------------------------------------- helpers
PW=""
sql() { local pod="$1"; shift; k exec "${pod}" -c mariadb -- mariadb -uroot -p"${PW}" "$@"; }
rows() { sql "$1" -N -e 'SELECT count(*) FROM ex.t' 2>/dev/null; }
master_rows() { rows db-0; }
add_row() { sql db-0 -e "INSERT INTO ex.t (note) VALUES ('$1')"; }
wait_rows() { # wait_rows POD N: POD's ex.t has N rows within 30 s
  local n=""
  for _ in $(seq 1 60); do
    n="$(rows "$1")"
    [[ "${n}" == "$2" ]] && break
    sleep 0.5
  done
  [[ "${n}" == "$2" ]] || { echo "$1 has ${n:-no} rows of ex.t, not $2"; return 1; }
  echo "$1: ${n} rows of ex.t, as the master"
}
# slave_ok POD: SHOW SLAVE STATUS in POD has both threads Yes (waits up to 60 s);
# prints the main fields.
slave_ok() {
  local st=""
  for _ in $(seq 1 60); do
    st="$(sql "$1" -e 'SHOW SLAVE STATUS\G' 2>/dev/null)"
    grep -q 'Slave_IO_Running: Yes' <<<"${st}" && grep -q 'Slave_SQL_Running: Yes' <<<"${st}" && break
    sleep 1
  done
  echo "$1: SHOW SLAVE STATUS"
  grep -E ' (Master_Host|Master_User|Slave_IO_Running|Slave_SQL_Running|Using_Gtid|Gtid_IO_Pos|Last_IO_Error|Last_SQL_Error):' <<<"${st}" | sed 's/^ */    /'
  if ! { grep -q 'Slave_IO_Running: Yes' <<<"${st}" && grep -q 'Slave_SQL_Running: Yes' <<<"${st}"; }; then
    echo "$1: the replication threads do not both run"
    return 1
  fi
}
master_host_ok() { # master_host_ok POD: it replicates from db-0.db[.<ns>.svc...]
  local h
  h="$(sql "$1" -e 'SHOW SLAVE STATUS\G' | sed -n 's/^ *Master_Host: //p')"
  [[ "${h}" == db-0.db || "${h}" == db-0.db.* ]] || { echo "$1 replicates from '${h}', not db-0.db"; return 1; }
}
# wait_phase KIND NAME: until .status.phase is Completed or Failed; prints it.
wait_phase() {
  local phase=""
  [[ -n "$2" ]] || { echo "wait_phase: no $1 name"; return 1; }
  for ((i = 0; i < TIMEOUT; i++)); do
    phase="$(k get "$1" "$2" -o jsonpath='{.status.phase}' 2>/dev/null)"
    [[ "${phase}" == Completed || "${phase}" == Failed ]] && break
    sleep 1
  done
  k get "$1" "$2"
  k get "$1" "$2" -o jsonpath='{range .status.conditions[*]}  {.type}={.status} {.reason}: {.message}{"\n"}{end}'
  [[ "${phase}" == Completed ]] || { echo "$1/$2: phase ${phase:-none} after ${TIMEOUT}s"; return 1; }
}
# name_in FILE KIND: the name of the (first) object of KIND in FILE.
name_in() {
  awk -v kind="$2" '/^---/ { k = 0; m = 0 } $0 == "kind: " kind { k = 1 } /^metadata:/ { m = 1 }
    k && m && /^  name:/ { print $2; exit }' "$1"
}

# ---------------------------------------------------------------- checks
repository() {
  local y
  s3_credentials_yaml | diff "${EXAMPLES}/s3-credentials.yaml" - | grep '^[<>]' | sed 's/\(_KEY[_ID]*: \).*/\1.../'
  s3_credentials_yaml | k apply -f - || return 1
  y="$(S3_BUCKET="${NS}" repository_yaml)"
  echo "repository.yaml, substituted lines:"
  diff "${EXAMPLES}/repository.yaml" - <<<"${y}" | grep '^[<>]'
  if ! { grep -q "endpoint: ${S3_ENDPOINT}" <<<"${y}" && grep -q "bucket: ${NS}$" <<<"${y}"; }; then
    echo "repository.yaml: no endpoint or bucket line to substitute"
    return 1
  fi
  k apply -f - <<<"${y}" || return 1
  local ready="" reason=""
  for ((i = 0; i < 120; i++)); do
    ready="$(k get replicatorrepository default -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)"
    reason="$(k get replicatorrepository default -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}' 2>/dev/null)"
    [[ "${ready}" == True ]] && break
    sleep 0.5
  done
  k get replicatorrepositories
  k get replicatorrepository default -o jsonpath='{range .status.conditions[*]}  {.type}={.status} {.reason}: {.message}{"\n"}{end}lastSyncTime {.status.lastSyncTime}{"\n"}'
  [[ "${ready}" == True && "${reason}" == Synced ]] || { echo "repository default: Ready=${ready:-none} (${reason:-no reason}), not True (Synced)"; return 1; }
}

cluster_ready() {
  k apply -f "${EXAMPLES}/mariadb-cluster.yaml" || return 1
  k rollout status statefulset/db --timeout="${TIMEOUT}s" || return 1
  k get pods -o wide
  [[ "$(k get statefulset db -o jsonpath='{.status.readyReplicas}')" == 3 ]] || { echo "not 3 pods Ready"; return 1; }
}

cluster_replicating() {
  local i n
  for i in 1 2; do
    slave_ok "db-${i}" && master_host_ok "db-${i}" || return 1
    sql "db-${i}" -e 'SHOW SLAVE STATUS\G' | grep -q 'Using_Gtid: Slave_Pos' || { echo "db-${i}: not MASTER_USE_GTID=slave_pos"; return 1; }
  done
  sql db-0 -e "CREATE DATABASE ex; CREATE TABLE ex.t (i INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64));
    INSERT INTO ex.t (note) VALUES ('one'), ('two'), ('three')" || return 1
  n="$(master_rows)"
  echo "db-0: ${n} rows written"
  for i in 1 2; do wait_rows "db-${i}" "${n}" || return 1; done
}

# backup_example FILE ROLE: applied unchanged; Completed, from ROLE's pod, with a position.
backup_example() {
  local file="$1" role="$2" name src pos
  name="$(name_in "${file}" ReplicatorBackup)"
  [[ -n "${name}" ]] || { echo "no ReplicatorBackup in ${file}"; return 1; }
  k apply -f "${file}" || return 1
  wait_phase replicatorbackup "${name}" || return 1
  k get replicatorbackup "${name}" -o jsonpath='method {.status.method}, source {.status.sourcePod}, role {.status.replication.role}, size {.status.sizeHuman}, stored as {.status.backupName}{"\n"}position {.status.position}{"\n"}'
  src="$(k get replicatorbackup "${name}" -o jsonpath='{.status.sourcePod}')"
  pos="$(k get replicatorbackup "${name}" -o jsonpath='{.status.position}')"
  [[ -n "${pos}" ]] || { echo "${name}: no replication position"; return 1; }
  [[ "$(k get replicatorbackup "${name}" -o jsonpath='{.status.conditions[?(@.type=="ReplicationPosition")].status}')" == True ]] ||
    { echo "${name}: condition ReplicationPosition is not True"; return 1; }
  if [[ "${role}" == master ]]; then
    [[ "${src}" == db-0 ]] || { echo "${name}: taken on ${src:-nothing}, not the master db-0"; return 1; }
  else
    [[ "${src}" == db-[1-9]* ]] || { echo "${name}: taken on ${src:-nothing}, not a slave"; return 1; }
  fi
}

# restore_example: restore.yaml unchanged; db-new gets the newest logical backup
# (backup-slave.yaml's) and replicates from the master.
restore_example() {
  local file="${EXAMPLES}/restore.yaml" name expect got n_backup n
  name="$(name_in "${file}" ReplicatorRestore)"
  expect="$(k get replicatorbackup "$(name_in "${EXAMPLES}/backup-slave.yaml" ReplicatorBackup)" -o jsonpath='{.status.backupName}')"
  # The rows the newest backup holds: all but the one written after it.
  n_backup="$(($(master_rows) - 1))"
  k apply -f "${file}" || return 1
  k wait --for=condition=Ready pod/db-new --timeout="${TIMEOUT}s" || return 1
  wait_phase replicatorrestore "${name}" || return 1
  k get replicatorrestore "${name}" -o jsonpath='backup {.status.backupName}, position {.status.position}, target {.status.targetPod}, replicating {.status.replicating}{"\n"}'
  got="$(k get replicatorrestore "${name}" -o jsonpath='{.status.backupName}')"
  [[ "${got}" == "${expect}" ]] || { echo "restored ${got:-nothing}, not the newest logical backup ${expect}"; return 1; }
  [[ "$(k get replicatorrestore "${name}" -o jsonpath='{.status.replicating}')" == true ]] || { echo "status.replicating is not true"; return 1; }
  slave_ok db-new || return 1
  n="$(master_rows)"
  echo "the backup held ${n_backup} rows; the master has ${n} (one written after the backup)"
  ((n_backup >= 3)) || return 1
  wait_rows db-new "${n}" || return 1
  add_row after-restore || return 1
  wait_rows db-new "$(master_rows)" || return 1
  echo "db-new: a row written on the master after the restore arrived"
}

provisioned_ready() {
  k apply -f "${EXAMPLES}/mariadb-provisioned.yaml" || return 1
  k rollout status statefulset/db --timeout="${TIMEOUT}s" || return 1
  k get pod db-0 -o jsonpath='{range .status.conditions[*]}  {.type}={.status} {.reason} {.message}{"\n"}{end}'
  [[ "$(k get pod db-0 -o jsonpath='{.status.conditions[?(@.type=="replicator.dev/provisioned")].status}')" == True ]] ||
    { echo "db-0: the readiness gate replicator.dev/provisioned is not True"; return 1; }
}

seed_backup() { # the ReplicatorBackup of mariadb-provisioned.yaml's header, as written there
  local json name
  json="$(sed -n "s/^#.* apply -f - <<< '\(.*\)'$/\1/p" "${EXAMPLES}/mariadb-provisioned.yaml")"
  [[ -n "${json}" ]] || { echo "no ReplicatorBackup in the header of mariadb-provisioned.yaml"; return 1; }
  echo "${json}"
  sql db-0 -e "CREATE DATABASE ex; CREATE TABLE ex.t (i INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64));
    INSERT INTO ex.t (note) VALUES ('one'), ('two'), ('three')" || return 1
  k apply -f - <<<"${json}" || return 1
  name="$(sed -n 's/.*"metadata":{"name":"\([^"]*\)".*/\1/p' <<<"${json}")"
  wait_phase replicatorbackup "${name}" || return 1
  k get replicatorbackup "${name}" -o jsonpath='method {.status.method}, source {.status.sourcePod}, size {.status.sizeHuman}, position {.status.position}{"\n"}'
  [[ -n "$(k get replicatorbackup "${name}" -o jsonpath='{.status.position}')" ]] || { echo "${name}: no replication position"; return 1; }
}

# scale_to REPLICAS: kubectl scale; each new pod provisioned, replicating before
# it turns Ready (sampled every second), its gate True, every row of the master.
scale_to() {
  local replicas="$1" from p i n all ready st t_start
  from="$(k get statefulset db -o jsonpath='{.spec.replicas}')"
  add_row "before-scale-${replicas}" || return 1
  declare -A t_ready=() t_repl=()
  local -a pods=()
  for ((i = from; i < replicas; i++)); do pods+=("db-${i}"); t_ready[db-${i}]=-1; t_repl[db-${i}]=-1; done
  t_start=${SECONDS}
  k scale statefulset db --replicas "${replicas}" || return 1
  for ((i = 0; i < TIMEOUT; i++)); do
    all=1
    for p in "${pods[@]}"; do
      ((${t_ready[${p}]} >= 0)) && continue
      all=0
      ready="$(k get pod "${p}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)"
      st="$(sql "${p}" -e 'SHOW SLAVE STATUS\G' 2>/dev/null)" || st=""
      if ((${t_repl[${p}]} < 0)) && grep -q 'Slave_IO_Running: Yes' <<<"${st}" && grep -q 'Slave_SQL_Running: Yes' <<<"${st}"; then
        t_repl[${p}]=$((SECONDS - t_start))
      fi
      [[ "${ready}" == True ]] && t_ready[${p}]=$((SECONDS - t_start))
    done
    ((all)) && break
    sleep 1
  done
  k get pods -o wide
  k get replicatorrestores 2>/dev/null
  n="$(master_rows)"
  for p in "${pods[@]}"; do
    echo "${p}: replicating after ${t_repl[${p}]}s, Ready after ${t_ready[${p}]}s"
    k get pod "${p}" -o jsonpath='{range .status.conditions[*]}  {.type}={.status} {.reason} {.message}{"\n"}{end}'
    k get pod "${p}" -o jsonpath='{range .status.initContainerStatuses[*]}  init {.name}: {.state.terminated.reason} {.state.terminated.message}{"\n"}{end}'
    ((${t_ready[${p}]} >= 0)) || { echo "${p} not Ready after ${TIMEOUT}s"; k logs "${p}" -c provision --tail=15; k logs "${p}" -c mariadb --tail=15; return 1; }
    ((${t_repl[${p}]} >= 0 && ${t_repl[${p}]} <= ${t_ready[${p}]})) || { echo "${p} was Ready before its replication threads were seen running"; return 1; }
    [[ "$(k get pod "${p}" -o jsonpath='{.status.conditions[?(@.type=="replicator.dev/provisioned")].status}')" == True ]] ||
      { echo "${p}: the readiness gate replicator.dev/provisioned is not True"; return 1; }
    slave_ok "${p}" && master_host_ok "${p}" || return 1
    wait_rows "${p}" "${n}" || return 1
  done
  k get pvc -o custom-columns=PVC:.metadata.name,STATUS:.status.phase,PROVISIONED:.metadata.annotations.replicator\\.dev/provisioned --no-headers
}

# ---------------------------------------------------------------- run
log "operator: release ${RELEASE} in namespace ${OP_NS}"
# lib.sh's node_lock (where it has one): one script with an operator on the node
# at a time, held until this script exits. Taken here, in this shell: check runs
# helm_install_operator in a subshell, whose exit would release it.
if declare -F node_lock >/dev/null; then
  t0=${SECONDS}
  node_lock
  ((SECONDS - t0 < 2)) || TIMES+=("waited for the node's operator lock: $((SECONDS - t0))s")
fi
t_all=${SECONDS}
others="$(other_releases)"
[[ -z "${others}" ]] || log "WARNING: other releases of the operator are installed, and they also reconcile our namespaces: $(tr '\n' ' ' <<<"${others}")"
"${HELM}" uninstall -n "${OP_NS}" "${RELEASE}" --wait --timeout 60s >/dev/null 2>&1
NS="${OP_NS}"
"${KUBECTL}" delete namespace "${OP_NS}" --ignore-not-found --wait=true --timeout=180s >/dev/null 2>&1
"${KUBECTL}" create namespace "${OP_NS}" >/dev/null || die "cannot create namespace ${OP_NS}"
helm_install() {
  helm_install_operator "${RELEASE}" "${OP_NS}" || return 1
  k get pods -l app.kubernetes.io/instance="${RELEASE}"
}
t0=${SECONDS}
if ! check "helm install charts/replicator-operator (our images): operator Ready" helm_install; then
  summary
  exit 1
fi
TIMES+=("helm install: $((SECONDS - t0))s")

for section in ${SECTIONS}; do
  t_section=${SECONDS}
  case "${section}" in
    cluster)
      new_namespace ex-cluster
      check "s3-credentials.yaml + repository.yaml (bucket ${NS} on ${S3_ENDPOINT}): repository Ready (Synced)" repository
      t0=${SECONDS}
      check "mariadb-cluster.yaml unchanged: db-0, db-1, db-2 Ready" cluster_ready && TIMES+=("[${NS}] apply → 3 pods Ready: $((SECONDS - t0))s")
      PW="$(k get secret db-credentials -o jsonpath='{.data.password}' 2>/dev/null | base64 -d)"
      check "mariadb-cluster.yaml: db-1, db-2 replicate from db-0.db (both threads Yes), the master's rows reach them" cluster_replicating
      t0=${SECONDS}
      check "backup.yaml unchanged: Completed, taken on the master db-0, with a replication position" backup_example "${EXAMPLES}/backup.yaml" master &&
        TIMES+=("[${NS}] backup.yaml → Completed: $((SECONDS - t0))s")
      ((SECTION_FAILED)) || add_row after-backup >/dev/null
      t0=${SECONDS}
      check "backup-slave.yaml unchanged: Completed, taken on a slave, with a replication position" backup_example "${EXAMPLES}/backup-slave.yaml" slave &&
        TIMES+=("[${NS}] backup-slave.yaml → Completed: $((SECONDS - t0))s")
      ((SECTION_FAILED)) || add_row after-backup-slave >/dev/null
      t0=${SECONDS}
      check "restore.yaml unchanged: db-new Ready, restore Completed from the newest logical backup, its rows, replicating from the master" restore_example &&
        TIMES+=("[${NS}] restore.yaml → Completed, caught up: $((SECONDS - t0))s")
      ;;
    provisioned)
      new_namespace ex-provisioned
      check "s3-credentials.yaml + repository.yaml (bucket ${NS} on ${S3_ENDPOINT}): repository Ready (Synced)" repository
      t0=${SECONDS}
      check "mariadb-provisioned.yaml unchanged: master db-0 Ready, gate replicator.dev/provisioned True" provisioned_ready &&
        TIMES+=("[${NS}] apply → db-0 Ready: $((SECONDS - t0))s")
      PW="$(k get secret db-credentials -o jsonpath='{.data.password}' 2>/dev/null | base64 -d)"
      t0=${SECONDS}
      check "mariadb-provisioned.yaml header: ReplicatorBackup seed (mariabackup) Completed with a position" seed_backup &&
        TIMES+=("[${NS}] seed backup → Completed: $((SECONDS - t0))s")
      t0=${SECONDS}
      check "mariadb-provisioned.yaml header: kubectl scale --replicas 3 → db-1, db-2 replicating, then Ready, every row" scale_to 3 &&
        TIMES+=("[${NS}] scale 1 → 3 → both Ready: $((SECONDS - t0))s")
      t0=${SECONDS}
      check "backup.yaml unchanged: Completed, taken on the master db-0, with a replication position" backup_example "${EXAMPLES}/backup.yaml" master &&
        TIMES+=("[${NS}] backup.yaml → Completed: $((SECONDS - t0))s")
      ((SECTION_FAILED)) || add_row after-backup >/dev/null
      t0=${SECONDS}
      check "backup-slave.yaml unchanged: Completed, taken on a slave, with a replication position" backup_example "${EXAMPLES}/backup-slave.yaml" slave &&
        TIMES+=("[${NS}] backup-slave.yaml → Completed: $((SECONDS - t0))s")
      ((SECTION_FAILED)) || add_row after-backup-slave >/dev/null
      t0=${SECONDS}
      check "restore.yaml unchanged: db-new Ready, restore Completed from the newest logical backup, its rows, replicating from the master" restore_example &&
        TIMES+=("[${NS}] restore.yaml → Completed, caught up: $((SECONDS - t0))s")
      t0=${SECONDS}
      check "kubectl scale --replicas 4 → db-3 provisioned, replicating, then Ready, every row" scale_to 4 &&
        TIMES+=("[${NS}] scale 3 → 4 → Ready: $((SECONDS - t0))s")
      ;;
    *) die "unknown section ${section} in EX_SECTIONS (cluster, provisioned)" ;;
  esac
  TIMES+=("[${NS}] all checks: $((SECONDS - t_section))s")
  # Free the node for the next namespace (cleanup waits for the deletion).
  [[ "${KEEP:-0}" == 1 ]] || delete_namespace "${NS}" false
done
TIMES+=("whole run (before cleanup): $((SECONDS - t_all))s")

summary
exit "${FAILED}"
