#!/usr/bin/env bash
# The CSI driver on the node, end to end (make node-csi-smoke; the node must be
# up with CSI, the default). In a namespace of its own:
#   1. the kubelet registered hostpath.csi.replicator.dev (CSINode), and
#      csi-hostpath-sc is the default StorageClass;
#   2. a PVC of the default StorageClass is provisioned when its pod is
#      scheduled, and mounted in a pod running as uid 999 with fsGroup 999 (the
#      kubelet applies it): the pod writes a directory 0700 and a file 0640, as
#      MariaDB's data directory has them;
#   3. a VolumeSnapshot of it turns readyToUse;
#   4. a PVC restored from the snapshot, and a PVC cloned from the first PVC,
#      read by a root pod without fsGroup: the same content, owners and modes;
#   5. the driver's pod replaced while a pod uses a volume: the new driver is
#      registered again, the volume still readable and writable in the pod;
#   6. deleting the pods (unpublished by the new driver), PVCs and the
#      VolumeSnapshot deletes the PVs and the VolumeSnapshotContent, and the
#      driver's directories, records and mounts.
# Stops at the first failure with what it saw; KEEP=1 keeps the namespace.
set -uo pipefail
LOG_TAG=node-csi-smoke
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ENV_FILE="${ROOT}/.tools/node/images.env"
[[ -f "${ENV_FILE}" ]] || die "no ${ENV_FILE}: run make images"
CSI_IMAGE="$(sed -n 's/^CSI_IMAGE=//p' "${ENV_FILE}")"
[[ -n "${CSI_IMAGE}" ]] || die "no CSI_IMAGE in ${ENV_FILE}: make node-up (with CSI) builds it"
export KUBECONFIG="${KUBECONFIG:-${KUBECONFIG_ADMIN}}"
KUBECTL="$(command -v "${TOOLS_BIN}/kubectl" || command -v kubectl)"
NS="${CSI_SMOKE_NAMESPACE:-replicator-csi-smoke}"
DRIVER=hostpath.csi.replicator.dev
CSI_DATA="${NODE_ROOT}/csi-hostpath"
k() { "${KUBECTL}" -n "${NS}" "$@"; }
"${KUBECTL}" get --raw /readyz >/dev/null 2>&1 || die "the node's API server does not answer (make node-up)"

start=${SECONDS}
t0=${SECONDS}
step() { log "ok: $1 ($((SECONDS - t0))s)"; t0=${SECONDS}; }
fail() {
  log "FAIL: $1"
  k get pods,pvc,volumesnapshot -o wide 2>&1 | sed 's/^/  /' >&2
  "${KUBECTL}" -n kube-system logs daemonset/csi-hostpath -c driver --tail=15 2>&1 | sed 's/^/  driver| /' >&2
  exit 1
}
cleanup() { [[ "${KEEP:-0}" == 1 ]] || "${KUBECTL}" delete namespace "${NS}" --wait=false --ignore-not-found >/dev/null 2>&1; }
trap cleanup EXIT

# pod NAME PVC SCRIPT [SECURITY-CONTEXT]: a pod of the CSI image (Debian) that
# runs SCRIPT with the claim on /data, and its output once it succeeded.
pod() {
  local sc="${4:-}"
  [[ -n "${sc}" ]] || sc='{}'
  k apply -f - >/dev/null <<EOF || return 1
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  restartPolicy: Never
  securityContext: ${sc}
  containers:
  - name: c
    image: ${CSI_IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, '$3']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: $2}
EOF
  k wait "pod/$1" --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s >/dev/null ||
    { k describe pod "$1" | tail -12 >&2; return 1; }
  k logs "$1"
}
pvc() { # pvc NAME [DATASOURCE-YAML]
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
  ${2:+dataSource: $2}
EOF
}
volume_id() { k get pvc "$1" -o jsonpath='{.spec.volumeName}' | xargs -r "${KUBECTL}" get pv -o jsonpath='{.spec.csi.volumeHandle}'; }

