#!/usr/bin/env bash
# Smoke check of the test node (make node-smoke; the node must be up and the
# images imported): in a namespace of its own, it proves
#   1. a pod from the agent image runs `replicator --version`;
#   2. the MariaDB image as a StatefulSet pod (started as root, as in
#      deploy/examples/mariadb-cluster.yaml) turns Ready through its
#      readinessProbe (healthcheck.sh --connect --innodb_initialized), and its
#      data files belong to uid 999;
#   3. another pod resolves the StatefulSet pod's DNS name (CoreDNS) and logs
#      in to it over the pod network by that name;
#   4. `helm install` of charts/replicator-operator with our images: the
#      operator runs in a pod under the chart's RBAC and securityContext
#      (in-cluster config through the kubernetes Service) and turns Ready;
#   5. the CSI driver (hack/node/csi-up.sh): a PVC provisioned by the default
#      StorageClass and mounted with its fsGroup applied, a VolumeSnapshot of
#      it readyToUse, a PVC restored from it holding the data. SMOKE_CSI=0 skips it.
#   6. deploy/examples/mariadb-cluster.yaml, applied unchanged (its
#      `mariadb:10.11` is our stand-in by that name), its PVCs provisioned by
#      the CSI driver (hostPath PVs when node-up ran with NODE_CSI=0): three pods Ready by the example's
#      probes, both slaves replicating from db-0.db, a row written on the
#      master read on each slave. SMOKE_EXAMPLES=0 skips it.
# Prints PASS/FAIL per check; exits 1 if any failed. KEEP=1 keeps the namespace.
set -uo pipefail
LOG_TAG=node-smoke
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ENV_FILE="${ROOT}/.tools/node/images.env"
[[ -f "${ENV_FILE}" ]] || die "no ${ENV_FILE}: run make images"
# shellcheck disable=SC1090
source "${ENV_FILE}"
export KUBECONFIG="${KUBECONFIG:-${KUBECONFIG_ADMIN}}"
KUBECTL="$(command -v "${TOOLS_BIN}/kubectl" || command -v kubectl)"
HELM="$(command -v "${TOOLS_BIN}/helm" || command -v helm || true)"
NS="${SMOKE_NAMESPACE:-replicator-smoke}"
k() { "${KUBECTL}" -n "${NS}" "$@"; }
"${KUBECTL}" get --raw /readyz >/dev/null 2>&1 || die "the node's API server does not answer (make node-up)"

declare -a RESULTS=()
FAILED=0
pass() { RESULTS+=("PASS  $1 ($2s)"); log "PASS: $1"; }
fail() { RESULTS+=("FAIL  $1: $2"); FAILED=1; log "FAIL: $1: $2"; }
# check NAME CMD...: runs the check function CMD, timing it.
check() {
  local name="$1" t0=${SECONDS} out
  shift
  if out="$("$@" 2>&1)"; then
    sed 's/^/    | /' <<<"${out}" >&2
    pass "${name}" "$((SECONDS - t0))"
  else
    fail "${name}" "$(tail -5 <<<"${out}" | tr '\n' ' ')"
    return 1
  fi
}

PV_DIR="${NODE_ROOT}/smoke-pv"
cleanup() {
  if [[ "${KEEP:-0}" != 1 ]]; then
    [[ -n "${HELM}" ]] && "${HELM}" uninstall -n "${NS}" smoke-operator --wait --timeout 60s >/dev/null 2>&1
    "${KUBECTL}" delete namespace "${NS}" --wait=true --timeout=120s >/dev/null 2>&1
    "${KUBECTL}" delete pv -l replicator.dev/smoke=true --wait=true --timeout=60s >/dev/null 2>&1
    rm -rf "${PV_DIR}"
  fi
}
trap cleanup EXIT

"${KUBECTL}" delete namespace "${NS}" --wait=true --timeout=120s >/dev/null 2>&1
"${KUBECTL}" create namespace "${NS}" >/dev/null
for i in $(seq 1 60); do k get serviceaccount default >/dev/null 2>&1 && break; sleep 0.5; done

