#!/usr/bin/env bash
# k8s-lab.sh — a real Kubernetes cluster in the kernel lab, from nothing, and the chart
# installed into it with Helm:
#   1. the binaries (e2e/k8s/build.sh: Kubernetes, the CSI sidecars, helm; cached by version)
#      and the images (e2e/k8s/images.sh: pause, busybox, the sidecars, and the driver image
#      from the Dockerfile's package list, as OCI archives; no Docker, no registry);
#   2. a network namespace with a bridge and one tap device per guest (e2e/k8s/net.sh);
#   3. the control plane in it (e2e/k8s/controlplane.sh: etcd, kube-apiserver with Node +
#      RBAC and NodeRestriction, controller-manager, scheduler; certificates from
#      e2e/k8s/pki.sh);
#   4. lab guests as nodes (e2e/lab/kernel-lab.sh on the taps running e2e/k8s/node.sh:
#      containerd + kubelet + kube-proxy): storage-1 (the volume group, the iSCSI target)
#      and compute-1;
#   5. `helm install` of deploy/helm/lvm-iscsi-csi with the lab's images, and the driver's
#      pods Running.
# Then everything it started is torn down, and the last line is `k8s-lab: PASS ...` or
# `k8s-lab: FAIL ...`.
#
#   e2e/k8s-lab.sh [--keep]    # --keep: leave the cluster up until Enter is pressed
#
# Environment: K8S_CACHE (binaries and images kept between runs, default
# /var/cache/lvm-iscsi-csi-k8s), CSI_BIN (the driver binary put in the image; default
# target/release or target/debug, built when neither exists), K8S_NODES (guests: 1 = only
# storage-1, default 2), K8S_GUEST_MEM (MiB per guest, default 2560), K8S_TIMEOUT (seconds
# of every wait, default 600). Output: e2e/out/k8s/ (certificates, logs of every component
# and guest, kubeconfig/admin.conf, summary.txt).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" # kernel-lab shares the current directory with the guests, at the same path

KEEP=0
for a in "$@"; do
  case $a in
    --keep) KEEP=1 ;;
    *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
  esac