# ---------------------------------------------------------------- 1
csinode="$("${KUBECTL}" get csinode "${NODE_NAME}" -o jsonpath='{.spec.drivers[*].name}')"
[[ "${csinode}" == *"${DRIVER}"* ]] || fail "CSINode ${NODE_NAME} lists [${csinode}], not ${DRIVER}"
default_sc="$("${KUBECTL}" get storageclass -o jsonpath='{range .items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")]}{.metadata.name}{end}')"
[[ "${default_sc}" == csi-hostpath-sc ]] || fail "the default StorageClass is [${default_sc}]"
topology="$("${KUBECTL}" get node "${NODE_NAME}" -o jsonpath="{.metadata.labels.topology\.${DRIVER//./\\.}/node}")"
[[ "${topology}" == "${NODE_NAME}" ]] || fail "the node has no topology label of ${DRIVER} (got [${topology}])"
"${KUBECTL}" delete namespace "${NS}" --ignore-not-found --wait=true >/dev/null
"${KUBECTL}" create namespace "${NS}" >/dev/null
step "${DRIVER} registered (CSINode, topology label ${topology}), default StorageClass ${default_sc}"

# ---------------------------------------------------------------- 2
pvc src
WRITE='set -e; mkdir -m 0700 /data/mysql; echo "row 42" > /data/mysql/t.ibd; chmod 0640 /data/mysql/t.ibd; cd /data; stat -c "%n %u:%g %a" . mysql mysql/t.ibd; cat mysql/t.ibd'
written="$(pod writer src "${WRITE}" '{runAsUser: 999, runAsGroup: 999, fsGroup: 999}')" || fail "writer pod"
echo "${written}" | sed 's/^/  writer| /' >&2
grep -qx 'mysql/t.ibd 999:999 640' <<<"${written}" || fail "the writer's file is not 999:999 640"
src_id="$(volume_id src)"
[[ -n "${src_id}" && -d "${CSI_DATA}/volumes/${src_id}" ]] || fail "no volume directory for PVC src (${src_id})"
step "PVC src provisioned (${src_id}), mounted in a pod as uid 999 with fsGroup 999, file written"

# ---------------------------------------------------------------- 3
k apply -f - >/dev/null <<EOF
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap}
spec:
  source: {persistentVolumeClaimName: src}
EOF
k wait volumesnapshot/snap --for=jsonpath='{.status.readyToUse}'=true --timeout=120s >/dev/null ||
  { k describe volumesnapshot snap | tail -12 >&2; fail "VolumeSnapshot snap not readyToUse"; }
content="$(k get volumesnapshot snap -o jsonpath='{.status.boundVolumeSnapshotContentName}')"
snap_id="$("${KUBECTL}" get volumesnapshotcontent "${content}" -o jsonpath='{.status.snapshotHandle}')"
[[ -n "${snap_id}" && -d "${CSI_DATA}/snapshots/${snap_id}" ]] || fail "no snapshot directory (${snap_id})"
step "VolumeSnapshot snap readyToUse (class $(k get volumesnapshot snap -o jsonpath='{.spec.volumeSnapshotClassName}'), restoreSize $(k get volumesnapshot snap -o jsonpath='{.status.restoreSize}'), ${snap_id})"

# ---------------------------------------------------------------- 4
pvc restored '{apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap}'
pvc clone '{kind: PersistentVolumeClaim, name: src}'
READ='set -e; cd /data; stat -c "%n %u:%g %a" . mysql mysql/t.ibd; cat mysql/t.ibd'
for c in restored clone; do
  got="$(pod "read-${c}" "${c}" "${READ}")" || fail "reader pod of ${c}"
  echo "${got}" | sed "s/^/  ${c}| /" >&2
  # The volume root may differ (the kubelet applied fsGroup 999 to src's), the rest not.
  [[ "$(grep -v '^\. ' <<<"${got}")" == "$(grep -v '^\. ' <<<"${written}")" ]] || fail "${c} differs from what the writer left"
done
restored_id="$(volume_id restored)"
clone_id="$(volume_id clone)"
step "PVC restored from the snapshot (${restored_id}) and PVC cloned from src (${clone_id}): same content, owners, modes"

# ---------------------------------------------------------------- 5
# The driver restarted (a new pod) while a volume is in use: the pod keeps its
# data, the kubelet registers the new driver, which unpublishes it later (step 6).
pvc held
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: holder}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: ${CSI_IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, 'echo before > /data/f; exec sleep 3600']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: held}
EOF
k wait pod/holder --for=condition=Ready --timeout=120s >/dev/null || fail "holder pod not Ready"
old_pod="$("${KUBECTL}" -n kube-system get pods -l app.kubernetes.io/name=csi-hostpath -o jsonpath='{.items[0].metadata.name}')"
"${KUBECTL}" -n kube-system delete pod "${old_pod}" --wait=true >/dev/null || fail "could not delete the driver's pod"
"${KUBECTL}" -n kube-system rollout status daemonset/csi-hostpath --timeout=120s >/dev/null || fail "the driver's DaemonSet did not come back"
for ((i = 0; i < 120; i++)); do
  [[ "$("${KUBECTL}" get csinode "${NODE_NAME}" -o jsonpath='{.spec.drivers[*].name}')" == *"${DRIVER}"* ]] && break
  sleep 0.25
done
[[ "$("${KUBECTL}" get csinode "${NODE_NAME}" -o jsonpath='{.spec.drivers[*].name}')" == *"${DRIVER}"* ]] || fail "the restarted driver is not registered"
got="$(k exec holder -- sh -c 'echo after >> /data/f && cat /data/f' | tr '\n' ' ')"
[[ "${got}" == "before after " ]] || fail "the holder's volume after the driver's restart: [${got}]"
held_id="$(volume_id held)"
step "driver pod ${old_pod} replaced: re-registered, the in-use volume ${held_id} still readable and writable"

# ---------------------------------------------------------------- 6
k delete pod --all --wait=true >/dev/null
k delete volumesnapshot snap --wait=true >/dev/null
k delete pvc --all --wait=true >/dev/null
for ((i = 0; i < 120; i++)); do
  left="$("${KUBECTL}" get pv -o name 2>/dev/null | grep -cE "${src_id}|${restored_id}|${clone_id}|${held_id}")"
  "${KUBECTL}" get volumesnapshotcontent "${content}" >/dev/null 2>&1 || [[ "${left}" != 0 ]] || break
  sleep 0.5
done
[[ "${left}" == 0 ]] || fail "PVs still there after their PVCs' deletion"
! "${KUBECTL}" get volumesnapshotcontent "${content}" >/dev/null 2>&1 || fail "VolumeSnapshotContent ${content} still there"
for d in "volumes/${src_id}" "volumes/${restored_id}" "volumes/${clone_id}" "volumes/${held_id}" "snapshots/${snap_id}"; do
  [[ ! -e "${CSI_DATA}/${d}" ]] || fail "${CSI_DATA}/${d} still there"
  ! grep -q "${d#*/}" "${CSI_DATA}/state.json" || fail "state.json still records ${d}"
done
! findmnt -rn -o TARGET,SOURCE | grep -qE "${src_id}|${restored_id}|${clone_id}|${held_id}" || fail "a mount of a deleted volume is left"
step "deleted: PVs, VolumeSnapshotContent, the driver's directories, records and mounts are gone"
log "PASS: CSI smoke in $((SECONDS - start))s"
