#!/usr/bin/env bash
# Provisioning benchmark on the test node (make node-bench-provision; the node
# must be up with its CSI driver and S3 server: make node-up). Measures, per
# backup method, how long `kubectl scale` takes to give a Ready slave that
# replicates, with the master holding about BENCH_SIZE_MB (default 1024) MiB of
# InnoDB data. In a namespace of its own (BENCH_NAMESPACE, default
# replicator-bench), as e2e-smoke.sh does:
#   1. helm install of the chart with our images; the repository on the node's
#      S3 server (deploy/examples/s3-credentials.yaml + repository.yaml, only the
#      endpoint, bucket and credentials substituted);
#   2. deploy/examples/mariadb-provisioned.yaml unchanged: the master db-0 Ready;
#   3. bench.t filled on the master (INSERT ... SELECT from the sequence engine,
#      binary logging on) until its .ibd file holds BENCH_SIZE_MB MiB; its row
#      count and CHECKSUM TABLE recorded;
#   4. for each method of BENCH_METHODS (default mariabackup,mysqldump,
#      volumesnapshot; volumesnapshot always last: from then on the operator
#      keeps a spare claim cloned from the snapshot for the next ordinal):
#      a ReplicatorBackup of the master (timed apply → Completed; its stored
#      size: the object in S3, or for volumesnapshot the CSI driver's copy of the
#      volume), a row in bench.marker written after it (it must arrive by
#      replication), then `kubectl scale --replicas N+1` timed to the new pod's
#      Ready (sampled every second with SHOW SLAVE STATUS in the pod: Ready seen
#      before both replication threads run is a failure);
#   5. the check of each new slave: both threads Yes from Master_Host db-0.db,
#      the gate replicator.dev/provisioned True, caught up to the master's
#      gtid_binlog_pos (MASTER_GTID_WAIT), bench.t's row count and CHECKSUM
#      TABLE equal to the master's, bench.marker equal to the master's.
# Prints one table; writes BENCH_OUT.json and BENCH_OUT.md (default
# bench/results/provision-node). Exits 1 if anything failed (the table is still
# written, a failed check marked). KEEP=1 keeps the namespace.
set -uo pipefail
LOG_TAG=node-bench
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

use_running_node
NS="${BENCH_NAMESPACE:-replicator-bench}"
RELEASE=bench
SIZE_MB="${BENCH_SIZE_MB:-1024}"
TIMEOUT="${BENCH_TIMEOUT:-3600}"
CHUNK_ROWS="${BENCH_CHUNK_ROWS:-250000}"
OUT="${BENCH_OUT:-${ROOT}/bench/results/provision-node}"
EXAMPLE="${ROOT}/deploy/examples/mariadb-provisioned.yaml"
IFS=, read -r -a WANT <<<"${BENCH_METHODS:-mariabackup,mysqldump,volumesnapshot}"
METHODS=()
for m in "${WANT[@]}"; do
  case "${m}" in
  mariabackup | mysqldump) METHODS+=("${m}") ;;
  volumesnapshot) ;;
  *) die "unknown method ${m} (mariabackup, mysqldump, volumesnapshot)" ;;
  esac
done
[[ ",${BENCH_METHODS:-volumesnapshot}," == *,volumesnapshot,* ]] && METHODS+=(volumesnapshot)
[[ "${SIZE_MB}" =~ ^[0-9]+$ && "${SIZE_MB}" -gt 0 ]] || die "BENCH_SIZE_MB must be a positive number of MiB"

k() { "${KUBECTL}" -n "${NS}" "$@"; }
"${KUBECTL}" get --raw /readyz >/dev/null 2>&1 || die "the node's API server does not answer (make node-up)"
"${KUBECTL}" get storageclass csi-hostpath-sc >/dev/null 2>&1 || die "no StorageClass csi-hostpath-sc (node-up without NODE_CSI=0)"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
diagnose() {
  k get pods,pvc,volumesnapshots,replicatorbackups,replicatorrestores,jobs -o wide 2>&1 | tail -30
  k get events --sort-by=.lastTimestamp 2>&1 | tail -25
  k logs -l app.kubernetes.io/instance="${RELEASE}" --tail=30 2>&1
}
cleanup() {
  if [[ "${KEEP:-0}" != 1 ]]; then
    log "removing namespace ${NS} (KEEP=1 keeps it)"
    "${HELM}" uninstall -n "${NS}" "${RELEASE}" --wait --timeout 60s >/dev/null 2>&1
    "${KUBECTL}" delete namespace "${NS}" --wait=true --timeout=300s >/dev/null 2>&1
  fi
}
trap cleanup EXIT

