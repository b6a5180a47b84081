#!/usr/bin/env bash
# node.sh — runs INSIDE a kernel-lab guest: turns it into a Kubernetes node (containerd,
# kubelet, kube-proxy) of the lab cluster and keeps it up until RUN_DIR/stop appears.
#
#   e2e/k8s/node.sh RUN_DIR NAME IP/PREFIX INDEX ROLE APISERVER_IP
#
# ROLE `storage` also makes the volume group (e2e/lab/setup-vg.sh, $CSI_VG, default csivg)
# and labels the node lvm-iscsi.csi.io/storage-node=true (the chart's default controller
# placement). INDEX picks the node's pod network, 10.244.INDEX.0/24 (bridge CNI,
# host-local IPAM). Images: every OCI archive in $K8S_CACHE/images and RUN_DIR/images is
# imported into containerd's k8s.io namespace (no registry in the lab). The guest's init is no systemd:
# cgroup v2 is mounted here, containerd and the kubelet use the cgroupfs driver.
# Logs: RUN_DIR/log/NAME-<component>.log; RUN_DIR/nodes/NAME.state says how far it got,
# RUN_DIR/nodes/NAME.mem the guest's memory in use.
set -euo pipefail

[ $# -eq 6 ] || { echo "usage: $0 RUN_DIR NAME IP/PREFIX INDEX ROLE APISERVER_IP" >&2; exit 2; }
RUN=$(realpath "$1") NAME=$2 CIDR=$3 INDEX=$4 ROLE=$5 API_IP=$6
IP=${CIDR%/*}
K8S_CACHE=${K8S_CACHE:-/var/cache/lvm-iscsi-csi-k8s}
BIN=$K8S_CACHE/bin PKI=$RUN/pki KC=$RUN/kubeconfig LOG=$RUN/log
ETC=/run/lab-node
mkdir -p "$LOG" "$RUN/nodes" "$ETC"
state() { echo "$*" >"$RUN/nodes/$NAME.state"; echo "node $NAME: $*"; }
t0=$(date +%s)

# --- the guest as a host: name, route, initiator name, cgroups, kernel ---
hostname "$NAME"
ip route replace default via "$API_IP"
echo "InitiatorName=iqn.2004-10.com.debian:lab.$NAME" >/etc/iscsi/initiatorname.iscsi
if [ -f /run/iscsid.pid ]; then kill "$(cat /run/iscsid.pid)" 2>/dev/null || true; sleep 1; fi
iscsid
mount -t cgroup2 none /sys/fs/cgroup
sed 's/\([^ ]\+\)/+\1/g' /sys/fs/cgroup/cgroup.controllers >/sys/fs/cgroup/cgroup.subtree_control
for m in overlay br_netfilter nf_conntrack iptable_nat iptable_filter xt_conntrack xt_MASQUERADE; do
  modprobe "$m" 2>/dev/null || echo "node $NAME: modprobe $m failed" >&2
done
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
# The kubelet's directory must be a shared mount: the node plugin's Bidirectional
# mounts propagate through it. containerd's overlay snapshots cannot sit on the guest's
# overlay root, so both get a tmpfs of their own.
mount --make-rshared /
for d in /var/lib/kubelet /var/lib/containerd /var/log/pods /var/log/containers; do
  mkdir -p "$d" && mount -t tmpfs tmpfs "$d"
done
mount --make-rshared /var/lib/kubelet

if [ "$ROLE" = storage ]; then
  state "making the volume group"
  e2e/lab/setup-vg.sh "${CSI_VG:-csivg}" >"$LOG/$NAME-setup-vg.log" 2>&1
fi

# --- containerd ---
mkdir -p /etc/cni/net.d
cat >/etc/cni/net.d/10-lab.conflist <<EOF
{
  "cniVersion": "0.4.0",
  "name": "lab",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.$INDEX.0/24"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
cat >"$ETC/containerd.toml" <<'EOF'
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "lab.local/pause:lab"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
EOF
state "starting containerd"
containerd --config "$ETC/containerd.toml" >"$LOG/$NAME-containerd.log" 2>&1 &
CONTAINERD=$!
for _ in $(seq 120); do ctr version >/dev/null 2>&1 && break; sleep 0.5; done
state "importing images"
shopt -s nullglob
for img in "$K8S_CACHE"/images/*.tar "$RUN"/images/*.tar; do
  ctr -n k8s.io images import --no-unpack "$img" >>"$LOG/$NAME-images.log" 2>&1 ||
    echo "node $NAME: importing $img failed" >&2
done

# --- kubelet ---
labels=""
[ "$ROLE" != storage ] || labels="lvm-iscsi.csi.io/storage-node=true"
cat >"$ETC/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-$NAME.crt
tlsPrivateKeyFile: $PKI/kubelet-$NAME.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
clusterDomain: cluster.local
# The lab's disks are tmpfs and images cannot be pulled again: no eviction for disk,
# no image garbage collection.
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
state "starting kubelet"
"$BIN/kubelet" --config="$ETC/kubelet.yaml" --kubeconfig="$KC/node-$NAME.conf" \
  --node-ip="$IP" --hostname-override="$NAME" ${labels:+--node-labels=$labels} --v=2 \
  >"$LOG/$NAME-kubelet.log" 2>&1 &
KUBELET=$!

# --- kube-proxy: in-cluster clients (the driver's pods) reach the apiserver through the
# kubernetes Service's IP ---
KUBE_PROXY=""
if [ -x "$BIN/kube-proxy" ]; then
  cat >"$ETC/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KC/kube-proxy.conf}
mode: iptables
clusterCIDR: 10.244.0.0/16
hostnameOverride: $NAME
conntrack: {maxPerCore: 0}
EOF
  "$BIN/kube-proxy" --config="$ETC/kube-proxy.yaml" --v=2 >"$LOG/$NAME-kube-proxy.log" 2>&1 &
  KUBE_PROXY=$!
else
  # Without kube-proxy: the one Service the driver needs, by hand.
  iptables -t nat -A OUTPUT -d 10.96.0.1 -p tcp --dport 443 -j DNAT --to-destination "$API_IP:6443"
  iptables -t nat -A PREROUTING -d 10.96.0.1 -p tcp --dport 443 -j DNAT --to-destination "$API_IP:6443"
fi
state "running ($(($(date +%s) - t0)) s after start)"

while [ ! -e "$RUN/stop" ]; do
  kill -0 "$KUBELET" 2>/dev/null || { state "kubelet exited"; break; }
  awk '/^MemTotal/ {t = $2} /^MemAvailable/ {a = $2} END {printf "%d MiB used of %d\n", (t - a) / 1024, t / 1024}' \
    /proc/meminfo >"$RUN/nodes/$NAME.mem"
  sleep 2
done
state "stopping"
for p in $KUBE_PROXY $KUBELET; do kill "$p" 2>/dev/null || true; done
wait "$KUBELET" 2>/dev/null || true
# Pod mounts and iSCSI sessions die with the guest; containerd's shims get a moment.
kill "$CONTAINERD" 2>/dev/null || true
wait "$CONTAINERD" 2>/dev/null || true
state "stopped"
