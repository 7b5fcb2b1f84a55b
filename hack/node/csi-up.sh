#!/usr/bin/env bash
# Deploys the node's CSI driver with snapshots (run by up.sh once the node is
# Ready, unless NODE_CSI=0; idempotent): the VolumeSnapshot CRDs
# (.tools/snapshot-crds, make snapshot-crds), the snapshot-controller (a
# Deployment), and our own driver replicator-csi-hostpath (hack/node/csi/driver)
# as a DaemonSet pod with csi-provisioner and csi-snapshotter beside it, all from
# the csi image (hack/node/images.sh csi), in kube-system; the CSIDriver
# hostpath.csi.replicator.dev (no attach: there is no ControllerPublish, so no
# external-attacher), the StorageClass csi-hostpath-sc (the default) and the
# VolumeSnapshotClass csi-hostpath-snapclass (the default for its driver).
#
# The driver runs as a pod, as CSI drivers do in users' clusters: the kubelet
# finds it through its plugin watcher (the driver serves the registration
# service itself on a socket in the kubelet's plugins_registry, so there is no
# node-driver-registrar), its bind mounts reach the pods through Bidirectional
# mount propagation, and the sidecars run under their ServiceAccounts' RBAC.
# Volumes and snapshots live in NODE_ROOT/csi-hostpath (removed by node-down);
# the kubelet's root NODE_ROOT/kubelet is a shared mount (up.sh), which
# Bidirectional propagation needs.
set -euo pipefail
LOG_TAG=node-up
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBECTL="$(command -v "${TOOLS_BIN}/kubectl" || command -v kubectl)"
kc() { "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" "$@"; }
CRDS="${ROOT}/.tools/snapshot-crds"
KUBELET_ROOT="${NODE_ROOT}/kubelet"
CSI_DATA="${NODE_ROOT}/csi-hostpath"
DRIVER=hostpath.csi.replicator.dev
SOCKET_DIR="${KUBELET_ROOT}/plugins/${DRIVER}"

[[ -f "${CRDS}/snapshot.storage.k8s.io_volumesnapshots.yaml" ]] || "${ROOT}/hack/snapshot-crds.sh"
# Content-keyed: builds (csi-tools.sh) and imports only when the driver or a
# sidecar changed. The DaemonSet names the keyed tag, so a new image rolls it.
"${NODE_DIR}/images.sh" csi
CSI_IMAGE="$(sed -n 's/^CSI_IMAGE=//p' "${ROOT}/.tools/node/images.env")"
[[ -n "${CSI_IMAGE}" ]] && has_image "${CSI_IMAGE}" || die "no csi image after hack/node/images.sh csi"
mkdir -p "${CSI_DATA}"

kc apply -f "${CRDS}" >/dev/null
kc wait --for=condition=Established --timeout=60s \
  crd/volumesnapshots.snapshot.storage.k8s.io crd/volumesnapshotcontents.snapshot.storage.k8s.io \
  crd/volumesnapshotclasses.snapshot.storage.k8s.io >/dev/null