t_all="$(now)"
log "namespace ${NS}, BENCH_SIZE_MB=${SIZE_MB}, methods ${METHODS[*]}"
"${KUBECTL}" delete namespace "${NS}" --wait=true --timeout=300s >/dev/null 2>&1
"${KUBECTL}" create namespace "${NS}" >/dev/null || die "cannot create namespace ${NS}"
for _ in $(seq 1 60); do k get serviceaccount default >/dev/null 2>&1 && break; sleep 0.5; done
# A clean bucket: backups of an earlier run (same cluster name) would be chosen.
rm -rf "${S3_ROOT:?}/${S3_BUCKET:?}" && mkdir -p "${S3_ROOT}/${S3_BUCKET}"

# ---------------------------------------------------------------- 1. operator, repository
log "helm install ${RELEASE} (our images)"
helm_install_operator "${RELEASE}" "${NS}" >/dev/null || { diagnose; die "helm install failed"; }
s3_credentials_yaml | k apply -f - >/dev/null || die "s3-credentials.yaml"
repo="$(repository_yaml)"
grep -q "endpoint: ${S3_ENDPOINT}" <<<"${repo}" || die "repository.yaml: no endpoint line to substitute"
k apply -f - <<<"${repo}" >/dev/null || die "repository.yaml"

# ---------------------------------------------------------------- 2. master
log "applying ${EXAMPLE#"${ROOT}"/}"
k apply -f "${EXAMPLE}" >/dev/null || die "apply ${EXAMPLE}"
k rollout status statefulset/db --timeout=300s >/dev/null || { diagnose; die "the master db-0 did not turn Ready"; }
PW="$(k get secret db-credentials -o jsonpath='{.data.password}' | base64 -d)"
sql() { local pod="$1"; shift; k exec "${pod}" -c mariadb -- mariadb -uroot -p"${PW}" "$@"; }
MARIADB_VERSION="$(sql db-0 -N -e 'SELECT VERSION()')" || die "cannot log in to db-0"