done
export K8S_CACHE=${K8S_CACHE:-/var/cache/lvm-iscsi-csi-k8s}
export CSI_VG=${CSI_VG:-csivg}
NODES=${K8S_NODES:-2}
MEM=${K8S_GUEST_MEM:-2560}
WAIT=${K8S_TIMEOUT:-600}
RUN=$ROOT/e2e/out/k8s
NS=k8slab-$$
API_IP=10.77.0.1
BIN=$K8S_CACHE/bin
KUBECONFIG=$RUN/kubeconfig/admin.conf
export KUBECONFIG
[ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH

T0=$SECONDS
SUMMARY=()
note() { echo "k8s-lab: $*" >&2; SUMMARY+=("$*"); }
step() { printf '\n### k8s-lab: %s (%d s)\n' "$*" $((SECONDS - T0)) >&2; }
in_ns() { ip netns exec "$NS" "$@"; }
kctl() { in_ns "$BIN/kubectl" "$@"; }

# Guests: name, address, role.
GUESTS=("storage-1 10.77.0.11 storage" "compute-1 10.77.0.12 compute")
GUESTS=("${GUESTS[@]:0:$NODES}")
GUEST_PIDS=()

FAILED=""
fail() { FAILED=$*; echo "k8s-lab: $*" >&2; exit 1; }

teardown() { # [EXIT_STATUS]
  local rc=${1:-$?} p i
  trap - EXIT INT TERM
  set +e
  if [ $KEEP = 1 ] && [ -z "$FAILED" ] && [ "$rc" = 0 ]; then
    echo "k8s-lab: cluster up: KUBECONFIG=$KUBECONFIG ip netns exec $NS $BIN/kubectl get nodes; Enter tears it down" >&2
    read -r _ || true
  fi
  step "teardown"
  touch "$RUN/stop"
  for p in "${GUEST_PIDS[@]}"; do
    for i in $(seq 120); do kill -0 "$p" 2>/dev/null || break; sleep 1; done
    kill "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  [ ! -d "$RUN/pids" ] || in_ns e2e/k8s/controlplane.sh stop "$RUN"
  e2e/k8s/net.sh down "$NS"
  {
    printf '%s\n' "${SUMMARY[@]}"
    echo "total: $((SECONDS - T0)) s"
  } >"$RUN/summary.txt"
  if [ -z "$FAILED" ] && [ "$rc" = 0 ]; then
    echo "k8s-lab: PASS in $((SECONDS - T0)) s (${#GUESTS[@]} nodes Ready, chart installed; $RUN/summary.txt)"
  else
    echo "k8s-lab: FAIL in $((SECONDS - T0)) s: ${FAILED:-exit status $rc} (logs: $RUN/log)"
  fi
  exit "$rc"
}

# wait_for SECONDS WHAT COMMAND...: polls COMMAND once a second.
wait_for() {
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  fail "$what: not within $limit s"
}

# rss_mb PID...: their resident memory, added up, in MiB.
rss_mb() { ps -o rss= -p "$(IFS=,; echo "$*")" 2>/dev/null | awk '{s += $1} END {printf "%d", s / 1024}'; }
descendants() { local c; for c in $(ps -o pid= --ppid "$1"); do echo "$c"; descendants "$c"; done; }

[ "$(id -u)" = 0 ] || { echo "k8s-lab: FAIL: needs root (network namespace, QEMU taps)"; exit 1; }
rm -rf "$RUN" && mkdir -p "$RUN/log"
trap teardown EXIT
trap 'exit 130' INT TERM

step "packages"
e2e/install-packages.sh lab k8s >&2
e2e/lab/kernel-lab.sh -p # the guests boot inside the namespace, which has no way out
t=$SECONDS
step "binaries (e2e/k8s/build.sh)"
e2e/k8s/build.sh || fail "build"
note "binaries: $((SECONDS - t)) s"

step "images"
t=$SECONDS
if [ -z "${CSI_BIN:-}" ] && [ ! -x target/release/lvm-iscsi-csi ] && [ ! -x target/debug/lvm-iscsi-csi ]; then
  nice -n 10 cargo build --bin lvm-iscsi-csi || fail "cargo build"
fi
e2e/k8s/images.sh base || fail "base images"
e2e/k8s/images.sh driver "$RUN/images" || fail "driver image"
note "images: $((SECONDS - t)) s"

step "network namespace $NS and control plane"
nodes=() taps=()
for i in "${!GUESTS[@]}"; do
  read -r name ip _ <<<"${GUESTS[$i]}"
  nodes+=("$name=$ip")
  taps+=("tap$i")
done
e2e/k8s/pki.sh "$RUN" "$API_IP" "${nodes[@]}"
e2e/k8s/net.sh up "$NS" "$API_IP/24" "${taps[@]}"
t=$SECONDS
in_ns e2e/k8s/controlplane.sh start "$RUN" "$API_IP" || fail "control plane"
note "control plane ready: $((SECONDS - t)) s"

step "nodes"
t=$SECONDS
for i in "${!GUESTS[@]}"; do
  read -r name ip role <<<"${GUESTS[$i]}"
  in_ns e2e/lab/kernel-lab.sh -c 1 -m "$MEM" -t $((WAIT * 6)) -l "$RUN/log/$name-console.log" \
    -n "tap,id=n0,ifname=tap$i,script=no,downscript=no" -a "$ip/24" -M "52:54:00:77:00:1$i" \
    -e K8S_CACHE -e CSI_VG -- e2e/k8s/node.sh "$RUN" "$name" "$ip/24" "$((i + 1))" "$role" "$API_IP" \
    >"$RUN/log/$name-guest.log" 2>&1 &
  GUEST_PIDS+=($!)
done
for i in "${!GUESTS[@]}"; do
  read -r name ip _ <<<"${GUESTS[$i]}"
  wait_for "$WAIT" "node $name registered" kctl get node "$name"
  # Pods on other nodes reach this node's pod network through the bridge.
  e2e/k8s/net.sh route "$NS" "10.244.$((i + 1)).0/24" "$ip"
done
wait_for "$WAIT" "nodes Ready" kctl wait --for=condition=Ready node --all --timeout=1s
note "nodes Ready: $((SECONDS - t)) s after the guests started"
kctl get nodes -o wide >&2
cp_pids=()
for f in "$RUN"/pids/*; do cp_pids+=("$(cat "$f")"); done
note "memory: control plane $(rss_mb "${cp_pids[@]}") MiB RSS"
for i in "${!GUESTS[@]}"; do
  read -r name _ _ <<<"${GUESTS[$i]}"
  mapfile -t qpids < <(descendants "${GUEST_PIDS[$i]}")
  note "memory: $name QEMU $(rss_mb "${qpids[@]}") MiB RSS (guest: $(cat "$RUN/nodes/$name.mem" 2>/dev/null || echo '?'))"
done

step "helm install"
t=$SECONDS
cat >"$RUN/values.yaml" <<VALUES
# The lab's values: the images imported into every node (no registry), the guests' VG.
image:
  repository: lvm-iscsi-csi
  tag: lab
  pullPolicy: Never
controller:
  defaultVolumeGroup: $CSI_VG
node:
  # host mode runs \`nsenter --target 1 --mount\`: a lab guest's PID 1 is chrooted into the
  # shared root from the initramfs, so PID 1's mount namespace has the initramfs as its root.
  iscsiadmMode: direct
sidecars:
  attacher:
    # The chart's v4.10.0 is not served by the Go module proxy.
    image: registry.k8s.io/sig-storage/csi-attacher:v4.13.0
storageClasses:
  - name: lvm-iscsi
    volumeGroup: $CSI_VG
    fsType: ext4
    chap: true
    reclaimPolicy: Delete
    allowVolumeExpansion: true
    volumeBindingMode: Immediate
VALUES
DRIVER_NS=lvm-iscsi-csi
in_ns "$BIN/helm" install lvm-iscsi-csi deploy/helm/lvm-iscsi-csi --namespace "$DRIVER_NS" \
  --create-namespace --values "$RUN/values.yaml" --wait --timeout "${WAIT}s" >&2 ||
  {
    kctl -n "$DRIVER_NS" get pods -o wide >&2
    kctl -n "$DRIVER_NS" describe pods >"$RUN/log/pods-describe.txt" 2>&1
    fail "helm install (pods: $RUN/log/pods-describe.txt)"
  }
kctl -n "$DRIVER_NS" get pods -o wide >&2
note "helm install --wait: $((SECONDS - t)) s"
# Every node plugin registered with its kubelet: the CSINode objects name the driver.
# Container logs are kept whatever happens next.
save_logs() {
  local p
  for p in $(kctl -n "$DRIVER_NS" get pods -o name 2>/dev/null); do
    kctl -n "$DRIVER_NS" logs "$p" --all-containers --prefix >"$RUN/log/${p#pod/}.log" 2>&1 || true
    kctl -n "$DRIVER_NS" logs "$p" --all-containers --prefix --previous >"$RUN/log/${p#pod/}.previous.log" 2>&1 || true
  done
}
# shellcheck disable=SC2154 # st is set inside the trap
trap 'st=$?; save_logs; teardown "$st"' EXIT
wait_for "$WAIT" "driver registered on every node" bash -c \
  "[ \"\$(ip netns exec $NS $BIN/kubectl get csinode -o jsonpath='{range .items[*]}{.spec.drivers[*].name}{\"\\n\"}{end}' | grep -c lvm-iscsi.csi.io)\" = ${#GUESTS[@]} ]"
note "driver registered on ${#GUESTS[@]} nodes: $((SECONDS - t)) s after helm install started"
# `helm install --wait` counts a container as ready once it started (the chart has no
# readiness probes): a driver that crashes right after start passes it. No restarts allowed.
restarts=$(kctl -n "$DRIVER_NS" get pods -o jsonpath='{range .items[*]}{range .status.containerStatuses[*]}{.restartCount}{"\n"}{end}{end}' |
  awk '{s += $1} END {print s + 0}')
[ "$restarts" = 0 ] || fail "driver containers restarted $restarts times (logs: $RUN/log)"
