#!/usr/bin/env bash
# Runs one command inside a throw-away qemu VM that boots Debian's stock kernel, so SocketCAN code is tested against
# the real kernel stack (vcan, can-raw, can-isotp, can-gw) on a host whose own kernel has no CAN support.
#
#   scripts/vm/run-in-vm.sh <command> [args...]
#
# The guest's root is the host's / (read-only, writes go to a tmpfs overlay and vanish); the project folder is
# shared read-write at the same path, and the command runs in the current directory. vcan0 and vcan1 are up with
# MTU 72 (CAN FD). The command's stdout and stderr stream to ours; its exit status is ours.
#
# Environment:
#   TELEMATICS_VM_CACHE  kernel and initramfs cache, outside the repo (default ~/.cache/telematics-agent/vm)
#   VM_MEMORY (MiB, 1024)  VM_CPUS (nproc)  VM_TIMEOUT (s, 900)  VM_VCANS ("vcan0 vcan1")
#   VM_ENV                names of host variables to pass into the guest
#   VM_DEBUG=1            show the guest console
# 124: the VM timed out; 125: it ended without the command's status (the console tail is printed).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 <command> [args...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../.." && pwd)
cache=${TELEMATICS_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/telematics-agent/vm}
memory=${VM_MEMORY:-1024}
cpus=${VM_CPUS:-$(nproc)}
timeout_s=${VM_TIMEOUT:-900}
vcans=${VM_VCANS:-vcan0 vcan1}
modules="virtio_pci virtio_console 9pnet_virtio 9p overlay can can-raw can-isotp can-gw can-dev vcan"

case $PWD/ in "$project"/*) ;; *) echo "[vm] run from inside $project (the folder shared with the guest)" >&2; exit 2 ;; esac
"$here/install-deps.sh"

# ---- kernel, modules and initramfs: built once, cached ------------------------------------------------------------
mkdir -p "$cache"
exec 8>"$cache/.lock"
flock 8 # concurrent runs share one cache; only one builds it
kroot=$cache/kernel
if ! ls "$kroot"/boot/vmlinuz-* >/dev/null 2>&1; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  [ -n "$pkg" ] || { echo "[vm] apt does not know linux-image-amd64 (run apt-get update)" >&2; exit 1; }
  echo "[vm] downloading $pkg (once; cached in $cache)" >&2
  tmp=$(mktemp -d "$cache/download.XXXXXX")
  (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || { apt-get update -q >/dev/null 2>&1 || true; (cd "$tmp" && apt-get download -q "$pkg" >/dev/null); }
  dpkg-deb -x "$tmp"/*.deb "$kroot.tmp" && mv "$kroot.tmp" "$kroot"
  rm -rf "$tmp"
fi
vmlinuz=$(ls "$kroot"/boot/vmlinuz-* | sort -V | tail -n 1)
kver=${vmlinuz##*/vmlinuz-}
moddir=$kroot/lib/modules/$kver
[ -s "$moddir/modules.dep" ] || busybox depmod -b "$kroot" "$kver"

