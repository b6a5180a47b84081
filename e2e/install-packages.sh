#!/usr/bin/env bash
# install-packages.sh — installs the Debian packages this project's scripts need, when they are
# missing, without starting their daemons on this machine (the kernel lab runs its own iscsid
# and tgtd in a guest). Root only; used by .ci/run, e2e/demo.sh, e2e/bench.sh and
# e2e/python-env.sh.
#
#   e2e/install-packages.sh GROUP...
#
# Groups:
#   build  compiling the driver (Rust itself comes from rustup, not from here)
#   lab    the kernel lab (e2e/lab/kernel-lab.sh) and the tools that run inside it
#   ci     what CI adds: the lab test runner's python3, shellcheck, git
#   python the chart tests' virtualenv (e2e/python-env.sh): python3 with its venv module
#   k8s    the Kubernetes lab (e2e/k8s-lab.sh): etcd, containerd, runc, the CNI plugins,
#          iptables (kube-proxy in the guests), openssl and curl (certificates, readiness),
#          mmdebstrap (the image)
set -euo pipefail

declare -A GROUPS_=(
  [build]="build-essential pkg-config ca-certificates"
  [lab]="qemu-system-x86 busybox-static kmod cpio lvm2 thin-provisioning-tools open-iscsi tgt
         e2fsprogs xfsprogs util-linux udev iproute2"
  [ci]="git python3 shellcheck"
  [python]="python3 python3-venv"
  [k8s]="etcd-server containerd runc containernetworking-plugins iptables conntrack openssl curl mmdebstrap
         busybox-static"
)

[ $# -gt 0 ] || { echo "usage: $0 GROUP... (groups: ${!GROUPS_[*]})" >&2; exit 2; }
wanted=()
for g in "$@"; do
  [ -n "${GROUPS_[$g]+x}" ] || { echo "install-packages: unknown group $g (groups: ${!GROUPS_[*]})" >&2; exit 2; }
  # shellcheck disable=SC2206 # the group lists are word lists
  wanted+=(${GROUPS_[$g]})
done

missing=()
for p in "${wanted[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-packages: all ${#wanted[@]} packages present ($*)"
else
  [ "$(id -u)" = 0 ] || { echo "install-packages: missing ${missing[*]}; run as root to install them" >&2; exit 1; }
  echo "install-packages: installing ${missing[*]}"
  # Installing open-iscsi, tgt and lvm2 must not start their daemons here. A policy-rc.d that
  # denies every start, only for this install.
  policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
  fi
  rc=0
  {
    apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  } || rc=$?
  [ "$own_policy" = 0 ] || rm -f "$policy"
  [ "$rc" = 0 ] || exit "$rc"
fi

# The kernel lab downloads its kernel package with apt: the package lists must be there.
for g in "$@"; do
  if [ "$g" = lab ] &&
    [ -z "$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/')" ]; then
    apt-get update -qq
  fi
done
