#!/usr/bin/env bash
# controlplane.sh — the lab cluster's control plane on this machine: etcd (Debian's
# etcd-server), kube-apiserver (Node + RBAC authorization, NodeRestriction admission),
# kube-controller-manager and kube-scheduler, each a background process.
#
#   e2e/k8s/controlplane.sh start RUN_DIR APISERVER_IP   # returns once /readyz answers ok
#   e2e/k8s/controlplane.sh stop RUN_DIR
#
# RUN_DIR holds what pki.sh made; logs go to RUN_DIR/log/<component>.log, process ids to
# RUN_DIR/pids/. The apiserver listens on APISERVER_IP:6443 (run this inside the lab's
# network namespace, where that address is the bridge the guests are on); etcd listens on
# 127.0.0.1 of that namespace. Binaries come from $K8S_CACHE/bin (e2e/k8s/build.sh).
set -euo pipefail

K8S_CACHE=${K8S_CACHE:-/var/cache/lvm-iscsi-csi-k8s}
BIN=$K8S_CACHE/bin
SERVICE_CIDR=10.96.0.0/16

usage() { echo "usage: $0 start RUN_DIR APISERVER_IP | stop RUN_DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
CMD=$1 RUN=$(realpath "$2")
PKI=$RUN/pki KC=$RUN/kubeconfig LOG=$RUN/log PIDS=$RUN/pids

# spawn NAME COMMAND...: runs it in the background, logging to LOG/NAME.log.
spawn() {
  local name=$1
  shift
  "$@" >"$LOG/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name"
}

stop() {
  local c p
  for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$PIDS/$c" ] || continue
    p=$(cat "$PIDS/$c")
    kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    rm -f "$PIDS/$c"
  done
}

start() {
  local ip=$1 t0 i
  mkdir -p "$LOG" "$PIDS" "$RUN/etcd"
  t0=$(date +%s.%N)
  spawn etcd etcd --name lab --data-dir "$RUN/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster lab=http://127.0.0.1:2380
  spawn kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$ip" --advertise-address="$ip" --secure-port=6443 \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --profiling=false
  for i in $(seq 120); do
    if curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
      "https://$ip:6443/readyz" >/dev/null 2>&1; then break; fi
    [ "$i" -lt 120 ] || { echo "controlplane: apiserver not ready after 60 s; see $LOG" >&2; return 1; }
    sleep 0.5
  done
  spawn kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$KC/controller-manager.conf" \
    --authentication-kubeconfig="$KC/controller-manager.conf" \
    --authorization-kubeconfig="$KC/controller-manager.conf" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --profiling=false
  spawn kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$KC/scheduler.conf" \
    --authentication-kubeconfig="$KC/scheduler.conf" \
    --authorization-kubeconfig="$KC/scheduler.conf" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
  echo "controlplane: apiserver ready at https://$ip:6443 in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}") s"
}

case $CMD in
  start) [ $# -eq 3 ] || usage; start "$3" ;;
  stop) stop ;;
  *) usage ;;
esac
