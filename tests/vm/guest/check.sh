#!/bin/bash
# Prints what kind of host the guest is, for the CI log and the README's "Where it runs".
echo "== guest: $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r), $(nproc) CPUs, $(free -m | awk '/^Mem:/{print $2}') MiB"
echo "== PID 1: $(cat /proc/1/comm); $(systemctl --version | head -n 1)"
echo "== /sys/fs/cgroup: $(stat -fc %T /sys/fs/cgroup)"
echo "== root cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
echo "== root cgroup.subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null)"
echo "== $(python3 --version), D-Bus system bus: $(test -S /run/dbus/system_bus_socket && echo yes || echo no)"
