#!/bin/bash
# Build (or reuse) a local Vagrant box for the libvirt provider from the VM harness's image, and
# print its path: <cache>/vagrant-<key>.box. A post-step on image.sh's output, which it leaves
# as it is for run.sh. <key> hashes the base image's key and this script, so an unchanged tree
# never rebuilds and the box always matches the image run.sh boots.
#
# The box (a tar, as `vagrant box add` takes it) holds:
#   box.img        qcow2 of a copy of the base image with what Vagrant needs added: sshd, sudo,
#                  rsync (the synced folder), a `vagrant` user with password-less sudo and
#                  this box's own generated key, DHCP on the first NIC instead of qemu's
#                  user-mode static address
#   vmlinuz initrd the base image's kernel: the image has no partition table and no bootloader,
#                  so libvirt boots the kernel directly (vagrant-libvirt's libvirt.kernel)
#   vagrant_key    the private half of the vagrant user's key (config.ssh.private_key_path)
#   metadata.json, Vagrantfile   provider libvirt, qcow2; the box's defaults (kernel, key)
#
# Needs root, a loop device (the copy is mounted to be changed), qemu-img, and the Debian
# mirror the base image names (apt-get installs the three packages into the copy).
# Environment: MINIPOD_VM_CACHE (default /var/cache/minipod-vm), as image.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MINIPOD_VM_CACHE:-/var/cache/minipod-vm}
log() { echo "box: $*" >&2; }

base=$("$here/image.sh")
key=$( { basename "$base"; cat "$here/vagrant-box.sh"; } | sha256sum | cut -c1-16)
box="$cache/vagrant-$key.box"
if [[ -s $box ]]; then
    echo "$box"
    exit 0
fi
exec 9>"$cache/.vagrant-box.lock"
flock 9
if [[ -s $box ]]; then
    echo "$box"
    exit 0
fi

start=$(date +%s)
work=$(mktemp -d "$cache/.vagrant-box.XXXXXX")   # in the cache: the final mv stays on one fs
mnt=$work/root
cleanup() {
    # Inner mounts first; a failed build must not leave the copy mounted.
    for m in dev/pts dev proc sys ""; do
        mountpoint -q "$mnt/$m" 2>/dev/null && umount -l "$mnt/$m"
    done
    rm -rf "$work"
}
trap cleanup EXIT

log "copy $(basename "$base").img and mount it"
cp --sparse=always "$base.img" "$work/root.img"
mkdir "$mnt"
mount -o loop "$work/root.img" "$mnt"
mount -t proc proc "$mnt/proc"
mount --bind /dev "$mnt/dev"
mount --bind /dev/pts "$mnt/dev/pts"
mount -t sysfs sysfs "$mnt/sys"

log "apt-get install openssh-server sudo rsync"
# No daemon may start from a package script: this chroot shares the host's network.
printf '#!/bin/sh\nexit 101\n' >"$mnt/usr/sbin/policy-rc.d"
chmod 0755 "$mnt/usr/sbin/policy-rc.d"
cp "$mnt/etc/resolv.conf" "$work/resolv.conf"
cp -L /etc/resolv.conf "$mnt/etc/resolv.conf"
chroot "$mnt" env DEBIAN_FRONTEND=noninteractive apt-get -qq update
chroot "$mnt" env DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends \
    openssh-server sudo rsync >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; exit 1; }
chroot "$mnt" apt-get clean
rm -rf "$mnt"/var/lib/apt/lists/*    # as the base image: setup.sh finds everything installed
cp "$work/resolv.conf" "$mnt/etc/resolv.conf"
rm -f "$mnt/usr/sbin/policy-rc.d"

log "configure: vagrant user, sshd, DHCP"
chroot "$mnt" useradd --create-home --shell /bin/bash --uid 1000 --user-group vagrant
# '*': no password that could ever match, but not locked ('!'), so sshd lets the key in.
chroot "$mnt" usermod -p '*' vagrant
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$mnt/etc/sudoers.d/vagrant"
chmod 0440 "$mnt/etc/sudoers.d/vagrant"
# A key of this box's own, not Vagrant's public insecure key; the box carries the private half.
ssh-keygen -q -t ed25519 -N '' -C "minipod/bookworm-local" -f "$work/vagrant_key"
install -d -m 0700 -o 1000 -g 1000 "$mnt/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$work/vagrant_key.pub" "$mnt/home/vagrant/.ssh/authorized_keys"
cat >"$mnt/etc/ssh/sshd_config.d/vagrant.conf" <<'EOF'
PasswordAuthentication no
UseDNS no
EOF
# The host keys were made by openssh-server's postinst in this build: every box build has its
# own, shared by the VMs made from one box (as with any pre-built box).
rm -f "$mnt/etc/systemd/network/10-qemu.network"
cat >"$mnt/etc/systemd/network/10-vagrant.network" <<'EOF'
# The first NIC is vagrant-libvirt's management network: its dnsmasq hands out the address by
# MAC, and Vagrant finds the guest from that lease.
[Match]
Name=en* eth*

[Network]
DHCP=ipv4

[DHCPv4]
ClientIdentifier=mac
EOF
: >"$mnt/etc/resolv.conf"   # no DNS: the box is offline, as the run.sh guest
echo minipod >"$mnt/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 minipod\n' >"$mnt/etc/hosts"

cp "$base.vmlinuz" "$work/vmlinuz"
cp "$base.initrd" "$work/initrd"
for m in dev/pts dev proc sys ""; do umount "$mnt/$m"; done
rmdir "$mnt"

log "qemu-img convert to qcow2"
qemu-img convert -f raw -O qcow2 "$work/root.img" "$work/box.img"
rm "$work/root.img"
size_gb=$(( ($(qemu-img info --output=json "$work/box.img" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') + (1 << 30) - 1) >> 30 ))
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$size_gb" >"$work/metadata.json"
cat >"$work/Vagrantfile" <<'EOF'
# The box's defaults (minipod/bookworm-local, built by minipod's tests/vm/vagrant-box.sh).
# Vagrant loads this file from the box's directory, so __dir__ names the files beside it.
Vagrant.configure("2") do |config|
  config.ssh.username = "vagrant"
  config.ssh.private_key_path = File.join(__dir__, "vagrant_key")
  config.ssh.insert_key = false
  config.vm.provider "libvirt" do |lv|
    # A raw ext4 root, no bootloader: boot the image's own kernel directly.
    lv.kernel = File.join(__dir__, "vmlinuz")
    lv.initrd = File.join(__dir__, "initrd")
    # tsc=reliable: under TCG the vCPUs' TSC is the host's clock, but the kernel, seeing an AMD
    # CPU model without invariant TSC and 2 vCPUs, calls it "unsynchronized" and falls back to
    # the emulated HPET, whose every read is a trip through qemu's device model (and no vDSO).
    # Under KVM the kernel takes kvm-clock either way.
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 tsc=reliable"
    lv.disk_bus = "virtio"
    # The serial console is the only screen: no VNC server (nor, with it, a video card).
    lv.graphics_type = "none"
  end
end
EOF
(cd "$work" && tar -cf box.tar metadata.json Vagrantfile box.img vmlinuz initrd vagrant_key)
mv "$work/box.tar" "$box.tmp" && mv "$box.tmp" "$box"
log "built $box in $(( $(date +%s) - start )) s"

# Keep the two newest boxes, as image.sh keeps two images.
ls -t "$cache"/vagrant-*.box 2>/dev/null | tail -n +3 | xargs -r rm -f
echo "$box"
