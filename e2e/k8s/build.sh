#!/usr/bin/env bash
# build.sh — the Kubernetes lab's binaries, built from the Go module proxy or taken from the
# cache: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl (Kubernetes
# $K8S_VERSION, and kube-proxy), the CSI sidecars the chart runs (csi-provisioner,
# csi-attacher, csi-resizer, csi-snapshotter, snapshot-controller and the snapshot CRDs), helm,
# and e2e/k8s/standin (the lab's node-driver-registrar and livenessprobe: the proxy does not
# serve those two).
#
#   e2e/k8s/build.sh [--e2e]     # --e2e: also Kubernetes' e2e suite binary (e2e.test)
#
# K8S_SNAPSHOTS=0 leaves out csi-snapshotter and snapshot-controller (the chart's snapshotter
# is off by default; the snapshot scenarios need them).
# Everything lands in $K8S_CACHE/bin (default /var/cache/lvm-iscsi-csi-k8s/bin); each piece is
# keyed by its version (a marker file `$K8S_CACHE/done/<name>@<version>`), so a warm run only
# checks the markers. Go builds run under `nice -n 15` (a 2-core machine is shared).
# Cold: ~20–30 min for Kubernetes on a busy 2-core machine, a few minutes for the rest.
# Prints one line per piece with where it came from and how long it took.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=${K8S_VERSION:-v1.34.4}
PROVISIONER_VERSION=${PROVISIONER_VERSION:-v5.3.0}
ATTACHER_VERSION=${ATTACHER_VERSION:-v4.13.0}
RESIZER_VERSION=${RESIZER_VERSION:-v1.14.0}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.4.0}
HELM_VERSION=${HELM_VERSION:-v3.19.0}
K8S_CACHE=${K8S_CACHE:-/var/cache/lvm-iscsi-csi-k8s}
BIN=$K8S_CACHE/bin DONE=$K8S_CACHE/done SRC=$K8S_CACHE/src
WANT_E2E=0 WANT_SNAPSHOTS=${K8S_SNAPSHOTS:-1}
for a in "$@"; do
  case $a in
    --e2e) WANT_E2E=1 ;;
    *) echo "usage: $0 [--e2e]" >&2; exit 2 ;;
  esac
done
mkdir -p "$BIN" "$DONE" "$SRC"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOWORK=off
NICE=(nice -n 15)

# One build at a time per cache (two lab runs started together share the work).
exec 8>"$K8S_CACHE/.build.lock"
flock 8

say() { echo "k8s-build: $*" >&2; }

