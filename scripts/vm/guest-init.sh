#!/bin/sh
# PID 1 of the SocketCAN test VM (runs from the initramfs, busybox only).
# Mounts the host's / read-only with a tmpfs overlay as the guest root, the project folder read-write at the same
# path as on the host, brings up the vcan interfaces, runs the command written by run-in-vm.sh and powers off,
# leaving the command's exit status in the control share.
export PATH=/bin
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t devtmpfs dev /dev
for m in $($bb cat /modules/load-order); do $bb insmod "/modules/$m" 2>/dev/null || echo "vm: insmod $m failed"; done

opts=trans=virtio,version=9p2000.L,msize=512000
$bb mount -t 9p -o $opts,cache=none vmctl /ctl || { echo "vm: control share missing"; $bb poweroff -f; }
fail() { echo "vm: $*"; echo 99 >/ctl/status; $bb sync; $bb poweroff -f; }

$bb mount -t 9p -o $opts,ro,cache=loose hostroot /lower || fail "cannot mount the host root"
$bb mount -t tmpfs -o mode=755 overlay-rw /upper
$bb mkdir -p /upper/data /upper/work
$bb mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work root /root || fail "overlay"
r=/root
$bb mount -t proc proc $r/proc
$bb mount -t sysfs sys $r/sys
$bb mount -t devtmpfs dev $r/dev
$bb mkdir -p $r/dev/pts $r/dev/shm
$bb mount -t devpts -o ptmxmode=666 devpts $r/dev/pts
$bb mount -t tmpfs shm $r/dev/shm
$bb mount -t tmpfs tmp $r/tmp
$bb mount -t tmpfs run $r/run
$bb mkdir -p $r/run/vmctl
$bb mount -o bind /ctl $r/run/vmctl
project=$($bb cat /ctl/project)
$bb mkdir -p "$r$project"
$bb mount -t 9p -o $opts,cache=loose project "$r$project" || fail "cannot mount $project"

$bb hostname vm
$bb ip link set lo up
for ifname in $($bb cat /ctl/vcans); do
  # MTU 72 makes the vcan CAN FD capable.
  $bb ip link add dev "$ifname" type vcan && $bb ip link set "$ifname" mtu 72 up || fail "cannot create $ifname"
done

out=/dev/null err=/dev/null
for port in /sys/class/virtio-ports/*; do
  case $($bb cat "$port/name" 2>/dev/null) in
    stdout) out=/dev/${port##*/} ;;
    stderr) err=/dev/${port##*/} ;;
  esac
done
$bb chroot $r /bin/sh /run/vmctl/command.sh >"$out" 2>"$err" </dev/null
status=$?
$bb sync
echo $status >/ctl/status
$bb sync
$bb umount "$r$project" 2>/dev/null
$bb poweroff -f
