#!/usr/bin/env bash
# Installs what the SocketCAN test VM needs on a Debian host: qemu (the VM), a static busybox (its initramfs),
# can-utils (peers that nobody on this project wrote: cangen, cansend, candump, isotpsend, isotprecv) and iproute2.
# Idempotent and quiet when everything is there. Exits non-zero, naming what is missing, when it cannot install.
set -euo pipefail

# command the package provides -> package
declare -A provides=(
  [qemu-system-x86_64]=qemu-system-x86
  [candump]=can-utils
  [ip]=iproute2
  [xz]=xz-utils
)
missing=()
for cmd in "${!provides[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${provides[$cmd]}")
done
# The initramfs needs a busybox that runs without shared libraries.
if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then missing+=(busybox-static); fi
[ -f /usr/share/qemu/qboot.rom ] || missing+=(qemu-system-data)

[ ${#missing[@]} -eq 0 ] && exit 0

echo "[vm] installing: ${missing[*]}" >&2
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[vm] cannot install (need root and apt-get). Install these Debian packages: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/telematics-vm-apt.log 2>&1; then
  apt-get update -q >>/tmp/telematics-vm-apt.log 2>&1 || true
  apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/telematics-vm-apt.log 2>&1 || {
    echo "[vm] apt-get install ${missing[*]} failed; see /tmp/telematics-vm-apt.log" >&2
    exit 1
  }
fi
