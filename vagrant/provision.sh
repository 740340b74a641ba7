#!/bin/bash
# Make a Debian/Ubuntu machine ready to run minipod and its tests: the same set-up as
# `scripts/setup.sh install` (system packages, the venv at <repo>/.venv, the pause binary,
# the busybox image), without starting any pod. Vagrant runs it as root at `vagrant up`;
# on any other machine: sudo vagrant/provision.sh [REPO_DIR]
set -euo pipefail
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
[[ $(id -u) == 0 ]] || { echo "provision.sh: run as root (sudo)" >&2; exit 2; }

echo "== $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r), PID 1 $(cat /proc/1/comm)," \
    "cgroup fs $(stat -fc %T /sys/fs/cgroup)"
# No apt-get update here: setup.sh updates the package lists itself when it has something to
# install, and a box that already has every package (minipod/bookworm-local) may be offline.
exec "$repo/scripts/setup.sh" install
