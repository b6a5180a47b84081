#!/usr/bin/env bash
# kernel-lab.sh — run a command as root inside a throwaway guest that has a real,
# stock Debian kernel (device-mapper, LIO iSCSI target, open-iscsi initiator, sd, loop),
# while seeing this machine's own userland: the host root is shared read-only over 9p
# with a tmpfs overlay on top, and the current directory is shared read-write at the
# same path. No image is built; only the kernel package is downloaded once.
#
#   kernel-lab.sh [-m MEM_MB] [-c CPUS] [-t TIMEOUT_S] [-e KEY[=VAL]]... [-l CONSOLE_LOG]
#                 [-n NETDEV -a IP/PREFIX [-M MAC]] -- COMMAND [ARGS...]
#   kernel-lab.sh -p
#
# -e exports KEY=VAL to the command in the guest (repeatable); `-e KEY` passes this machine's
#    current value of KEY.
# -l also copies the guest's console log to CONSOLE_LOG, which the messages then name (the
#    last run's log is also kept in $LAB_CACHE/console.log, overwritten by the next guest).
# -n gives the guest a virtio NIC on a QEMU netdev, e.g. socket,id=n0,listen=127.0.0.1:47001 in
#    one guest and socket,id=n0,connect=127.0.0.1:47001 in another: two kernels (a storage node
#    and a compute node) on one private wire. -a sets the guest's address on eth0; -M its MAC
#    (must differ between guests).
# -p only installs the packages and prepares the kernel and initramfs (the downloads), then
#    exits: for a caller that boots guests where there is no network (e.g. QEMU started
#    inside a network namespace, `-n tap,...`).
#
# In the guest: modules sd_mod, loop, dm_mod, dm_snapshot, dm_thin_pool, configfs, the LIO target
# (target_core_*, iscsi_target_mod) and iscsi_tcp are loaded; configfs is mounted at
# /sys/kernel/config; systemd-udevd and iscsid run; lo is up. LVM thin pools work
# (thin-provisioning-tools). tgtd is installed but not started (a scenario that wants it runs
# `tgtd`; LIO and tgt both listen on port 3260 by default).
# The command runs under bash in the shared current directory; its stdout and stderr are
# streamed back here while it runs.
#
# Exit status: the command's own, or 124 on timeout, 125 if the guest never ran it.
# QEMU runs under TCG (no KVM needed). Environment: LAB_CACHE (default /var/cache/kernel-lab)
# holds the kernel package and the initramfs; KERNEL_PACKAGE picks a kernel package (default:
# the one Debian's linux-image-amd64 depends on).
set -euo pipefail

MEM=2048 CPUS=2 TIMEOUT=900 NETDEV="" IPADDR="" MAC="52:54:00:12:34:56" LOGCOPY="" PREPARE_ONLY=0
ENVS=()
usage() {
  echo "usage: $0 [-m MB] [-c CPUS] [-t S] [-e KEY[=VAL]]... [-l LOG] [-n NETDEV -a IP/PREFIX [-M MAC]] -- COMMAND..." >&2
  echo "       $0 -p   (prepare the kernel only)" >&2
  exit 2
}
while getopts "m:c:t:e:l:n:a:M:ph" o; do
  case $o in
    m) MEM=$OPTARG ;;
    c) CPUS=$OPTARG ;;
    t) TIMEOUT=$OPTARG ;;
    e) ENVS+=("$OPTARG") ;;
    l) LOGCOPY=$OPTARG ;;
    n) NETDEV=$OPTARG ;;
    a) IPADDR=$OPTARG ;;
    M) MAC=$OPTARG ;;
    p) PREPARE_ONLY=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || [ $PREPARE_ONLY = 1 ] || usage

LAB_CACHE=${LAB_CACHE:-/var/cache/kernel-lab}
KPKG=${KERNEL_PACKAGE:-} # e.g. linux-image-6.1.0-56-amd64

install_deps() {
  local pkgs=(qemu-system-x86 busybox-static kmod cpio lvm2 thin-provisioning-tools open-iscsi tgt e2fsprogs xfsprogs
    util-linux udev iproute2)
  local missing=() p
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  echo "kernel-lab: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

kernel_package() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }

prepare_kernel() {
  mkdir -p "$LAB_CACHE"
  if [ -z "$KPKG" ]; then
    KPKG=$(kernel_package)
    if [ -z "$KPKG" ]; then apt-get update -qq && KPKG=$(kernel_package); fi
    [ -n "$KPKG" ] || { echo "kernel-lab: cannot tell which kernel linux-image-amd64 depends on" >&2; exit 125; }
  fi
  local kdir="$LAB_CACHE/$KPKG"
  # Two guests started together (the two-host setup) must not both unpack the kernel.
  exec 9>"$LAB_CACHE/.prepare.lock"
  flock 9
  if [ ! -f "$kdir/ready" ]; then
    echo "kernel-lab: preparing $KPKG in $kdir" >&2
    rm -rf "$kdir" && mkdir -p "$kdir/deb"
    (cd "$kdir/deb" && apt-get download -qq "$KPKG" 2>/dev/null) ||
      { apt-get update -qq && (cd "$kdir/deb" && apt-get download -qq "$KPKG"); }
    dpkg -x "$kdir"/deb/*.deb "$kdir/root"
    local kver
    kver=$(ls "$kdir/root/lib/modules")
    depmod -b "$kdir/root" "$kver"
    build_initrd "$kdir" "$kver"
    touch "$kdir/ready"
  fi
  exec 9>&-
  KDIR=$kdir
}

build_initrd() { # a busybox initramfs that mounts the host root over 9p and chroots into it
  local kdir=$1 kver=$2 i="$1/initrd"
  local mods="$kdir/root/lib/modules/$kver/kernel" m
  mkdir -p "$i"/{bin,proc,sys,dev,host,up,newroot,mods}
  cp /bin/busybox "$i/bin/busybox"
  for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_modern_dev virtio/virtio_pci_legacy_dev virtio/virtio_pci; do
    cp "$mods/drivers/$m.ko" "$i/mods/"
  done
  cp "$mods/fs/netfs/netfs.ko" "$mods/fs/fscache/fscache.ko" "$mods/net/9p/9pnet.ko" \
    "$mods/net/9p/9pnet_virtio.ko" "$mods/fs/9p/9p.ko" "$mods/fs/overlayfs/overlay.ko" "$i/mods/"
  cat >"$i/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay; do
  insmod /mods/$m.ko
done
P9="trans=virtio,version=9p2000.L,msize=262144"
mount -t 9p -o $P9,ro hostroot /host
mount -t tmpfs tmpfs /up && mkdir -p /up/u /up/w
mount -t overlay overlay -o lowerdir=/host,upperdir=/up/u,workdir=/up/w /newroot
mkdir -p /newroot/lib/modules /newroot/lab
mount -t 9p -o $P9,ro kmods /newroot/lib/modules
mount -t 9p -o $P9 lab /newroot/lab
mount --move /proc /newroot/proc; mount --move /sys /newroot/sys; mount --move /dev /newroot/dev
exec chroot /newroot /bin/sh /lab/guest.sh
INIT
  chmod +x "$i/init"
  (cd "$i" && find . | cpio -o -H newc 2>/dev/null | gzip) >"$kdir/initrd.gz"
}

write_guest_files() { # $1: the run dir shared with the guest as /lab; rest: the command
  local lab=$1 kv
  shift
  pwd >"$lab/cwd"
  printf %s "$IPADDR" >"$lab/ip"
  : >"$lab/env"
  for kv in ${ENVS[@]+"${ENVS[@]}"}; do
    case $kv in *=*) ;; *) kv="$kv=${!kv-}" ;; esac
    [[ ${kv%%=*} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "kernel-lab: bad -e name: ${kv%%=*}" >&2; exit 2; }
    printf 'export %q\n' "$kv" >>"$lab/env"
  done
  printf '%q ' "$@" >"$lab/cmd"
  : >"$lab/stdout"
  : >"$lab/stderr"
  cat >"$lab/guest.sh" <<'GUEST'
#!/bin/sh
# guest side: basic mounts, kernel modules, udev, iscsid; then the command
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp; mkdir -p /run/lock/iscsi /run/lvm
mkdir -p /etc/target  # LIO keeps its dbroot here
WD=$(cat /lab/cwd); mkdir -p "$WD" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work "$WD"
for m in sd_mod loop dm_mod dm_snapshot dm_thin_pool configfs target_core_mod target_core_iblock target_core_file iscsi_target_mod iscsi_tcp; do
  modprobe $m || echo "kernel-lab: modprobe $m failed" >&2
done
mount -t configfs none /sys/kernel/config
ip link set lo up
if [ -s /lab/ip ]; then modprobe virtio_net && udevadm settle -t 10; ip addr add "$(cat /lab/ip)" dev eth0 && ip link set eth0 up; fi
/lib/systemd/systemd-udevd --daemon >/dev/null 2>&1; udevadm trigger; udevadm settle -t 30
grep -q '^InitiatorName=' /etc/iscsi/initiatorname.iscsi 2>/dev/null || echo "InitiatorName=iqn.2004-10.com.debian:lab" > /etc/iscsi/initiatorname.iscsi
iscsid
cd "$WD"
bash -c ". /lab/env; $(cat /lab/cmd)" >> /lab/stdout 2>> /lab/stderr < /dev/null
echo $? > /lab/rc
sync
echo o > /proc/sysrq-trigger
sleep 60  # init must not exit before the power-off lands (that would panic)
GUEST
}

QPID="" LAB_RUN=""
cleanup() {
  [ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true
  [ -z "$LAB_RUN" ] || rm -rf "$LAB_RUN"
}

run_guest() {
  local lab rc=0 kernel
  lab=$(mktemp -d "$LAB_CACHE/run.XXXXXX")
  LAB_RUN=$lab
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  write_guest_files "$lab" "$@"
  kernel=$(ls "$KDIR"/root/boot/vmlinuz-*)
  # shellcheck disable=SC2086 # NETDEV expands to nothing or to two QEMU options
  timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg -m "$MEM" -smp "$CPUS" -nographic -no-reboot \
    -kernel "$kernel" -initrd "$KDIR/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$KDIR/root/lib/modules,mount_tag=kmods,security_model=none,readonly=on" \
    -virtfs "local,path=$lab,mount_tag=lab,security_model=none" \
    -virtfs "local,path=$(pwd),mount_tag=work,security_model=none" \
    ${NETDEV:+-netdev $NETDEV -device virtio-net-pci,netdev=n0,mac=$MAC} \
    >"$lab/console.log" 2>&1 </dev/null &
  QPID=$!
  # Stream the command's output while the guest runs; tail exits once QEMU has gone and the
  # files are drained.
  tail -q -c +1 -F --pid="$QPID" "$lab/stdout" 2>/dev/null &
  local t1=$!
  tail -q -c +1 -F --pid="$QPID" "$lab/stderr" >&2 2>/dev/null &
  local t2=$!
  wait "$QPID" || rc=$?
  QPID=""
  wait "$t1" "$t2" 2>/dev/null || true
  cp "$lab/console.log" "$LAB_CACHE/console.log" 2>/dev/null || true
  # The copy this run's caller asked for: $LAB_CACHE/console.log belongs to the next guest too.
  local console=$LAB_CACHE/console.log
  if [ -n "$LOGCOPY" ] && cp "$lab/console.log" "$LOGCOPY" 2>/dev/null; then console=$LOGCOPY; fi
  if [ $rc -eq 124 ]; then
    echo "kernel-lab: timed out after ${TIMEOUT}s; console log: $console" >&2
    return 124
  fi
  if [ ! -f "$lab/rc" ]; then
    echo "kernel-lab: the guest did not run the command (qemu exit $rc); see $console" >&2
    return 125
  fi
  return "$(cat "$lab/rc")"
}

install_deps
prepare_kernel
[ $PREPARE_ONLY = 1 ] || run_guest "$@"