# ---------------------------------------------------------------- 1. agent image
agent_version() {
  k apply -f - <<EOF || return 1
apiVersion: v1
kind: Pod
metadata: {name: agent-version}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true}
  containers:
  - name: agent
    image: ${AGENT_IMAGE}
    imagePullPolicy: Never
    args: ["--version"]
EOF
  k wait pod/agent-version --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s || { k describe pod agent-version | tail -15; return 1; }
  local v
  v="$(k logs agent-version)"
  echo "replicator --version: ${v}"
  [[ -n "${v}" ]]
}
check "agent image: a pod runs replicator --version" agent_version

# ---------------------------------------------------------------- 2. MariaDB StatefulSet
MARIADB_PASSWORD="smoke-$(openssl rand -hex 6)"
mariadb_ready() {
  k apply -f - <<EOF || return 1
apiVersion: v1
kind: Secret
metadata: {name: db-credentials}
stringData: {password: "${MARIADB_PASSWORD}"}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app.kubernetes.io/name: db}
  ports: [{name: mysql, port: 3306, targetPort: mysql}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app.kubernetes.io/name: db}}
  template:
    metadata: {labels: {app.kubernetes.io/name: db}}
    spec:
      securityContext: {fsGroup: 999}
      containers:
      - name: mariadb
        image: ${MARIADB_IMAGE}
        imagePullPolicy: Never
        args: ["--server-id=1", "--log-bin=mysql-bin", "--binlog-format=ROW"]
        env:
        - name: MARIADB_ROOT_PASSWORD
          valueFrom: {secretKeyRef: {name: db-credentials, key: password}}
        ports: [{name: mysql, containerPort: 3306}]
        readinessProbe:
          exec: {command: ["healthcheck.sh", "--connect", "--innodb_initialized"]}
          initialDelaySeconds: 2
          periodSeconds: 2
        volumeMounts: [{name: data, mountPath: /var/lib/mysql}]
      volumes:
      - name: data
        emptyDir: {}
EOF
  k rollout status statefulset/db --timeout=180s || { k describe pod db-0 | tail -20; k logs db-0 --tail=30; return 1; }
  local owner
  owner="$(k exec db-0 -- stat -c '%u:%g' /var/lib/mysql/mysql)" || return 1
  [[ "${owner}" == 999:999 ]] || { echo "data files owned by ${owner}, not 999:999"; return 1; }
  k exec db-0 -- mariadb -uroot -p"${MARIADB_PASSWORD}" -N -e 'select version(), @@server_id, @@log_bin' || return 1
}
check "MariaDB image: StatefulSet pod Ready by its readinessProbe, data owned by 999" mariadb_ready

# ---------------------------------------------------------------- 3. DNS
pod_dns() {
  local ip name="db-0.db.${NS}.svc.cluster.local"
  ip="$(k get pod db-0 -o jsonpath='{.status.podIP}')"
  k run dns-client --restart=Never --image="${MARIADB_IMAGE}" --image-pull-policy=Never \
    --env="MARIADB_PWD=${MARIADB_PASSWORD}" --command -- bash -c \
    "getent hosts ${name}; getent hosts db-0.db; mariadb -h db-0.db -uroot -p\"\${MARIADB_PWD}\" -N -e 'select @@hostname'" >/dev/null || return 1
  k wait pod/dns-client --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s || { k logs dns-client; return 1; }
  local out
  out="$(k logs dns-client)"
  echo "${out}"
  grep -q "^${ip} *${name}" <<<"${out}" || { echo "${name} did not resolve to ${ip}"; return 1; }
  grep -qx 'db-0' <<<"${out}" || { echo "no login to db-0.db by name"; return 1; }
}
check "DNS: another pod resolves db-0.db.${NS}.svc.cluster.local and logs in by name" pod_dns