# ---------------------------------------------------------------- 3. data
log "filling bench.t on the master to ${SIZE_MB} MiB (chunks of ${CHUNK_ROWS} rows)"
sql db-0 -e "CREATE DATABASE bench;
  CREATE TABLE bench.t (id INT PRIMARY KEY, a BIGINT, b DECIMAL(14,2), c VARCHAR(200)) ENGINE=InnoDB;
  CREATE TABLE bench.marker (i INT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB" || die "cannot create bench.t"
t0="$(now)"
ibd_bytes() { k exec db-0 -c mariadb -- stat -c %s /var/lib/mysql/bench/t.ibd; }
done_rows=0
while :; do
  bytes="$(ibd_bytes)" || die "cannot stat bench/t.ibd"
  ((done_rows > 0)) && log "  ${done_rows} rows, bench/t.ibd $((bytes / 1048576)) MiB"
  ((bytes >= SIZE_MB * 1048576)) && break
  sql db-0 -D bench -e "INSERT INTO t SELECT seq + ${done_rows}, seq * 7919, (seq + ${done_rows}) / 7,
      CONCAT(MD5(seq + ${done_rows}), '-', SHA1(seq), '-', REPEAT(CHAR(65 + seq % 26), 60))
    FROM seq_1_to_${CHUNK_ROWS}" || die "INSERT into bench.t failed"
  done_rows=$((done_rows + CHUNK_ROWS))
done
GEN_S="$(since "${t0}")"
IBD_MIB=$((bytes / 1048576))
MASTER_ROWS="$(sql db-0 -N -e 'SELECT COUNT(*) FROM bench.t')" || die "count on db-0"
MASTER_SUM="$(sql db-0 -N -e 'CHECKSUM TABLE bench.t' | cut -f2)" || die "checksum on db-0"
MASTER_DATADIR_MIB="$(k exec db-0 -c mariadb -- du -sm /var/lib/mysql | cut -f1)"
log "bench.t: ${MASTER_ROWS} rows, ${IBD_MIB} MiB .ibd, CHECKSUM ${MASTER_SUM}; data directory ${MASTER_DATADIR_MIB} MiB (binlogs included); ${GEN_S}s"

# ---------------------------------------------------------------- 4-5. per method
declare -a ROWS_JSON=() ROWS_MD=()
FAILED=0
MARK=0

backup() { # backup METHOD: sets B_S, B_BYTES, B_WHAT, B_NOTE
  local method="$1" name="bench-${1}" phase="" i t0
  t0="$(now)"
  k apply -f - >/dev/null <<<"{\"apiVersion\":\"replicator.dev/v1alpha1\",\"kind\":\"ReplicatorBackup\",\"metadata\":{\"name\":\"${name}\"},\"spec\":{\"method\":\"${method}\",\"source\":{\"statefulSet\":\"db\",\"credentialsSecret\":{\"name\":\"db-credentials\"}}}}" || return 1
  for ((i = 0; i < TIMEOUT * 2; i++)); do
    phase="$(k get replicatorbackup "${name}" -o jsonpath='{.status.phase}')"
    [[ "${phase}" == Completed || "${phase}" == Failed ]] && break
    sleep 0.5
  done
  B_S="$(since "${t0}")"
  [[ "${phase}" == Completed ]] || { k get replicatorbackup "${name}" -o yaml | tail -30; diagnose; return 1; }
  [[ -n "$(k get replicatorbackup "${name}" -o jsonpath='{.status.position}')" ]] || { echo "${name}: no replication position"; return 1; }
  B_BYTES="$(k get replicatorbackup "${name}" -o jsonpath='{.status.size}')"
  B_WHAT="S3 object"
  B_NOTE=""
  if [[ "${method}" == volumesnapshot ]]; then
    # The stored data is the driver's copy of the volume (the object in S3 is
    # only the snapshot's record); the spare claim for the next ordinal is
    # made from it by the operator.
    local vs content handle lock
    vs="$(k get volumesnapshots --sort-by=.metadata.creationTimestamp -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | tail -1)"
    content="$(k get volumesnapshot "${vs}" -o jsonpath='{.status.boundVolumeSnapshotContentName}')"
    handle="$("${KUBECTL}" get volumesnapshotcontent "${content}" -o jsonpath='{.status.snapshotHandle}')"
    [[ -n "${handle}" && -d "${NODE_ROOT}/csi-hostpath/snapshots/${handle}" ]] ||
      { echo "no snapshot directory for VolumeSnapshot ${vs} (handle ${handle:-none})"; return 1; }
    B_BYTES="$(du -sb "${NODE_ROOT}/csi-hostpath/snapshots/${handle}" | cut -f1)"
    B_WHAT="CSI snapshot: copy of the volume"
    lock="$(k get events --field-selector involvedObject.name="${name}",reason=SnapshotTaken -o jsonpath='{.items[-1:].message}')"
    B_NOTE="${lock##*; }"
    local pvc="data-db-$(k get statefulset db -o jsonpath='{.spec.replicas}')" seeded=""
    for ((i = 0; i < 300; i++)); do
      seeded="$(k get pvc "${pvc}" -o jsonpath='{.metadata.annotations.replicator\.dev/seeded-from}' 2>/dev/null)"
      [[ -n "${seeded}" ]] && break
      sleep 1
    done
    [[ -n "${seeded}" ]] || { echo "the operator made no spare claim ${pvc} from the snapshot"; diagnose; return 1; }
  fi
  echo "${name}: Completed in ${B_S}s, ${B_BYTES} bytes (${B_WHAT}) ${B_NOTE}"
}

scale() { # scale REPLICAS: sets S_REPL, S_READY; fails if Ready came before replication
  local replicas="$1" pod="db-$(($1 - 1))" ready st t0 early=0
  S_REPL=-1 S_READY=-1
  t0="$(now)"
  k scale statefulset db --replicas "${replicas}" >/dev/null || return 1
  while awk -v a="${t0}" -v b="$(now)" -v t="${TIMEOUT}" 'BEGIN { exit !(b - a < t) }'; do
    ready="$(k get pod "${pod}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)"
    if [[ "${ready}" == True ]]; then
      S_READY="$(since "${t0}")"
      [[ "${S_REPL}" == -1 ]] && early=1
      break
    fi
    if [[ "${S_REPL}" == -1 ]]; then
      st="$(sql "${pod}" -e 'SHOW SLAVE STATUS\G' 2>/dev/null)" || st=""
      if grep -q 'Slave_IO_Running: Yes' <<<"${st}" && grep -q 'Slave_SQL_Running: Yes' <<<"${st}"; then
        S_REPL="$(since "${t0}")"
      fi
    fi
    sleep 1
  done
  echo "scale to ${replicas}: ${pod} replicating after ${S_REPL}s, Ready after ${S_READY}s"
  [[ "${S_READY}" != -1 ]] || { diagnose; k logs "${pod}" -c provision --tail=20; k logs "${pod}" -c mariadb --tail=20; return 1; }
  # Ready came first in the sample: check once more that replication runs now
  # (the threads may have started between two samples), and say so.
  if [[ "${early}" == 1 ]]; then
    st="$(sql "${pod}" -e 'SHOW SLAVE STATUS\G' 2>/dev/null)" || st=""
    grep -q 'Slave_IO_Running: Yes' <<<"${st}" && grep -q 'Slave_SQL_Running: Yes' <<<"${st}" ||
      { echo "${pod} was Ready before its replication threads ran"; return 1; }
    S_REPL="${S_READY}"
    echo "(replication threads first seen in the same sample as Ready)"
  fi
}

