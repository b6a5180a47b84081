#!/usr/bin/env bash
# net.sh — the lab cluster's network: a network namespace of its own holding a bridge with
# this machine's side of the lab (the apiserver's address) and one tap device per guest.
# The control plane runs inside the namespace; each guest's QEMU runs there too with
# `-netdev tap,ifname=<tap>,script=no,downscript=no`. The apiserver reaches the kubelets
# and the guests reach the apiserver on the bridge; nothing of it is visible outside the
# namespace, so two lab runs side by side do not meet.
#
#   e2e/k8s/net.sh up NETNS BRIDGE_IP/PREFIX TAP...
#   e2e/k8s/net.sh route NETNS CIDR VIA     # a pod network behind a guest
#   e2e/k8s/net.sh down NETNS
set -euo pipefail

usage() { echo "usage: $0 up NETNS IP/PREFIX TAP... | route NETNS CIDR VIA | down NETNS" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 ns=$2
shift 2
in_ns() { ip netns exec "$ns" "$@"; }

case $cmd in
  up)
    [ $# -ge 1 ] || usage
    addr=$1
    shift
    ip netns add "$ns"
    in_ns ip link set lo up
    in_ns ip link add br0 type bridge
    in_ns ip addr add "$addr" dev br0
    in_ns ip link set br0 up
    in_ns sysctl -qw net.ipv4.ip_forward=1
    for t in "$@"; do
      in_ns ip tuntap add "$t" mode tap
      in_ns ip link set "$t" master br0
      in_ns ip link set "$t" up
    done
    ;;
  route)
    [ $# -eq 2 ] || usage
    in_ns ip route replace "$1" via "$2"
    ;;
  down)
    # Deleting the namespace removes its bridge and taps.
    ip netns del "$ns" 2>/dev/null || true
    ;;
  *) usage ;;
esac
