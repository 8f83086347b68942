#!/usr/bin/env bash
# Prepares bcc on a Debian machine of this kind (run as root by `make install`):
# kernel headers linked for the running kernel, bpffs mounted, bcc importable from
# the project venv. Idempotent; prints what it changed. Not root -> explains and exits 0.
set -euo pipefail
venv_site="${1:-}"
if [ "$(id -u)" != 0 ]; then
  echo "setup-ebpf: not root, skipping (eBPF tests will skip with the reason)"; exit 0
fi
kver="$(uname -r)"
mod="/lib/modules/$kver"
if [ ! -e "$mod/build/Makefile" ]; then
  # this kernel ships no headers: use Debian's cloud headers (sock_addr programs need only UAPI/common types)
  cloud="$( (ls -d /usr/src/linux-headers-*-cloud-amd64 2>/dev/null || true) | sort -V | tail -n 1)"
  if [ -z "$cloud" ]; then
    echo "setup-ebpf: no /usr/src/linux-headers-*-cloud-amd64 (apt package linux-headers-cloud-amd64)"; exit 0
  fi
  common="${cloud%-cloud-amd64}-common"
  mkdir -p "$mod"
  ln -sfn "$cloud" "$mod/build"
  ln -sfn "$common" "$mod/source"
  echo "setup-ebpf: linked $mod/build -> $cloud, $mod/source -> $common"
fi
if ! grep -qs ' /sys/fs/bpf bpf ' /proc/self/mounts; then
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
  echo "setup-ebpf: mounted bpffs at /sys/fs/bpf"
fi
if [ ! -e /sys/kernel/security/lsm ] && grep -qs securityfs /proc/filesystems; then
  # `sealgate egress probe` reads the active LSMs from here (whether the BPF LSM can back the cgroup programs)
  mount -t securityfs securityfs /sys/kernel/security
  echo "setup-ebpf: mounted securityfs at /sys/kernel/security"
fi
if [ -n "$venv_site" ] && [ -d /usr/lib/python3/dist-packages/bcc ] && [ ! -e "$venv_site/bcc" ]; then
  # bcc's Python bindings are pure Python over libbcc: expose just that package to the venv
  ln -sfn /usr/lib/python3/dist-packages/bcc "$venv_site/bcc"
  echo "setup-ebpf: linked bcc into $venv_site"
fi
