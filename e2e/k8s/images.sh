#!/usr/bin/env bash
# images.sh — the lab cluster's container images as OCI archives for
# `ctr -n k8s.io images import`, built without a Docker daemon or a registry.
#
#   e2e/k8s/images.sh base              # the lab's images that do not change with the code
#   e2e/k8s/images.sh driver OUT_DIR    # the driver image, from the Dockerfile's recipe
#   e2e/k8s/images.sh packages          # the package list the Dockerfile installs
#   e2e/k8s/images.sh check             # that list is non-empty and the image's base has it
#
# base (into $K8S_CACHE/images, kept between runs):
#   lab.local/pause:lab            the sandbox image: busybox (busybox-static), a shell that
#                                  sleeps until SIGTERM
#   docker.io/library/busybox:1.36 the workload image of the scenarios (E2E_WORKLOAD_IMAGE)
#   registry.k8s.io/sig-storage/<sidecar>:<version>  one image per sidecar e2e/k8s/build.sh made,
#                                  and the lab's stand-in (e2e/k8s/standin) under the chart's
#                                  names of node-driver-registrar and livenessprobe
# driver: lvm-iscsi-csi:lab, the Dockerfile's runtime stage: a Debian bookworm minbase root
#   (mmdebstrap from the apt mirror this machine uses: the equivalent of bookworm-slim) with
#   exactly the packages the Dockerfile's `apt-get install` line names (read from the
#   Dockerfile itself, so the list is written once), the initiator name file removed, no
#   apt lists; then the driver binary ($CSI_BIN, default target/release/lvm-iscsi-csi, else
#   target/debug's, stripped) at /usr/local/bin with the same ENTRYPOINT. The Debian layer is
#   cached under $K8S_CACHE/layers keyed by the package list; only the binary's layer is
#   remade per run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
K8S_CACHE=${K8S_CACHE:-/var/cache/lvm-iscsi-csi-k8s}
BIN=$K8S_CACHE/bin IMAGES=$K8S_CACHE/images LAYERS=$K8S_CACHE/layers
SUITE=bookworm
say() { echo "k8s-images: $*" >&2; }

# The packages of the Dockerfile's `apt-get install` (one per continued line, up to the
# next `&&`).
dockerfile_packages() {
  awk '/apt-get install/ {on=1; next} on && /&&/ {exit} on {gsub(/[\\ \t]/, ""); if ($0 != "") print}' \
    "$ROOT/Dockerfile"
}

# layer_tar OUT DIR: DIR's content as an uncompressed, reproducible layer.
layer_tar() {
  tar -C "$2" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$1" .
}

