#!/bin/bash
# Print the accelerator a guest of this harness should use, kvm or tcg (run.sh and
# vagrant/ci.sh share this decision). MINIPOD_VM_ACCEL=auto|kvm|tcg; auto picks kvm only with
# real KVM: PVM (kvm_pvm) exposes a writable /dev/kvm without hardware virtualisation and cannot
# boot a stock kernel, so real KVM also needs vmx/svm in the CPU flags.
set -euo pipefail
accel=${MINIPOD_VM_ACCEL:-auto}
if [[ $accel == auto ]]; then
    if [[ -w /dev/kvm && ! -d /sys/module/kvm_pvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
        accel=kvm
    else
        accel=tcg
    fi
fi
case $accel in
    kvm|tcg) echo "$accel" ;;
    *) echo "MINIPOD_VM_ACCEL=$accel: expected auto, kvm or tcg" >&2; exit 2 ;;
esac