# An uncompressed ELF vmlinux boots through PVH and skips the bzImage's self-decompression, seconds under emulation.
kernel=$cache/vmlinux-$kver
if [ ! -s "$kernel" ]; then
  offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -n 1 | cut -d: -f1 || true)
  if [ -n "$offset" ] && tail -c +$((offset + 1)) "$vmlinuz" | xz -dc --single-stream >"$kernel.tmp" 2>/dev/null \
    && [ "$(head -c 4 "$kernel.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
    mv "$kernel.tmp" "$kernel"
  else
    rm -f "$kernel.tmp"
  fi
fi
[ -s "$kernel" ] || kernel=$vmlinuz

initrd=$cache/initramfs-$kver.cpio.gz
if [ ! -s "$initrd" ] || [ "$here/guest-init.sh" -nt "$initrd" ] || [ "$0" -nt "$initrd" ]; then
  tree=$(mktemp -d)
  mkdir -p "$tree"/{bin,dev,proc,sys,ctl,lower,upper,root,modules}
  cp /bin/busybox "$tree/bin/busybox"
  ln -s busybox "$tree/bin/sh"
  cp "$here/guest-init.sh" "$tree/init"
  chmod 755 "$tree/init"
  # Depth-first over modules.dep gives a load order where every module follows its dependencies.
  declare -A loaded=()
  load() {
    local rel=$1 dep
    [ -n "${loaded[$rel]:-}" ] && return
    loaded[$rel]=1
    for dep in $(awk -F': *' -v m="$rel" '$1 == m { print $2 }' "$moddir/modules.dep"); do load "$dep"; done
    local name=${rel##*/}
    case $name in
      *.xz) xz -dc "$moddir/$rel" >"$tree/modules/${name%.xz}"; name=${name%.xz} ;;
      *.zst) zstd -qdc "$moddir/$rel" >"$tree/modules/${name%.zst}"; name=${name%.zst} ;;
      *.gz) gzip -dc "$moddir/$rel" >"$tree/modules/${name%.gz}"; name=${name%.gz} ;;
      *) cp "$moddir/$rel" "$tree/modules/$name" ;;
    esac
    echo "$name" >>"$tree/modules/load-order"
  }
  for m in $modules; do
    rel=$(awk -F: -v m="$m" '{ n = $1; sub(/.*\//, "", n); sub(/\.ko(\.(xz|zst|gz))?$/, "", n); gsub(/_/, "-", n); mm = m; gsub(/_/, "-", mm); if (n == mm) { print $1; exit } }' "$moddir/modules.dep")
    [ -n "$rel" ] || { echo "[vm] kernel $kver has no module $m (built in?)" >&2; continue; }
    load "$rel"
  done
  (cd "$tree" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$tree"
fi
flock -u 8

# ---- one run ------------------------------------------------------------------------------------------------------
ctl=$(mktemp -d "${TMPDIR:-/tmp}/telematics-vm.XXXXXX")
trap 'rm -rf "$ctl"' EXIT
echo "$project" >"$ctl/project"
echo "$vcans" >"$ctl/vcans"
{
  echo "export PATH=$(printf %q "$PATH") HOME=$(printf %q "${HOME:-/root}") TERM=dumb TELEMATICS_IN_VM=1"
  for name in CI ${VM_ENV:-}; do [ -n "${!name+set}" ] && echo "export $name=$(printf %q "${!name}")"; done
  echo "cd $(printf %q "$PWD") || exit 98"
  printf 'exec'
  printf ' %q' "$@"
  echo
} >"$ctl/command.sh"

accel=tcg cpu=max
if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -e /sys/module/kvm_pvm ]; then accel=kvm cpu=host; fi
if [ "${VM_DEBUG:-0}" = 1 ]; then loglevel=7; else loglevel=1; fi
bios=()
[ -f /usr/share/qemu/qboot.rom ] && bios=(-bios /usr/share/qemu/qboot.rom) # much faster than SeaBIOS

# qemu's pipe chardev writes the guest's output to <path>.out; cat copies it to our stdout/stderr.
mkfifo "$ctl/stdout.in" "$ctl/stdout.out" "$ctl/stderr.in" "$ctl/stderr.out"
boot() {
  rm -f "$ctl/status"
  cat "$ctl/stdout.out" &
  local out_pid=$!
  cat "$ctl/stderr.out" >&2 &
  local err_pid=$!
  local console=(-chardev "file,id=console,path=$ctl/console.log")
  [ "${VM_DEBUG:-0}" = 1 ] && console=(-chardev stdio,id=console,signal=off)
  local rc=0
  timeout -k 5 "$timeout_s" qemu-system-x86_64 \
    -machine "q35,accel=$1" -cpu "$2" -smp "$cpus" -m "$memory" \
    -nodefaults -no-user-config -display none -no-reboot -monitor none \
    "${console[@]}" -serial chardev:console "${bios[@]}" \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 loglevel=$loglevel quiet panic=-1 rdinit=/init mitigations=off nokaslr tsc=reliable no_timer_check 8250.nr_uarts=1 i8042.noaux i8042.nokbd" \
    -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
    -fsdev "local,id=vmctl,path=$ctl,security_model=none" \
    -device virtio-9p-pci,fsdev=vmctl,mount_tag=vmctl \
    -fsdev "local,id=project,path=$project,security_model=none,multidevs=remap" \
    -device virtio-9p-pci,fsdev=project,mount_tag=project \
    -device virtio-serial-pci \
    -chardev "pipe,id=stdout,path=$ctl/stdout" -device virtserialport,chardev=stdout,name=stdout \
    -chardev "pipe,id=stderr,path=$ctl/stderr" -device virtserialport,chardev=stderr,name=stderr \
    </dev/null 2>"$ctl/qemu.log" || rc=$?
  # If qemu died before opening a FIFO, its cat still waits in open(): opening the FIFO ourselves ends it.
  local fifo fd
  for fifo in stdout stderr; do exec {fd}<>"$ctl/$fifo.out"; exec {fd}>&-; done
  wait "$out_pid" "$err_pid" 2>/dev/null || true
  return $rc
}

qemu_rc=0
boot "$accel" "$cpu" || qemu_rc=$?
if [ ! -s "$ctl/status" ] && [ "$accel" = kvm ] && [ "$qemu_rc" != 124 ]; then
  echo "[vm] KVM boot failed (qemu exit $qemu_rc); retrying with software emulation" >&2
  qemu_rc=0
  boot tcg max || qemu_rc=$?
fi
if [ -s "$ctl/status" ]; then exit "$(cat "$ctl/status")"; fi
echo "[vm] the guest ended without the command's exit status (qemu exit $qemu_rc)" >&2
cat "$ctl/qemu.log" >&2 || true
[ -f "$ctl/console.log" ] && tail -n 40 "$ctl/console.log" >&2
[ "$qemu_rc" = 124 ] && exit 124
exit 125