# ---------------------------------------------------------------- 4. helm install
helm_install() {
  [[ -n "${HELM}" ]] || { echo "helm not found (make helm)"; return 1; }
  local op_repo="${OPERATOR_IMAGE%:*}" op_tag="${OPERATOR_IMAGE##*:}"
  local ag_repo="${AGENT_IMAGE%:*}" ag_tag="${AGENT_IMAGE##*:}"
  "${HELM}" install smoke-operator "${ROOT}/charts/replicator-operator" -n "${NS}" \
    --set image.repository="${op_repo}" --set image.tag="${op_tag}" --set image.pullPolicy=Never \
    --set agentImage.repository="${ag_repo}" --set agentImage.tag="${ag_tag}" \
    --wait --timeout 180s || { k get pods; k describe pods -l app.kubernetes.io/instance=smoke-operator | tail -20; k logs deploy/smoke-operator-replicator-operator --tail=30; return 1; }
  k get pods -l app.kubernetes.io/instance=smoke-operator -o wide
  local pod
  pod="$(k get pods -l app.kubernetes.io/instance=smoke-operator -o jsonpath='{.items[0].metadata.name}')"
  echo "operator runs as uid $(k exec "${pod}" -- id -u)"
  k logs "${pod}" --tail=5
}
check "helm install charts/replicator-operator with our images: operator pod Ready" helm_install

# ---------------------------------------------------------------- 5. CSI
# A PVC of the default StorageClass (csi-hostpath-sc) dynamically provisioned
# and mounted in a pod that runs as 1000 with fsGroup 2000 (the kubelet applies
# the fsGroup: CSIDriver fsGroupPolicy File); a VolumeSnapshot of it turns
# readyToUse; a PVC restored from it (dataSource) holds the file.
csi_pod() { # csi_pod NAME PVC SCRIPT
  k apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 2000, runAsNonRoot: true}
  containers:
  - name: c
    image: ${MARIADB_IMAGE}
    imagePullPolicy: Never
    command: [bash, -c, '$3']
    volumeMounts: [{name: v, mountPath: /data}]
  volumes:
  - name: v
    persistentVolumeClaim: {claimName: $2}
EOF
}
csi_volumes() {
  local sc out restored token="smoke-$(openssl rand -hex 4)"
  sc="$("${KUBECTL}" get storageclass -o jsonpath='{range .items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")]}{.metadata.name}{end}')"
  echo "default StorageClass: ${sc:-none}"
  [[ -n "${sc}" ]] || return 1
  k apply -f - <<EOF || return 1
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: csi-src}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
EOF
  csi_pod csi-writer csi-src "set -e; id; stat -c \"%u:%g %A\" /data; echo ${token} > /data/f; ls -ln /data" || return 1
  k wait pod/csi-writer --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s || { k describe pod csi-writer | tail -15; k get pvc; return 1; }
  out="$(k logs csi-writer)"
  echo "${out}"
  k get pvc csi-src -o jsonpath='{.metadata.name}: {.spec.storageClassName} {.spec.volumeName} {.status.phase}{"\n"}'
  # The volume's root: group 2000 (fsGroup) with setgid; the file: 1000:2000.
  grep -q '^[0-9]*:2000 drwxrws' <<<"${out}" || { echo "the volume's root is not group 2000 with setgid"; return 1; }
  grep -Eq '^-.* 1000 +2000 .* f$' <<<"${out}" || { echo "the file is not 1000:2000"; return 1; }
  k apply -f - <<EOF || return 1
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: csi-snap}
spec:
  source: {persistentVolumeClaimName: csi-src}
