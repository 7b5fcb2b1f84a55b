#!/usr/bin/env bash
# Brings up a single-node Kubernetes cluster on this machine from real parts
# (make node-up): etcd, kube-apiserver (on the node address, its `kubernetes`
# Service endpoints reconciled, so in-cluster config works from pods),
# kube-controller-manager, kube-scheduler, kube-proxy (iptables), a kubelet on
# containerd + runc + the CNI bridge plugin, and CoreDNS (cluster.local at
# DNS_SERVICE_IP). Idempotent: what already runs is left running.
# Prints the KUBECONFIG to use and the bring-up time. `make node-down` undoes it.
#
# Needs: make node-tools (packages and binaries), make kube-tools (etcd,
# kube-apiserver, kube-controller-manager), make images (at least the pause
# and CoreDNS images; node-up builds those two itself when missing).
set -euo pipefail
LOG_TAG=node-up
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

start=${SECONDS}
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet coredns; do
  [[ -x "${TOOLS_BIN}/${b}" ]] || die "missing ${TOOLS_BIN}/${b}: run make kube-tools node-tools"
done
KUBECTL="$(command -v "${TOOLS_BIN}/kubectl" || command -v kubectl || true)"
[[ -n "${KUBECTL}" ]] || die "kubectl not found on PATH"
for t in containerd runc ctr iptables conntrack openssl ip; do
  command -v "${t}" >/dev/null 2>&1 || die "missing ${t}: run make node-tools"
done

mkdir -p "${NODE_ROOT}" "${RUN_DIR}"
RUN="${NODE_ROOT}/run"  # pid files
LOGS="${NODE_ROOT}/logs"
PKI="${NODE_ROOT}/pki"
HOST_STATE="${NODE_ROOT}/host-state"
mkdir -p "${RUN}" "${LOGS}" "${PKI}"
kc() { "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" "$@"; }
# write FILE: stdin to FILE, only if that changes it (kube-proxy exits when its
# configuration file is written, and a second node-up must leave it running).
write() {
  local tmp
  tmp="$(mktemp "$1.XXXXXX")"
  cat >"${tmp}"
  if cmp -s "${tmp}" "$1"; then rm -f "${tmp}"; else mv -f "${tmp}" "$1"; fi
}

# ---------------------------------------------------------------- host state
# Recorded once, before this node changes anything, for node-down to restore.
SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
HOST_DIRS=(/var/lib/kubelet /var/lib/cni /var/log/pods /var/log/containers /run/netns
  /etc/cni /opt/cni /sys/fs/cgroup/cpu/kubepods)
if [[ ! -f "${HOST_STATE}" ]]; then
  {
    for s in "${SYSCTLS[@]}"; do
      v="$(sysctl -n "${s}" 2>/dev/null)" && printf 'sysctl %s=%s\n' "${s}" "${v}"
    done
    for d in "${HOST_DIRS[@]}"; do
      [[ -e "${d}" ]] && printf 'dir %s\n' "${d}"
    done
    has_lo_alias && echo "lo-alias present"
    if command -v nft >/dev/null 2>&1; then
      nft list tables 2>/dev/null | awk '$1 == "table" {print "nft-table " $2 " " $3}'
    fi
    for ipt in iptables-nft iptables-legacy ip6tables-nft ip6tables-legacy; do
      command -v "${ipt}-save" >/dev/null 2>&1 || continue
      "${ipt}-save" 2>/dev/null | awk -v t="${ipt}" '/^\*/ {table = substr($1, 2)} /^:/ {print "chain " t " " table " " substr($1, 2)}'
    done
  } >"${HOST_STATE}.tmp"
  mv "${HOST_STATE}.tmp" "${HOST_STATE}"
  log "recorded the host's state in ${HOST_STATE}"
fi

# ---------------------------------------------------------------- network
if ! has_lo_alias; then
  ip addr add "${NODE_IP}/32" dev lo
