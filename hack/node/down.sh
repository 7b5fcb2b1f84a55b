#!/usr/bin/env bash
# Tears the test node down and leaves the host as node-up found it
# (make node-down): pods stopped (their network namespaces, veths and mounts
# gone), every node process stopped, the sysctls node-up recorded restored,
# the KUBE-*/CNI-HOSTPORT-*/CNI-DN-* iptables chains it created removed, the
# bridge and the lo alias removed, the kubepods cgroups removed, and NODE_ROOT,
# RUN_DIR and the host directories that did not exist before removed. The
# node's logs are kept in .tools/node/logs/. Safe to run twice, and after a
# half-done node-up.
#
# Kept on purpose: NODE_CACHE (the containerd image store, podman's store, the
# base rootfs): images survive node-down. `rm -rf ~/.cache/replicator-node`
# (after node-down) removes them.
set -uo pipefail
LOG_TAG=node-down
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

start=${SECONDS}
RUN="${NODE_ROOT}/run"
HOST_STATE="${NODE_ROOT}/host-state"
KUBECTL="$(command -v "${TOOLS_BIN}/kubectl" || command -v kubectl || true)"
kc() { "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" --request-timeout=10s "$@"; }

# 1. Pods, through the kubelet while it runs (it tears down their sandboxes,
#    CNI included): controllers and the scheduler first, so nothing replaces them.
stop_pidfile "${RUN}/kube-controller-manager.pid"
stop_pidfile "${RUN}/kube-scheduler.pid"
if pid_alive "${RUN}/kubelet.pid" && pid_alive "${RUN}/kube-apiserver.pid" && [[ -n "${KUBECTL}" ]]; then
  # Workloads before kube-system: the CSI plugin must outlive the pods whose
  # volumes it unpublishes.
  log "deleting the pods outside kube-system"
  for ns in $(kc get namespaces -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do
    [[ "${ns}" == kube-system ]] || kc -n "${ns}" delete pods --all --grace-period=1 --wait=false >/dev/null 2>&1 || true
  done
  for ((i = 0; i < 60; i++)); do
    n="$(kc get pods -A --no-headers 2>/dev/null | awk '$1 != "kube-system"' | wc -l)"
    [[ "${n}" == 0 ]] && break
    sleep 0.5
  done
  log "deleting all pods"
  kc delete pods --all-namespaces --all --grace-period=1 --wait=false >/dev/null 2>&1 || true
  # Until no task runs: the kubelet has stopped every sandbox (CNI DEL done).
  for ((i = 0; i < 120; i++)); do
    n="$(ctr_k8s tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING"' | wc -l)"
    [[ "${n}" == 0 ]] && break
    sleep 0.5
  done
fi
for p in kubelet kube-proxy kube-apiserver etcd versitygw; do
  stop_pidfile "${RUN}/${p}.pid"
done

# 2. Whatever the kubelet did not remove: tasks, containers, sandboxes.
if [[ -S "${CONTAINERD_SOCK}" ]] && ctr --address "${CONTAINERD_SOCK}" version >/dev/null 2>&1; then
  for t in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks kill -s SIGKILL "${t}" >/dev/null 2>&1 || true
  done
  sleep 0.5
  for t in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks delete -f "${t}" >/dev/null 2>&1 || true
  done
  for c in $(ctr_k8s containers ls -q 2>/dev/null); do
    ctr_k8s containers delete "${c}" >/dev/null 2>&1 || true
  done
fi
containerd_stop
# containerd-shim processes of this containerd (they outlive it by design).
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address ${CONTAINERD_SOCK}" 2>/dev/null); do
  kill -KILL "${pid}" 2>/dev/null || true
done
# The network namespaces CRI created for the pods (only those with our bridge's veths).
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
  if ip netns exec "${ns}" ip -4 addr 2>/dev/null | grep -q "inet ${POD_CIDR%.*}\."; then
    ip netns delete "${ns}" 2>/dev/null || true
  fi
done

# 3. Mounts below our directories (deepest first).
for dir in "${NODE_ROOT}" "${RUN_DIR}" "${CONTAINERD_ROOT}"; do
  findmnt -rn -o TARGET 2>/dev/null | awk -v d="${dir}/" 'index($0, d) == 1' | sort -r | while read -r m; do
    umount "${m}" 2>/dev/null || umount -l "${m}" 2>/dev/null || log "could not unmount ${m}"
  done
done

# 4. Network: the bridge (its veths went with the pods), the lo alias.
if ip link show "${NODE_BRIDGE}" >/dev/null 2>&1; then
  ip link delete "${NODE_BRIDGE}"
fi
had_alias=0
grep -qx 'lo-alias present' "${HOST_STATE}" 2>/dev/null && had_alias=1
if [[ "${had_alias}" == 0 ]] && has_lo_alias; then
  ip addr delete "${NODE_IP}/32" dev lo
fi

# 5. iptables: chains created while the node ran (kube-proxy's and the kubelet's
#    KUBE-*, the portmap plugin's CNI-HOSTPORT-*/CNI-DN-*), and the rules that
#    jump to them. Chains that existed before node-up are left alone.
ours() { [[ "$1" == KUBE-* || "$1" == CNI-HOSTPORT-* || "$1" == CNI-DN-* ]]; }
existed_before() { grep -qxF "chain $1 $2 $3" "${HOST_STATE}" 2>/dev/null; }
for ipt in iptables-nft iptables-legacy ip6tables-nft ip6tables-legacy; do
  command -v "${ipt}-save" >/dev/null 2>&1 || continue
  dump="$("${ipt}-save" 2>/dev/null)" || continue
  for table in $(awk '/^\*/ {print substr($1, 2)}' <<<"${dump}"); do
    tdump="$(awk -v t="*${table}" '$1 == t {on = 1; next} on && /^COMMIT/ {on = 0} on' <<<"${dump}")"
    chains=()
    while read -r c; do
      [[ -n "${c}" ]] && ours "${c}" && ! existed_before "${ipt}" "${table}" "${c}" && chains+=("${c}")
    done < <(awk '/^:/ {print substr($1, 2)}' <<<"${tdump}")
    ((${#chains[@]})) || continue
    # Rules in other chains that jump to ours.
    while read -r rule; do
      target="$(sed -n 's/.* -j \([^ ]*\).*/\1/p' <<<"${rule}")"
      src="$(awk '{print $2}' <<<"${rule}")"
      for c in "${chains[@]}"; do
        if [[ "${target}" == "${c}" ]] && ! printf '%s\n' "${chains[@]}" | grep -qxF "${src}"; then
          eval "${ipt} -t ${table} -D ${rule#-A }" 2>/dev/null || true
        fi
      done
    done < <(grep -- '^-A ' <<<"${tdump}")
    for c in "${chains[@]}"; do "${ipt}" -t "${table}" -F "${c}" 2>/dev/null || true; done
    for c in "${chains[@]}"; do "${ipt}" -t "${table}" -X "${c}" 2>/dev/null || true; done
  done
done

# nf_tables tables that iptables-nft created for us (node-up found none) and that
# hold no rule now: deleted, so the ruleset is as it was.
if command -v nft >/dev/null 2>&1 && [[ -f "${HOST_STATE}" ]]; then
  nft list tables 2>/dev/null | awk '$1 == "table" && ($2 == "ip" || $2 == "ip6") {print $2, $3}' |
    while read -r family table; do
      grep -qxF "nft-table ${family} ${table}" "${HOST_STATE}" && continue
      # With -a, the table, each chain and each rule carry a "# handle" comment:
      # no rule left when there are exactly 1 + chains of them.
      handles="$(nft -a list table "${family}" "${table}" 2>/dev/null | grep -c '# handle' || true)"
      chains="$(nft list table "${family}" "${table}" 2>/dev/null | grep -c '^[[:space:]]*chain ' || true)"
      if [[ "${handles}" -le $((chains + 1)) ]]; then
        nft delete table "${family}" "${table}" 2>/dev/null || log "could not delete nft table ${family} ${table}"
      else
        log "left nft table ${family} ${table}: it holds rules not ours"
      fi
    done
fi

# 6. Sysctls back to what node-up recorded.
if [[ -f "${HOST_STATE}" ]]; then
  while read -r kind setting; do
    [[ "${kind}" == sysctl ]] || continue
    name="${setting%%=*}"
    want="${setting#*=}"
    [[ "$(sysctl -n "${name}" 2>/dev/null)" == "${want}" ]] || sysctl -q -w "${name}=${want}" >/dev/null || log "could not restore ${name}=${want}"
  done <"${HOST_STATE}"
fi

# 7. cgroups the kubelet created (cgroupfs driver: /kubepods in each hierarchy).
if ! grep -qx 'dir /sys/fs/cgroup/cpu/kubepods' "${HOST_STATE}" 2>/dev/null; then
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d "${d}" ]] || continue
    find "${d}" -depth -type d -exec rmdir {} + 2>/dev/null || log "could not remove cgroup ${d}"
  done
fi

# 8. Directories: ours, and the host's that node-up did not find.
if [[ -d "${NODE_ROOT}/logs" ]]; then
  mkdir -p "${ROOT}/.tools/node"
  rm -rf "${ROOT}/.tools/node/logs"
  cp -r "${NODE_ROOT}/logs" "${ROOT}/.tools/node/logs"
  cp "${RUN_DIR}/containerd.log" "${ROOT}/.tools/node/logs/" 2>/dev/null || true
fi
if [[ -f "${HOST_STATE}" ]]; then
  for d in /var/lib/kubelet /var/lib/cni /var/log/pods /var/log/containers /run/netns /etc/cni /opt/cni; do
    [[ -L "${d}" ]] && continue # /var/run is a link to /run
    if [[ -e "${d}" ]] && ! grep -qxF "dir ${d}" "${HOST_STATE}"; then
      findmnt -rn -o TARGET | awk -v d="${d}/" 'index($0, d) == 1' | sort -r | xargs -r -n1 umount -l 2>/dev/null
      rm -rf "${d}"
    fi
  done
fi
rm -rf "${NODE_ROOT}" "${RUN_DIR}" "${ROOT}/.tools/node/kubeconfig" "${ROOT}/.tools/node/s3.env"
log "node down after $((SECONDS - start))s (logs kept in ${ROOT}/.tools/node/logs)"