verify() { # verify POD: replicates from db-0.db, caught up, same data as the master; sets V_ROWS, V_SUM
  local pod="$1" st gtid r
  V_ROWS="" V_SUM=""
  st="$(sql "${pod}" -e 'SHOW SLAVE STATUS\G')" || return 1
  grep -E 'Master_Host|Slave_IO_Running|Slave_SQL_Running:|Gtid_IO_Pos|Using_Gtid|Seconds_Behind' <<<"${st}"
  grep -q 'Slave_IO_Running: Yes' <<<"${st}" && grep -q 'Slave_SQL_Running: Yes' <<<"${st}" || { echo "${pod}: replication threads not both running"; return 1; }
  grep -q 'Master_Host: db-0.db' <<<"${st}" || { echo "${pod} does not replicate from db-0.db"; return 1; }
  [[ "$(k get pod "${pod}" -o jsonpath='{.status.conditions[?(@.type=="replicator.dev/provisioned")].status}')" == True ]] ||
    { echo "${pod}: the readiness gate replicator.dev/provisioned is not True"; return 1; }
  gtid="$(sql db-0 -N -e 'SELECT @@gtid_binlog_pos')" || return 1
  r="$(sql "${pod}" -N -e "SELECT MASTER_GTID_WAIT('${gtid}', 300)")" || return 1
  [[ "${r}" == 0 ]] || { echo "${pod} did not reach the master's GTID ${gtid} within 300 s"; return 1; }
  V_ROWS="$(sql "${pod}" -N -e 'SELECT COUNT(*) FROM bench.t')" || return 1
  V_SUM="$(sql "${pod}" -N -e 'CHECKSUM TABLE bench.t' | cut -f2)" || return 1
  local mm sm
  mm="$(sql db-0 -N -e 'SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT(i, note))), 0) FROM bench.marker')" || return 1
  sm="$(sql "${pod}" -N -e 'SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT(i, note))), 0) FROM bench.marker')" || return 1
  echo "${pod}: GTID ${gtid} reached; bench.t ${V_ROWS} rows, CHECKSUM ${V_SUM} (master ${MASTER_ROWS}, ${MASTER_SUM}); bench.marker ${sm} (master ${mm})"
  [[ "${V_ROWS}" == "${MASTER_ROWS}" && "${V_SUM}" == "${MASTER_SUM}" ]] || { echo "${pod}: bench.t differs from the master's"; return 1; }
  [[ "${sm}" == "${mm}" ]] || { echo "${pod}: bench.marker differs from the master's (the rows written after the backups)"; return 1; }
}

# step FUNCTION ARGS...: runs it in this shell (the variables it sets stay), its
# output indented on stderr; STEP_TAIL: its last two lines.
step() {
  local f rc=0
  f="$(mktemp)"
  "$@" >"${f}" 2>&1 || rc=$?
  sed 's/^/    | /' "${f}" >&2
  STEP_TAIL="$(tail -2 "${f}" | tr '\n' ' ')"
  rm -f "${f}"
  return "${rc}"
}