EOF
  k wait volumesnapshot/csi-snap --for=jsonpath='{.status.readyToUse}'=true --timeout=120s ||
    { k describe volumesnapshot csi-snap | tail -15; return 1; }
  k get volumesnapshot csi-snap -o jsonpath='snapshot {.metadata.name}: class {.spec.volumeSnapshotClassName}, content {.status.boundVolumeSnapshotContentName}, readyToUse {.status.readyToUse}, restoreSize {.status.restoreSize}{"\n"}'
  k apply -f - <<EOF || return 1
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: csi-restored}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: csi-snap}
EOF
  csi_pod csi-reader csi-restored 'set -e; cat /data/f; ls -ln /data' || return 1
  k wait pod/csi-reader --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s || { k describe pod csi-reader | tail -15; k get pvc; return 1; }
  restored="$(k logs csi-reader)"
  echo "restored volume: ${restored}"
  [[ "$(head -1 <<<"${restored}")" == "${token}" ]] || { echo "the restored volume does not hold ${token}"; return 1; }
  k delete pod csi-writer csi-reader --wait=false >/dev/null
}
if [[ "${SMOKE_CSI:-${NODE_CSI:-1}}" == 1 ]]; then
  check "CSI: PVC provisioned by the default StorageClass, fsGroup applied, VolumeSnapshot readyToUse, restored PVC holds the data" csi_volumes
fi

# ---------------------------------------------------------------- 6. example
example_cluster() {
  local i pw status n
  # The smoke's own StatefulSet "db" goes first: the example uses the same names.
  k delete statefulset db --wait=true --ignore-not-found >/dev/null
  k delete pod db-0 --wait=true --ignore-not-found >/dev/null
  k delete secret db-credentials --ignore-not-found >/dev/null
  # Without a default StorageClass (NODE_CSI=0), hostPath PVs bound to the claims.
  for i in 0 1 2; do
    [[ -n "$("${KUBECTL}" get storageclass -o name 2>/dev/null)" ]] && break
    mkdir -p "${PV_DIR}/${NS}-${i}"
    "${KUBECTL}" apply -f - <<EOF || return 1
apiVersion: v1
kind: PersistentVolume
metadata: {name: smoke-${NS}-${i}, labels: {replicator.dev/smoke: "true"}}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  claimRef: {namespace: ${NS}, name: data-db-${i}}
  hostPath: {path: ${PV_DIR}/${NS}-${i}, type: Directory}
EOF
  done
  k apply -f "${ROOT}/deploy/examples/mariadb-cluster.yaml" || return 1
  k rollout status statefulset/db --timeout=300s || { k get pods,pvc; k describe pod db-0 db-1 db-2 | tail -30; return 1; }
  pw="$(k get secret db-credentials -o jsonpath='{.data.password}' | base64 -d)"
  k exec db-0 -c mariadb -- mariadb -uroot -p"${pw}" -e \
    'CREATE DATABASE IF NOT EXISTS smoke; CREATE TABLE IF NOT EXISTS smoke.t (i INT PRIMARY KEY); REPLACE INTO smoke.t VALUES (42)' || return 1
  for i in 1 2; do
    status="$(k exec "db-${i}" -c mariadb -- mariadb -uroot -p"${pw}" -e 'SHOW SLAVE STATUS\G')" || return 1
    grep -E 'Master_Host|Slave_IO_Running|Slave_SQL_Running:' <<<"${status}"
    if ! grep -q 'Master_Host: db-0.db$' <<<"${status}" || ! grep -q 'Slave_IO_Running: Yes' <<<"${status}" ||
      ! grep -q 'Slave_SQL_Running: Yes' <<<"${status}"; then
      echo "db-${i} does not replicate from db-0.db"
      return 1
    fi
    n=0
    for _ in $(seq 1 20); do
      n="$(k exec "db-${i}" -c mariadb -- mariadb -uroot -p"${pw}" -N -e 'SELECT count(*) FROM smoke.t WHERE i = 42' 2>/dev/null)"
      [[ "${n}" == 1 ]] && break
      sleep 0.5
    done
    [[ "${n}" == 1 ]] || { echo "the master's row did not reach db-${i}"; return 1; }
    echo "db-${i}: replicating from db-0.db, has the master's row"
  done
}
if [[ "${SMOKE_EXAMPLES:-1}" == 1 ]]; then
  check "deploy/examples/mariadb-cluster.yaml unchanged: 3 pods Ready, slaves replicate from db-0.db" example_cluster
fi

echo
echo "node smoke check (namespace ${NS}):"
printf '  %s\n' "${RESULTS[@]}"
exit "${FAILED}"