# module_dir MODULE@VERSION: a writable copy of the module's source under $SRC.
module_dir() {
  local mv=$1 dir dst
  dir=$(go mod download -json "$mv" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { say "go mod download $mv gave no folder"; exit 1; }
  dst="$SRC/${mv//\//_}"
  rm -rf "$dst"
  cp -r "$dir" "$dst"
  chmod -R u+w "$dst"
  echo "$dst"
}

# piece NAME VERSION FUNCTION: runs FUNCTION unless NAME@VERSION is already built.
piece() {
  local name=$1 ver=$2 fn=$3 t0
  if [ -f "$DONE/$name@$ver" ]; then
    say "$name $ver: cached"
    return
  fi
  t0=$(date +%s)
  say "$name $ver: building"
  "$fn" "$ver"
  touch "$DONE/$name@$ver"
  say "$name $ver: built in $(($(date +%s) - t0)) s"
}

kube_ldflags() {
  local v=$1 minor
  minor=${v#v1.}
  minor=${minor%%.*}
  local x=k8s.io/component-base/version c=k8s.io/client-go/pkg/version f
  local d
  d=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  f="-s -w"
  for p in $x $c; do
    f+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$d"
  done
  echo "$f"
}

# The module zip has no staging/ folder: drop the workspace and the replace block, and pin
# the staging modules (v0.0.0 there) to their published v0.<minor>.<patch>.
kubernetes_src() {
  local v=$1 dir
  dir=$(module_dir "k8s.io/kubernetes@$v")
  (
    cd "$dir"
    rm -f go.work go.work.sum
    rm -rf vendor
    sed -i -e '/^replace (/,/^)/d' -e "s#^\([[:space:]]*k8s\.io/[^ ]*\) v0\.0\.0\([[:space:]]\|\$\)#\1 v0.${v#v1.}\2#" go.mod
    "${NICE[@]}" go mod tidy >/dev/null 2>&1 || "${NICE[@]}" go mod tidy
  )
  echo "$dir"
}

KSRC=""
kube_src() { [ -n "$KSRC" ] || KSRC=$(kubernetes_src "$K8S_VERSION"); }

build_kubernetes() {
  local v=$1 c
  kube_src
  kube_cmds "$v" kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl
}

kube_cmds() { # VERSION CMD...
  local v=$1 c t0
  shift
  kube_src
  for c in "$@"; do
    t0=$(date +%s)
    (cd "$KSRC" && "${NICE[@]}" go build -trimpath -ldflags "$(kube_ldflags "$v")" -o "$BIN/$c" "./cmd/$c")
    say "  $c: $(($(date +%s) - t0)) s"
  done
}

# kube-proxy: in the guests, in-cluster clients reach the apiserver through the kubernetes
# Service's IP.
build_kube_proxy() { kube_cmds "$1" kube-proxy; }

build_e2e() {
  local v=$1
  kube_src
  (cd "$KSRC" && "${NICE[@]}" go test -c -trimpath -ldflags "$(kube_ldflags "$v")" -o "$BIN/e2e.test" ./test/e2e)
}

# Sidecars: their go.mod has replace directives, so `go install pkg@v` refuses them; a
# copy of the module built in place with -mod=mod works.
sidecar() { # MODULE VERSION CMD...
  local m=$1 v=$2 dir c
  shift 2
  dir=$(module_dir "$m@$v")
  for c in "$@"; do
    (cd "$dir" && "${NICE[@]}" go build -mod=mod -trimpath -ldflags "-s -w -X main.version=$v" -o "$BIN/$c" "./cmd/$c")
  done
  rm -rf "$dir"
}
build_provisioner() { sidecar github.com/kubernetes-csi/external-provisioner/v5 "$1" csi-provisioner; }
build_attacher() { sidecar github.com/kubernetes-csi/external-attacher/v4 "$1" csi-attacher; }
build_resizer() { sidecar github.com/kubernetes-csi/external-resizer "$1" csi-resizer; }
build_snapshotter() {
  sidecar github.com/kubernetes-csi/external-snapshotter/v8 "$1" csi-snapshotter snapshot-controller
  local dir
  dir=$(go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$1" |
    sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$K8S_CACHE/snapshot-crds"
  cp "$dir"/config/crd/snapshot.storage.k8s.io_*.yaml "$K8S_CACHE/snapshot-crds/"
}
build_standin() {
  (cd "$HERE/standin" && "${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$BIN/standin" .)
}
build_helm() { GOBIN=$BIN "${NICE[@]}" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$1"; }

piece kubernetes "$K8S_VERSION" build_kubernetes
piece kube-proxy "$K8S_VERSION" build_kube_proxy
piece csi-provisioner "$PROVISIONER_VERSION" build_provisioner
piece csi-attacher "$ATTACHER_VERSION" build_attacher
piece csi-resizer "$RESIZER_VERSION" build_resizer
piece helm "$HELM_VERSION" build_helm
piece standin "$(cat "$HERE"/standin/{go.mod,go.sum,main.go} | sha256sum | cut -c1-16)" build_standin
[ "$WANT_SNAPSHOTS" = 0 ] || piece csi-snapshotter "$SNAPSHOTTER_VERSION" build_snapshotter
[ $WANT_E2E -eq 0 ] || piece e2e.test "$K8S_VERSION" build_e2e
[ -z "$KSRC" ] || rm -rf "$KSRC"
say "binaries in $BIN"