# restore_seconds METHOD POD: the part of scale → Ready spent restoring (from the
# API's timestamps, whole seconds): mariabackup, the provision init container;
# mysqldump, the ReplicatorRestore (startedAt → finishedAt); volumesnapshot, the
# clone of the claim (csi-provisioner's Provisioning → ProvisioningSucceeded).
restore_seconds() {
  local method="$1" pod="$2" a="" b="" rr
  case "${method}" in
  mariabackup)
    a="$(k get pod "${pod}" -o jsonpath='{.status.initContainerStatuses[?(@.name=="provision")].state.terminated.startedAt}')"
    b="$(k get pod "${pod}" -o jsonpath='{.status.initContainerStatuses[?(@.name=="provision")].state.terminated.finishedAt}')" ;;
  mysqldump)
    rr="$(k get replicatorrestores --sort-by=.metadata.creationTimestamp -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | tail -1)"
    [[ -n "${rr}" ]] || return 0
    a="$(k get replicatorrestore "${rr}" -o jsonpath='{.status.startedAt}')"
    b="$(k get replicatorrestore "${rr}" -o jsonpath='{.status.finishedAt}')" ;;
  volumesnapshot)
    local ev
    ev="$(k get events --field-selector involvedObject.name="data-${pod}" -o json)" || return 0
    a="$(jq -r '[.items[] | select(.reason == "Provisioning") | (.eventTime // .firstTimestamp)] | min // empty' <<<"${ev}")"
    b="$(jq -r '[.items[] | select(.reason == "ProvisioningSucceeded") | (.eventTime // .lastTimestamp)] | max // empty' <<<"${ev}")" ;;
  esac
  [[ -n "${a}" && -n "${b}" ]] || return 0
  echo $(($(date -d "${b}" +%s) - $(date -d "${a}" +%s)))
}

