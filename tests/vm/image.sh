#!/bin/bash
# Build (or reuse) the Debian 12 guest image for the VM harness and print its path prefix:
#   <cache>/<key>.img      raw ext4 root filesystem (no partition table: qemu boots the kernel directly)
#   <cache>/<key>.vmlinuz  the distribution kernel, <cache>/<key>.initrd its initramfs
# <key> hashes every input of the image (this script, the package list, the guest runner, suite,
# mirror), so changing any of them builds a new image and an unchanged tree never rebuilds.
#
# Environment: MINIPOD_VM_CACHE (default /var/cache/minipod-vm), MINIPOD_VM_MIRROR
# (default http://deb.debian.org/debian), MINIPOD_VM_SUITE (default bookworm).
# Needs root (debootstrap), debootstrap and mke2fs >= 1.43 (for `mkfs.ext4 -d`: no loop mount).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MINIPOD_VM_CACHE:-/var/cache/minipod-vm}
mirror=${MINIPOD_VM_MIRROR:-http://deb.debian.org/debian}
suite=${MINIPOD_VM_SUITE:-bookworm}
size=${MINIPOD_VM_DISK_SIZE:-8G}   # sparse: the guest's venv, images and pods live here

packages=$(grep -v '^\s*#' "$here/packages.txt" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
key=$( {
    cat "$here/image.sh" "$here/packages.txt" "$here/guest/minipod-vm-runner" \
        "$here/guest/minipod-vm-runner.service"
    echo "$suite $mirror $size"
} | sha256sum | cut -c1-16)
base="$cache/$key"

if [[ -s $base.img && -s $base.vmlinuz && -s $base.initrd ]]; then
    echo "$base"
    exit 0
fi

mkdir -p "$cache"
# One builder at a time: a second run waits for the first and then reuses its image.
exec 9>"$cache/.lock"
flock 9
if [[ -s $base.img && -s $base.vmlinuz && -s $base.initrd ]]; then
    echo "$base"
    exit 0
fi

log() { echo "image: $*" >&2; }
start=$(date +%s)
work=$(mktemp -d /var/tmp/minipod-vm-build.XXXXXX)
# debootstrap leaves /proc and /sys mounted inside the tree when it fails half way.
cleanup() {
    for m in proc sys dev/pts dev; do umount -l "$work/root/$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
root=$work/root

log "debootstrap $suite ($mirror) into $root"
# minbase + exactly our packages: no recommends, so the image holds what we listed and what
# those packages depend on, nothing picked by taste.
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 40 "$work/debootstrap.log" >&2
    exit 1
}

log "configure the guest"
echo minipod-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 minipod-vm\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
# Empty machine-id: each boot gets a fresh transient id, as a cloned cloud image does; a baked-in
# id would be shared by every VM made from this image.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# qemu's user-mode network: a fixed address, no DHCP wait at boot.
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-qemu.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
DNS=10.0.2.3
EOF
echo 'nameserver 10.0.2.3' >"$root/etc/resolv.conf"
ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
# With an empty machine-id systemd treats every boot as the first one; systemd-firstboot would
# then prompt on the console for a locale and wait forever. Timers would only add noise.
for unit in systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    fstrim.timer systemd-networkd-wait-online.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
install -m 0755 "$here/guest/minipod-vm-runner" "$root/usr/local/sbin/minipod-vm-runner"
install -m 0644 "$here/guest/minipod-vm-runner.service" "$root/etc/systemd/system/minipod-vm-runner.service"
ln -sf /etc/systemd/system/minipod-vm-runner.service "$root/etc/systemd/system/multi-user.target.wants/minipod-vm-runner.service"
passwd -R "$root" -d root >/dev/null   # console login for debugging by hand (never networked)
chroot "$root" apt-get clean

kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n 1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd"

log "make the ext4 image ($size, sparse)"
mkfs.ext4 -q -F -L minipod-root -d "$root" "$work/root.img" "$size" >&2  # stdout is our answer

# Move into place last, kernel before image: the image's presence means "complete".
mv "$work/vmlinuz" "$base.vmlinuz.tmp" && mv "$base.vmlinuz.tmp" "$base.vmlinuz"
mv "$work/initrd" "$base.initrd.tmp" && mv "$base.initrd.tmp" "$base.initrd"
mv "$work/root.img" "$base.img.tmp" && mv "$base.img.tmp" "$base.img"
log "built $base.img in $(( $(date +%s) - start )) s"

# Keep the two newest images: older keys belong to inputs that no longer exist.
ls -t "$cache"/*.img 2>/dev/null | tail -n +3 | while read -r old; do
    rm -f "$old" "${old%.img}.vmlinuz" "${old%.img}.initrd"
done
echo "$base"