# RBAC: upstream's (external-provisioner v5.3.0 deploy/kubernetes/rbac.yaml,
# external-snapshotter v8.7.0 deploy/kubernetes/*/rbac-*.yaml), without the
# leader-election roles (one replica each, leader election off) and the
# group-snapshot rules (that feature is off).
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: snapshot-controller, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: replicator-node:snapshot-controller}
rules:
- {apiGroups: [""], resources: [persistentvolumes], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [persistentvolumeclaims], verbs: [get, list, watch, update]}
- {apiGroups: [""], resources: [events], verbs: [list, watch, create, update, patch]}
- {apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshotclasses], verbs: [get, list, watch]}
- {apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshotcontents], verbs: [create, get, list, watch, update, delete, patch]}
- {apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshotcontents/status], verbs: [patch]}
- {apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshots], verbs: [create, get, list, watch, update, patch, delete]}
- {apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshots/status], verbs: [update, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: replicator-node:snapshot-controller}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "replicator-node:snapshot-controller"}
subjects: [{kind: ServiceAccount, name: snapshot-controller, namespace: kube-system}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: csi-hostpath, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: replicator-node:csi-hostpath}
rules:
# external-provisioner
- {apiGroups: [""], resources: [persistentvolumes], verbs: [get, list, watch, create, patch, delete]}
- {apiGroups: [""], resources: [persistentvolumeclaims], verbs: [get, list, watch, update]}
- {apiGroups: [storage.k8s.io], resources: [storageclasses], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [events], verbs: [list, watch, create, update, patch]}
- {apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshots], verbs: [get, list]}
- {apiGroups: [storage.k8s.io], resources: [csinodes], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [nodes], verbs: [get, list, watch]}
- {apiGroups: [storage.k8s.io], resources: [volumeattachments], verbs: [get, list, watch]}
# external-snapshotter (csi-snapshotter)
- {apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshotclasses], verbs: [get, list, watch]}
- {apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshotcontents], verbs: [get, list, watch, update, patch]}
- {apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshotcontents/status], verbs: [update, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: replicator-node:csi-hostpath}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "replicator-node:csi-hostpath"}
subjects: [{kind: ServiceAccount, name: csi-hostpath, namespace: kube-system}]
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: ${DRIVER}}
spec:
  attachRequired: false
  podInfoOnMount: true
  fsGroupPolicy: File
  volumeLifecycleModes: [Persistent]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: snapshot-controller, namespace: kube-system}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {app.kubernetes.io/name: snapshot-controller}}
  template:
    metadata: {labels: {app.kubernetes.io/name: snapshot-controller}}
    spec:
      serviceAccountName: snapshot-controller
      priorityClassName: system-cluster-critical
      containers:
      - name: snapshot-controller
        image: ${CSI_IMAGE}
        imagePullPolicy: Never
        # Group snapshots off: their CRDs are not installed, and with the gate on
        # the controller waits ~20 s for them before it starts at all.
        command: [snapshot-controller, --v=2, --leader-election=false, --feature-gates=CSIVolumeGroupSnapshot=false]
        securityContext: {runAsUser: 65532, runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: csi-hostpath, namespace: kube-system}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: csi-hostpath}}
  template:
    metadata: {labels: {app.kubernetes.io/name: csi-hostpath}}
    spec:
      serviceAccountName: csi-hostpath
      priorityClassName: system-node-critical
      containers:
      - name: driver
        image: ${CSI_IMAGE}
        imagePullPolicy: Never
        command: [replicator-csi-hostpath, --drivername=${DRIVER}, --endpoint=unix:///csi/csi.sock,
          --nodeid=\$(KUBE_NODE_NAME), --statedir=/csi-data-dir,
          --registration-dir=/registration, --kubelet-registration-path=${SOCKET_DIR}/csi.sock]
        env:
        - name: KUBE_NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        # Mounts need privilege; cp -a keeps owners (uid 999 for MariaDB's data).
        securityContext: {privileged: true}
        volumeMounts:
        - {name: socket-dir, mountPath: /csi}
        - {name: registration-dir, mountPath: /registration}
        # The kubelet asks for publishes below its root: the same path inside.
        - {name: pods-dir, mountPath: ${KUBELET_ROOT}/pods, mountPropagation: Bidirectional}
        - {name: csi-data-dir, mountPath: /csi-data-dir}
      - name: csi-provisioner
        image: ${CSI_IMAGE}
        imagePullPolicy: Never
        command: [csi-provisioner, --v=2, --csi-address=/csi/csi.sock, --feature-gates=Topology=true,
          --extra-create-metadata, --leader-election=false, --timeout=300s]
        volumeMounts: [{name: socket-dir, mountPath: /csi}]
      - name: csi-snapshotter
        image: ${CSI_IMAGE}
        imagePullPolicy: Never
        command: [csi-snapshotter, --v=2, --csi-address=/csi/csi.sock, --leader-election=false, --timeout=300s]
        volumeMounts: [{name: socket-dir, mountPath: /csi}]
      volumes:
      - {name: socket-dir, hostPath: {path: ${SOCKET_DIR}, type: DirectoryOrCreate}}
      - {name: pods-dir, hostPath: {path: ${KUBELET_ROOT}/pods, type: DirectoryOrCreate}}
      - {name: registration-dir, hostPath: {path: ${KUBELET_ROOT}/plugins_registry, type: DirectoryOrCreate}}
      - {name: csi-data-dir, hostPath: {path: ${CSI_DATA}, type: DirectoryOrCreate}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: csi-hostpath-sc
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: ${DRIVER}
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: csi-hostpath-snapclass
  annotations: {snapshot.storage.kubernetes.io/is-default-class: "true"}
driver: ${DRIVER}
deletionPolicy: Delete
EOF

# Ready = the snapshot controller runs, the plugin's pod runs and the kubelet
# registered the driver (CSINode lists it).
kc -n kube-system rollout status deployment/snapshot-controller --timeout=120s >/dev/null
kc -n kube-system rollout status daemonset/csi-hostpath --timeout=120s >/dev/null
for ((i = 0; i < 240; i++)); do
  [[ "$(kc get csinode "${NODE_NAME}" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null)" == *"${DRIVER}"* ]] && break
  sleep 0.25
done
[[ "$(kc get csinode "${NODE_NAME}" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null)" == *"${DRIVER}"* ]] ||
  { kc -n kube-system logs daemonset/csi-hostpath -c driver --tail=20 >&2 || true; die "the kubelet did not register ${DRIVER}"; }
log "CSI: ${DRIVER} registered; StorageClass csi-hostpath-sc (default), VolumeSnapshotClass csi-hostpath-snapclass"