for method in "${METHODS[@]}"; do
  B_S="" B_BYTES="" B_WHAT="" B_NOTE="" R_S="" S_REPL="" S_READY="" V_ROWS="" V_SUM="" ok=true err=""
  replicas=$(($(k get statefulset db -o jsonpath='{.spec.replicas}') + 1))
  pod="db-$((replicas - 1))"
  log "${method}: backup of the master"
  step backup "${method}" || { ok=false err="backup: ${STEP_TAIL}"; }
  if [[ "${ok}" == true ]]; then
    MARK=$((MARK + 1))
    sql db-0 -e "INSERT INTO bench.marker VALUES (${MARK}, 'after the ${method} backup')" || { ok=false err="marker row"; }
  fi
  if [[ "${ok}" == true ]]; then
    log "${method}: kubectl scale --replicas ${replicas}"
    step scale "${replicas}" || { ok=false err="scale: ${STEP_TAIL}"; }
    R_S="$(restore_seconds "${method}" "${pod}")"
  fi
  if [[ "${ok}" == true ]]; then
    log "${method}: checking ${pod} against the master"
    step verify "${pod}" || { ok=false err="check: ${STEP_TAIL}"; }
  fi
  [[ "${ok}" == true ]] || { FAILED=1; log "FAIL: ${method}: ${err}"; }
  mib="$(awk -v b="${B_BYTES:-0}" 'BEGIN { printf "%.1f", b / 1048576 }')"
  check="$([[ "${ok}" == true ]] && echo "PASS: ${V_ROWS} rows, CHECKSUM ${V_SUM} = master; replicating from db-0.db" || echo "FAIL: ${err}")"
  ROWS_MD+=("| ${method} | ${pod} | ${B_S:--} | ${mib} (${B_WHAT:-?}) | ${S_REPL:--} | ${S_READY:--} | ${R_S:--} | ${check} |")
  ROWS_JSON+=("$(jq -nc --arg method "${method}" --arg pod "${pod}" --arg b "${B_S}" --arg bytes "${B_BYTES}" --arg what "${B_WHAT}" \
    --arg note "${B_NOTE}" --arg restore "${R_S}" --arg repl "${S_REPL}" --arg ready "${S_READY}" --arg rows "${V_ROWS}" --arg sum "${V_SUM}" \
    --argjson ok "${ok}" --arg err "${err}" \
    '{method: $method, pod: $pod, backupSeconds: ($b | tonumber? // null), storedBytes: ($bytes | tonumber? // null), stored: $what,
      note: $note, restoreSeconds: ($restore | tonumber? // null), scaleToReplicatingSeconds: ($repl | tonumber? // null), scaleToReadySeconds: ($ready | tonumber? // null),
      slaveRows: ($rows | tonumber? // null), slaveChecksum: $sum, ok: $ok, error: $err}')")
  [[ "${ok}" == true ]] || break
done

# ---------------------------------------------------------------- report
TOTAL_S="$(since "${t_all}")"
COMMIT="$(git -C "${ROOT}" rev-parse --short HEAD)"
WHEN="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$(dirname "${OUT}")"
{
  echo "# Provisioning a slave on the test node: kubectl scale → Ready, per method"
  echo
  echo "${WHEN}, \`make node-bench-provision\` (hack/node/bench-provision.sh, checkout at ${COMMIT}), BENCH_SIZE_MB=${SIZE_MB}."
  echo "Images (built by make images from the commit of their time): ${OPERATOR_IMAGE}, ${AGENT_IMAGE}."
  echo "The node of hack/node (kubelet + containerd + runc, our CSI hostpath driver, versitygw), $(nproc) cores shared with"
  echo "other suites (load average ${LOAD} at the end); MariaDB ${MARIADB_VERSION}; deploy/examples/mariadb-provisioned.yaml unchanged."
  echo
  echo "Master: bench.t ${MASTER_ROWS} rows, .ibd ${IBD_MIB} MiB (data directory with binlogs ${MASTER_DATADIR_MIB} MiB),"
  echo "CHECKSUM TABLE ${MASTER_SUM}; filled in ${GEN_S} s."
  echo
  echo "| method | new pod | ReplicatorBackup apply → Completed (s) | stored MiB | scale → replicating (s) | scale → Ready (s) | of which restore (s) | check |"
  echo "|---|---|--:|--:|--:|--:|--:|---|"
  printf '%s\n' "${ROWS_MD[@]}"
  echo
  echo "scale → Ready: from \`kubectl scale\` to the new pod's Ready condition, sampled every second (each sample also runs"
  echo "SHOW SLAVE STATUS in the pod; Ready before both replication threads run fails the check). mariabackup: the provision"
  echo "init container restores the physical backup before mariadbd starts; mysqldump: the server starts empty and a"
  echo "ReplicatorRestore Job loads the dump; volumesnapshot: the operator's spare claim, cloned from the CSI snapshot when the"
  echo "pod is scheduled (our driver copies the directory), then the operator makes it a slave. Check: both threads Yes from"
  echo "db-0.db, gate replicator.dev/provisioned True, MASTER_GTID_WAIT to the master's gtid_binlog_pos, then bench.t's"
  echo "COUNT(*) and CHECKSUM TABLE and bench.marker (a row written after each backup) equal to the master's."
  echo "Of which restore: within scale → Ready, from the API's timestamps (whole seconds): the provision init container"
  echo "(mariabackup), the ReplicatorRestore startedAt → finishedAt (mysqldump), the claim's clone, csi-provisioner's"
  echo "Provisioning → ProvisioningSucceeded events (volumesnapshot). Stored: the backup's object in S3; for volumesnapshot the"
  echo "CSI driver's copy of the master's whole volume (binary logs and redo log included; the object in S3 is only its record)."
  [[ -n "$(printf '%s' "${ROWS_JSON[@]}" | jq -rs 'map(select(.note != "")) | .[0].note // empty')" ]] &&
    echo "volumesnapshot: $(printf '%s\n' "${ROWS_JSON[@]}" | jq -rs 'map(select(.note != "")) | .[0].note')."
  echo
  echo "Whole run ${TOTAL_S} s."
} >"${OUT}.md"
printf '%s\n' "${ROWS_JSON[@]}" | jq -s --arg when "${WHEN}" --arg commit "${COMMIT}" --arg operator "${OPERATOR_IMAGE}" --arg agent "${AGENT_IMAGE}" --argjson size "${SIZE_MB}" \
  --argjson rows "${MASTER_ROWS:-0}" --arg sum "${MASTER_SUM}" --argjson ibd "${IBD_MIB:-0}" --argjson datadir "${MASTER_DATADIR_MIB:-0}" \
  --arg gen "${GEN_S}" --arg total "${TOTAL_S}" --arg load "${LOAD}" --arg version "${MARIADB_VERSION}" --argjson cores "$(nproc)" \
  '{when: $when, commit: $commit, images: {operator: $operator, agent: $agent}, benchSizeMB: $size, mariadb: $version, cores: $cores, loadAverageAtEnd: $load,
    master: {rows: $rows, checksum: $sum, ibdMiB: $ibd, dataDirMiB: $datadir, fillSeconds: ($gen | tonumber)},
    methods: ., totalSeconds: ($total | tonumber)}' >"${OUT}.json"
echo
cat "${OUT}.md"
echo
log "wrote ${OUT#"${ROOT}"/}.md and .json"
exit "${FAILED}"