# oci_archive OUT NAME CONFIG_JSON LAYER_TAR...: an OCI image layout in a tar, the image's
# name in the index (containerd's import takes it from io.containerd.image.name).
oci_archive() {
  local out=$1 name=$2 cfg=$3 d l dg sz layers="" diffs="" cdg csz mdg msz
  shift 3
  d=$(mktemp -d)
  mkdir -p "$d/blobs/sha256"
  for l in "$@"; do
    dg=$(sha256sum "$l" | cut -d' ' -f1)
    sz=$(stat -c %s "$l")
    cp "$l" "$d/blobs/sha256/$dg"
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$dg\",\"size\":$sz}"
    diffs+="${diffs:+,}\"sha256:$dg\""
  done
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$cfg" "$diffs" >"$d/config"
  cdg=$(sha256sum "$d/config" | cut -d' ' -f1)
  csz=$(stat -c %s "$d/config")
  mv "$d/config" "$d/blobs/sha256/$cdg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$cdg" "$csz" "$layers" >"$d/manifest"
  mdg=$(sha256sum "$d/manifest" | cut -d' ' -f1)
  msz=$(stat -c %s "$d/manifest")
  mv "$d/manifest" "$d/blobs/sha256/$mdg"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$mdg" "$msz" "$name" "${name##*:}" >"$d/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
  tar -C "$d" -cf "$out.tmp" oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$d"
}

PATH_ENV='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'

busybox_layer() { # OUT: busybox-static with every applet linked in /bin
  local d a
  d=$(mktemp -d)
  mkdir -p "$d"/{bin,tmp,proc,sys,dev,etc,var}
  chmod 1777 "$d/tmp"
  cp /bin/busybox "$d/bin/busybox"
  for a in $(/bin/busybox --list); do [ -e "$d/bin/$a" ] || ln -s busybox "$d/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$d/etc/passwd"
  echo 'root:x:0:' >"$d/etc/group"
  layer_tar "$1" "$d"
  rm -rf "$d"
}

base_images() {
  mkdir -p "$IMAGES" "$LAYERS"
  local bb=$LAYERS/busybox.tar s v d t f
  busybox_layer "$bb"
  oci_archive "$IMAGES/pause.tar" lab.local/pause:lab \
    "{$PATH_ENV,\"Entrypoint\":[\"/bin/sh\",\"-c\",\"trap 'exit 0' TERM INT; while :; do sleep 3600 & wait \$!; done\"]}" "$bb"
  oci_archive "$IMAGES/busybox.tar" docker.io/library/busybox:1.36 "{$PATH_ENV,\"Cmd\":[\"sh\"]}" "$bb"
  # Sidecars: the binary at / and nothing else (they are static Go programs).
  for s in csi-provisioner csi-attacher csi-resizer csi-snapshotter snapshot-controller; do
    [ -x "$BIN/$s" ] || continue
    v=""
    for f in "$K8S_CACHE/done/${s/snapshot-controller/csi-snapshotter}"@*; do v=${f##*@}; done
    d=$(mktemp -d)
    mkdir -p "$d/tmp" && chmod 1777 "$d/tmp"
    cp "$BIN/$s" "$d/$s"
    t=$LAYERS/$s.tar
    layer_tar "$t" "$d"
    rm -rf "$d"
    oci_archive "$IMAGES/$s.tar" "registry.k8s.io/sig-storage/$s:$v" "{\"Entrypoint\":[\"/$s\"]}" "$t"
    rm -f "$t"
  done
  # The two sidecars the proxy does not serve: e2e/k8s/standin under the chart's image
  # names, started as the upstream entry points (it tells which one it is by that name).
  for s in csi-node-driver-registrar livenessprobe; do
    [ -x "$BIN/standin" ] || break
    v=$(grep -o "registry.k8s.io/sig-storage/$s:v[0-9.]*" "$ROOT/deploy/helm/lvm-iscsi-csi/values.yaml")
    d=$(mktemp -d)
    cp "$BIN/standin" "$d/$s"
    t=$LAYERS/$s.tar
    layer_tar "$t" "$d"
    rm -rf "$d"
    oci_archive "$IMAGES/$s.tar" "$v" "{\"Entrypoint\":[\"/$s\"]}" "$t"
    rm -f "$t"
  done
  say "base images in $IMAGES: $(cd "$IMAGES" && ls)"
}

# The Dockerfile's runtime stage's Debian part, cached by its package list.
debian_layer() {
  local pkgs key out check
  mapfile -t pkgs < <(dockerfile_packages)
  [ ${#pkgs[@]} -gt 0 ] || { say "no package list found in the Dockerfile"; exit 1; }
  key=$(printf '%s\n' "$SUITE" "${pkgs[@]}" | sha256sum | cut -c1-16)
  out=$LAYERS/debian-$key.tar
  if [ -f "$out" ]; then echo "$out"; return; fi
  mkdir -p "$LAYERS"
  check=$(mktemp)
  say "mmdebstrap $SUITE minbase + ${pkgs[*]}"
  local t0
  t0=$(date +%s)
  # shellcheck disable=SC2016 # the hooks' $1 is mmdebstrap's (the new root)
  nice -n 15 mmdebstrap --quiet --format=tar --variant=minbase --aptopt='APT::Install-Recommends "false"' \
    --include="$(IFS=,; echo "${pkgs[*]}")" \
    --customize-hook='rm -f "$1"/etc/iscsi/initiatorname.iscsi' \
    --customize-hook="chroot \"\$1\" dpkg-query -W -f='\${db:Status-Abbrev} \${Package}\n' ${pkgs[*]} >$check" \
    "$SUITE" "$out.tmp" /etc/apt/sources.list.d/debian.sources >&2
  # Every listed package installed (dpkg's "ii").
  if [ "$(grep -c '^ii ' "$check")" -ne ${#pkgs[@]} ]; then
    say "the image lacks packages the Dockerfile installs:"
    cat "$check" >&2
    rm -f "$out.tmp" "$check"
    exit 1
  fi
  rm -f "$check"
  mv "$out.tmp" "$out"
  say "Debian layer in $(($(date +%s) - t0)) s: $out"
  echo "$out"
}

driver_image() {
  local outdir=$1 bin=${CSI_BIN:-} base d t
  if [ -z "$bin" ]; then
    bin=$ROOT/target/release/lvm-iscsi-csi
    [ -x "$bin" ] || bin=$ROOT/target/debug/lvm-iscsi-csi
  fi
  [ -x "$bin" ] || { say "no driver binary ($bin): cargo build --release --bin lvm-iscsi-csi"; exit 1; }
  base=$(debian_layer)
  d=$(mktemp -d)
  mkdir -p "$d/usr/local/bin" "$outdir"
  strip -o "$d/usr/local/bin/lvm-iscsi-csi" "$bin"
  t=$(mktemp)
  layer_tar "$t" "$d"
  oci_archive "$outdir/lvm-iscsi-csi.tar" docker.io/library/lvm-iscsi-csi:lab \
    "{$PATH_ENV,\"Entrypoint\":[\"/usr/local/bin/lvm-iscsi-csi\"]}" "$base" "$t"
  rm -rf "$d" "$t"
  say "driver image lvm-iscsi-csi:lab ($bin) in $outdir"
}

case ${1:-} in
  base) base_images ;;
  driver) [ $# -eq 2 ] || { echo "usage: $0 driver OUT_DIR" >&2; exit 2; }; driver_image "$2" ;;
  packages) dockerfile_packages ;;
  check) debian_layer >/dev/null && say "the Debian layer installs the Dockerfile's $(dockerfile_packages | wc -l) packages" ;;
  *) echo "usage: $0 base | driver OUT_DIR | packages | check" >&2; exit 2 ;;
esac
