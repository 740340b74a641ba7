#!/bin/bash
# Run the test suite inside a Debian 12 guest whose PID 1 is systemd and whose cgroups are v2:
# the kind of machine minipod's users have, unlike the hybrid, systemd-less hosts we build on.
#
#   tests/vm/run.sh [--cmd 'SHELL COMMAND'] [-- PYTEST ARGS]
#
# Default job: `scripts/setup.sh test PYTEST ARGS` in a copy of this tree inside the guest.
# --cmd runs another shell command there instead (in the copy, same environment).
# Exit code: the guest job's; 124 if the guest did not finish in time, 125 if it never reported.
#
# How: tests/vm/image.sh builds (once, cached by its inputs) a raw ext4 image with debootstrap;
# qemu boots its kernel directly with the image as a throw-away snapshot and three 9p shares
# (repo read-only, a wheelhouse read-only, an out directory). A systemd oneshot in the guest runs
# out/job.sh, writes out/output.log and out/rc, and powers off. No ssh, no guest network needed:
# pip installs from the wheelhouse built here (`pip download` of pyproject's requirements).
#
# Environment:
#   MINIPOD_VM_CACHE    image and wheelhouse cache (default /var/cache/minipod-vm)
#   MINIPOD_VM_ACCEL    auto | kvm | tcg (auto: kvm only with vmx/svm and not PVM's kvm_pvm)
#   MINIPOD_VM_TIMEOUT  seconds for the whole guest run (default 3000)
#   MINIPOD_VM_CPUS / MINIPOD_VM_MEM   default 2 / 2048 (MiB)
#   MINIPOD_VM_EXTRA_PIP  extra requirements for the wheelhouse, space separated
#   MINIPOD_VM_KEEP=1   keep the run directory (console.log, output.log) after the run
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${MINIPOD_VM_CACHE:-/var/cache/minipod-vm}
timeout_s=${MINIPOD_VM_TIMEOUT:-3000}
cpus=${MINIPOD_VM_CPUS:-2}
mem=${MINIPOD_VM_MEM:-2048}

cmd=""
while (($#)); do
    case $1 in
        --cmd) cmd=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (pytest arguments go after --)" >&2; exit 2 ;;
    esac
done
if [[ -z $cmd ]]; then
    cmd="scripts/setup.sh test$(printf ' %q' "$@")"
fi

log() { echo "vm: $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

[[ $(id -u) == 0 ]] || { log "needs root (debootstrap builds the image)"; exit 2; }

# Host tools, installed when missing (a fresh CI machine has none of them).
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi

t0=$(now)
base=$("$here/image.sh")
t_image=$(elapsed "$t0" "$(now)")

# The wheelhouse (pyproject's requirements, `pip download`ed here, cached by that list).
wheels=$("$here/wheels.sh")

out=$(mktemp -d /var/tmp/minipod-vm-run.XXXXXX)
qpid=""
cleanup() {
    [[ -n $qpid ]] && kill "$qpid" 2>/dev/null
    if [[ ${MINIPOD_VM_KEEP:-0} == 1 ]]; then log "kept $out"; else rm -rf "$out"; fi
}
trap cleanup EXIT

# What the guest copies: tracked and untracked-but-not-ignored files (so work in progress is
# tested, and host build products such as .venv or pause/pause are not).
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$repo" -c safe.directory="$repo" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [[ -e $repo/$f ]] && printf '%s\0' "$f"; done >"$out/files"
else
    (cd "$repo" && find . -path ./.venv -prune -o -path ./.git -prune -o -type f -print0) >"$out/files"
fi
printf '%s\n' "$cmd" >"$out/cmd"
cat >"$out/job.sh" <<EOF
set -u
bash /mnt/repo/tests/vm/guest/check.sh
mkdir -p /root/minipod
tar -C /mnt/repo --null -T /mnt/out/files -cf - | tar -C /root/minipod -xf -
cd /root/minipod
export PIP_FIND_LINKS=/mnt/wheels PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 CI=${CI:-}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "== job: \$(cat /mnt/out/cmd)"
start=\$(cut -d' ' -f1 /proc/uptime)
rc=0
bash /mnt/out/cmd || rc=\$?
end=\$(cut -d' ' -f1 /proc/uptime)
echo "== job exit \$rc after \$(awk -v a=\$start -v b=\$end 'BEGIN { printf "%.1f", b - a }') s"
exit \$rc
EOF

accel=$("$here/accel.sh")   # kvm or tcg, the same decision vagrant/ci.sh makes
case $accel in
    kvm) accel_args=(-accel kvm -cpu host) ;;
    tcg) accel_args=(-accel tcg,thread=multi -cpu max) ;;
esac

share() {  # share TAG PATH [ro]
    local ro=""
    [[ ${3:-} == ro ]] && ro=",readonly=on"
    echo "-fsdev local,id=$1,path=$2,security_model=none$ro -device virtio-9p-pci,fsdev=$1,mount_tag=$1"
}
log "boot $(basename "$base").img with $accel, $cpus vCPUs, $mem MiB (timeout ${timeout_s} s)"
t1=$(now)
# tsc=reliable: under TCG the guest kernel may distrust the emulated TSC and fall back to an
# emulated HPET, where every clock read traps (the Vagrant box boots with the same flag).
# shellcheck disable=SC2046
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -name minipod-vm -machine q35 \
    "${accel_args[@]}" -smp "$cpus" -m "$mem" \
    -display none -monitor none -no-reboot -serial "file:$out/console.log" \
    -kernel "$base.vmlinuz" -initrd "$base.initrd" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1 quiet tsc=reliable minipod.runner" \
    -drive "file=$base.img,format=raw,if=virtio,snapshot=on,cache=unsafe" \
    $(share repo "$repo" ro) $(share wheels "$wheels" ro) $(share out "$out") \
    -netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
    -device virtio-rng-pci &
qpid=$!
# Follow the guest's output while it runs: CI shows progress, not silence then a wall of text.
tail -n +1 -F --pid="$qpid" "$out/output.log" 2>/dev/null &
tpid=$!
qrc=0
wait "$qpid" || qrc=$?
qpid=""
wait "$tpid" 2>/dev/null || true
t_guest=$(elapsed "$t1" "$(now)")

booted=$(cat "$out/booted" 2>/dev/null || echo "?")
log "image ${t_image} s (0 = cached), boot to runner ${booted} s (guest uptime), whole guest run ${t_guest} s, accel $accel"
if [[ -s $out/rc ]]; then
    rc=$(cat "$out/rc")
    log "guest job exit code $rc"
    exit "$rc"
fi
if ((qrc == 124 || qrc == 137)); then
    log "guest did not finish within ${timeout_s} s; last console lines:"
    rc=124
else
    log "guest ended (qemu exit $qrc) without reporting an exit code; last console lines:"
    rc=125
fi
tail -n 40 "$out/console.log" >&2 || true
exit "$rc"