fi
mkdir -p "${RUN_DIR}/net.d"
write "${RUN_DIR}/net.d/10-replicator-node.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "replicator-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${NODE_BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "${POD_CIDR}", "gateway": "${POD_GATEWAY}"}]],
        "dataDir": "${NODE_ROOT}/cni-ipam",
        "routes": [{"dst": "${SERVICE_CIDR}"}, {"dst": "${NODE_IP}/32"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# ---------------------------------------------------------------- PKI
# cert NAME CN [O] [SANS]: a key and a certificate signed by the node's CA.
cert() {
  local name="$1" cn="$2" org="${3:-}" sans="${4:-}"
  [[ -f "${PKI}/${name}.crt" ]] && return 0
  openssl req -newkey rsa:2048 -nodes -keyout "${PKI}/${name}.key" -out "${PKI}/${name}.csr" \
    -subj "/CN=${cn}${org:+/O=${org}}" 2>/dev/null
  {
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "${sans}" ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=${sans}"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"${PKI}/${name}.ext"
  openssl x509 -req -in "${PKI}/${name}.csr" -CA "${PKI}/ca.crt" -CAkey "${PKI}/ca.key" -CAcreateserial \
    -out "${PKI}/${name}.crt" -days 365 -extfile "${PKI}/${name}.ext" 2>/dev/null
  rm -f "${PKI}/${name}.csr" "${PKI}/${name}.ext"
}
# kubeconfig NAME CERT: a kubeconfig for the API server with that client certificate.
kubeconfig() {
  write "${NODE_ROOT}/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ${NODE_NAME}
  cluster:
    server: https://${NODE_IP}:${API_PORT}
    certificate-authority: ${PKI}/ca.crt
users:
- name: $1
  user:
    client-certificate: ${PKI}/$2.crt
    client-key: ${PKI}/$2.key
contexts:
- name: $1@${NODE_NAME}
  context: {cluster: ${NODE_NAME}, user: $1}
current-context: $1@${NODE_NAME}
EOF
}
if [[ ! -f "${PKI}/ca.crt" ]]; then
  log "creating the node's CA and certificates"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "${PKI}/ca.key" -out "${PKI}/ca.crt" -days 365 \
    -subj "/CN=${NODE_NAME}-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
  openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
fi
KUBERNETES_SERVICE_IP="$(awk -F'[./]' '{print $1 "." $2 "." $3 "." $4 + 1}' <<<"${SERVICE_CIDR}")"
cert apiserver kube-apiserver "" \
  "IP:${NODE_IP},IP:${KUBERNETES_SERVICE_IP},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
cert admin admin system:masters
cert kubelet "system:node:${NODE_NAME}" system:nodes "IP:${NODE_IP},DNS:${NODE_NAME}"
cert kube-proxy system:kube-proxy
cert kube-controller-manager system:kube-controller-manager
cert kube-scheduler system:kube-scheduler
kubeconfig admin admin
kubeconfig kubelet kubelet
kubeconfig kube-proxy kube-proxy
kubeconfig kube-controller-manager kube-controller-manager
kubeconfig kube-scheduler kube-scheduler

# ---------------------------------------------------------------- processes
# run NAME CMD...: starts CMD in its own session (logs in LOGS/NAME.log) unless it runs.
run() {
  local name="$1"
  shift
  if pid_alive "${RUN}/${name}.pid"; then
    return 0
  fi
  log "starting ${name}"
  setsid "$@" >>"${LOGS}/${name}.log" 2>&1 </dev/null &
  echo $! >"${RUN}/${name}.pid"
}
# wait_until NAME SECONDS PIDNAME CMD...: polls CMD; fails early if PIDNAME died.
wait_until() {
  local name="$1" secs="$2" pidname="$3" i
  shift 3
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    if [[ -n "${pidname}" ]] && ! pid_alive "${RUN}/${pidname}.pid"; then
      tail -25 "${LOGS}/${pidname}.log" >&2 || true
      die "${pidname} exited (log: ${LOGS}/${pidname}.log)"
    fi
    sleep 0.25
  done
  [[ -z "${pidname}" ]] || tail -25 "${LOGS}/${pidname}.log" >&2 || true
  die "timed out after ${secs}s waiting for ${name}"
}

ETCD_URL="http://127.0.0.1:${ETCD_CLIENT_PORT}"
run etcd "${TOOLS_BIN}/etcd" --name="${NODE_NAME}" --data-dir="${NODE_ROOT}/etcd" \
  --listen-client-urls="${ETCD_URL}" --advertise-client-urls="${ETCD_URL}" \
  --listen-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-advertise-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster="${NODE_NAME}=http://127.0.0.1:${ETCD_PEER_PORT}" \
  --listen-metrics-urls="" --unsafe-no-fsync=true --log-level=warn
wait_until etcd 30 etcd curl -fsS --max-time 2 "${ETCD_URL}/health"

run kube-apiserver "${TOOLS_BIN}/kube-apiserver" \
  --etcd-servers="${ETCD_URL}" \
  --bind-address="${NODE_IP}" --advertise-address="${NODE_IP}" --secure-port="${API_PORT}" \
  --cert-dir="${NODE_ROOT}/apiserver" \
  --tls-cert-file="${PKI}/apiserver.crt" --tls-private-key-file="${PKI}/apiserver.key" \
  --client-ca-file="${PKI}/ca.crt" \
  --kubelet-client-certificate="${PKI}/apiserver-kubelet-client.crt" \
  --kubelet-client-key="${PKI}/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="${PKI}/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --service-cluster-ip-range="${SERVICE_CIDR}" --allow-privileged=true \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file="${PKI}/sa.pub" --service-account-signing-key-file="${PKI}/sa.key" \
  --profiling=false
wait_until "kube-apiserver /readyz" 90 kube-apiserver kc get --raw /readyz
log "kube-apiserver ready after $((SECONDS - start))s"

run kube-controller-manager "${TOOLS_BIN}/kube-controller-manager" \
  --kubeconfig="${NODE_ROOT}/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="${NODE_ROOT}/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="${NODE_ROOT}/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
  --controllers='*,-node-ipam-controller,-cloud-node-lifecycle-controller,-node-route-controller,-service-lb-controller' \
  --use-service-account-credentials=true \
  --service-account-private-key-file="${PKI}/sa.key" --root-ca-file="${PKI}/ca.crt" \
  --cluster-signing-cert-file="${PKI}/ca.crt" --cluster-signing-key-file="${PKI}/ca.key"
run kube-scheduler "${TOOLS_BIN}/kube-scheduler" \
  --kubeconfig="${NODE_ROOT}/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="${NODE_ROOT}/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="${NODE_ROOT}/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false

# containerd, private: its own socket, root, state and CNI conf dir.
containerd_start
if ! has_image "${PAUSE_IMAGE}" || ! has_image "${IMAGE_PREFIX}/coredns:local"; then
  log "the pause or CoreDNS image is missing: building them (hack/node/images.sh pause coredns)"
  "${NODE_DIR}/images.sh" pause coredns
fi

write "${NODE_ROOT}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: ${NODE_ROOT}/kube-proxy.kubeconfig}
hostnameOverride: ${NODE_NAME}
bindAddress: ${NODE_IP}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
mode: iptables
clusterCIDR: ${POD_CIDR}
nodePortAddresses: ["${NODE_IP}/32"]
iptables: {masqueradeAll: false, syncPeriod: 10s, minSyncPeriod: 0s}
# 0: leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
run kube-proxy "${TOOLS_BIN}/kube-proxy" --config="${NODE_ROOT}/kube-proxy.yaml"

write "${NODE_ROOT}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: ${PKI}/kubelet.crt
tlsPrivateKeyFile: ${PKI}/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${PKI}/ca.crt}
authorization: {mode: Webhook}
# cgroup v1 (hybrid) without systemd as PID 1.
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://${CONTAINERD_SOCK}
failSwapOn: false
podLogsDir: ${NODE_ROOT}/pod-logs
clusterDomain: cluster.local
clusterDNS: ["${DNS_SERVICE_IP}"]
resolvConf: /etc/resolv.conf
makeIPTablesUtilChains: false
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
# Images are built locally and cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
EOF
# The kubelet's root is a shared mount (a bind of itself): the CSI plugin's pod
# mounts volumes below it with Bidirectional propagation, which runc allows
# only on a shared mount (/ is private here). node-down unmounts it.
mkdir -p "${NODE_ROOT}/kubelet"
if ! mountpoint -q "${NODE_ROOT}/kubelet"; then
  mount --bind "${NODE_ROOT}/kubelet" "${NODE_ROOT}/kubelet"
fi
mount --make-rshared "${NODE_ROOT}/kubelet"
run kubelet "${TOOLS_BIN}/kubelet" --config="${NODE_ROOT}/kubelet.yaml" \
  --kubeconfig="${NODE_ROOT}/kubelet.kubeconfig" --root-dir="${NODE_ROOT}/kubelet" \
  --hostname-override="${NODE_NAME}" --node-ip="${NODE_IP}" --v=1

# Their own health first: after a restart the Node object still says Ready.
wait_until "kubelet /healthz" 60 kubelet curl -fsS --max-time 2 http://127.0.0.1:10248/healthz
wait_until "kube-proxy /healthz" 60 kube-proxy curl -fsS --max-time 2 http://127.0.0.1:10256/healthz
node_ready() { [[ "$(kc get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]; }
wait_until "node ${NODE_NAME} Ready" 120 kubelet node_ready
log "node ${NODE_NAME} Ready after $((SECONDS - start))s"

# The kubernetes Service must point at the node address (in-cluster config).
kubernetes_endpoint() { [[ "$(kc get endpoints kubernetes -o jsonpath='{.subsets[0].addresses[0].ip}')" == "${NODE_IP}" ]]; }
wait_until "endpoints of Service kubernetes = ${NODE_IP}" 60 kube-apiserver kubernetes_endpoint

# ---------------------------------------------------------------- CoreDNS
# On the host network, bound to the node address: replies to pods are routed
# (and un-NATed) by the host, whatever the bridge's netfilter setting.
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
- {kind: ServiceAccount, name: coredns, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  # Cluster names only: nothing is forwarded off this machine.
  Corefile: |
    .:53 {
        bind ${NODE_IP}
        errors
        health 127.0.0.1:18080
        ready 127.0.0.1:18181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 5
        }
        cache 5
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      hostNetwork: true
      dnsPolicy: Default
      priorityClassName: system-cluster-critical
      containers:
      - name: coredns
        image: ${IMAGE_PREFIX}/coredns:local
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        readinessProbe:
          httpGet: {host: 127.0.0.1, path: /ready, port: 18181}
          periodSeconds: 2
        livenessProbe:
          httpGet: {host: 127.0.0.1, path: /health, port: 18080}
          periodSeconds: 10
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
          readOnlyRootFilesystem: true
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
      volumes:
      - name: config
        configMap: {name: coredns}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: ${DNS_SERVICE_IP}
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
EOF
wait_until "CoreDNS Ready" 120 kubelet kc -n kube-system rollout status deployment/coredns --timeout=2s
# The default ServiceAccount exists before anyone creates pods in default.
wait_until "ServiceAccount default/default" 30 kube-controller-manager kc -n default get serviceaccount default

# ---------------------------------------------------------------- CSI
# Our CSI hostpath driver (hack/node/csi/driver), csi-provisioner, csi-snapshotter
# and the snapshot controller: the default StorageClass and VolumeSnapshotClass,
# so PVCs are provisioned dynamically and VolumeSnapshots work. NODE_CSI=0 skips
# it (then the node has no StorageClass: PVs by hand).
if [[ "${NODE_CSI:-1}" != 0 ]]; then
  t0=${SECONDS}
  "${NODE_DIR}/csi-up.sh"
  log "CSI ready after $((SECONDS - t0))s"
fi

# ---------------------------------------------------------------- S3
# versitygw (make tools) on the node address, so pods reach it: S3_ENDPOINT,
# a bucket S3_BUCKET, credentials in NODE_ROOT/s3.env. NODE_S3=0 skips it.
if [[ "${NODE_S3:-1}" == 1 ]]; then
  [[ -x "${TOOLS_BIN}/versitygw" ]] || make -C "${ROOT}" "${ROOT}/.tools/bin/versitygw" >&2 || die "no ${TOOLS_BIN}/versitygw (make tools)"
  mkdir -p "${S3_ROOT}/${S3_BUCKET}"
  if [[ ! -f "${S3_ENV}" ]]; then
    printf 'S3_ENDPOINT=%s\nS3_BUCKET=%s\nAWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' \
      "${S3_ENDPOINT}" "${S3_BUCKET}" "node-$(openssl rand -hex 4)" "$(openssl rand -hex 16)" >"${S3_ENV}"
    chmod 600 "${S3_ENV}"
  fi
  # Credentials through the environment, not argv (they would show in ps).
  # shellcheck disable=SC1090
  s3_key="$(source "${S3_ENV}" && echo "${AWS_ACCESS_KEY_ID}")"
  # shellcheck disable=SC1090
  s3_secret="$(source "${S3_ENV}" && echo "${AWS_SECRET_ACCESS_KEY}")"
  ROOT_ACCESS_KEY_ID="${s3_key}" ROOT_SECRET_ACCESS_KEY="${s3_secret}" \
    run versitygw "${TOOLS_BIN}/versitygw" --port "${NODE_IP}:${S3_PORT}" --quiet posix "${S3_ROOT}"
  s3_listens() { curl -s -o /dev/null --max-time 2 "${S3_ENDPOINT}/"; }
  wait_until "versitygw on ${S3_ENDPOINT}" 30 versitygw s3_listens
  cp "${S3_ENV}" "${ROOT}/.tools/node/s3.env" 2>/dev/null || { mkdir -p "${ROOT}/.tools/node" && cp "${S3_ENV}" "${ROOT}/.tools/node/s3.env"; }
fi

cp "${KUBECONFIG_ADMIN}" "${ROOT}/.tools/node/kubeconfig" 2>/dev/null || { mkdir -p "${ROOT}/.tools/node" && cp "${KUBECONFIG_ADMIN}" "${ROOT}/.tools/node/kubeconfig"; }
log "node up in $((SECONDS - start))s ($("${TOOLS_BIN}/kubelet" --version), containerd $(containerd --version | awk '{print $3}'))"
echo "export KUBECONFIG=${KUBECONFIG_ADMIN}"
