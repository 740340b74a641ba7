#!/bin/bash
# Benchmark a 2-container busybox pod: minipod vs podman (pod create + 2x run, and kube play)
# vs a bare shell floor, side by side, in one run. See bench/README.md.
#
#   sudo bench/run.sh [-n ITERATIONS] [--quick] [--rev GITREV] [--no-podman] [--no-floor]
#                     [pods.py options]
#
# --rev measures minipod/ as committed at GITREV (exported read-only) instead of the working tree.
#
# Needs root, the repo's .venv (scripts/setup.sh) and busybox-static. Installs podman, runc,
# catatonit and conmon with apt if they are missing; if that is impossible it measures minipod
# (and the floor) alone and says why. Everything it creates is named with a random tag and
# removed at the end, also on Ctrl-C or failure (trap). It never edits /etc/containers: podman
# gets its configuration through CONTAINERS_CONF / CONTAINERS_STORAGE_CONF files in the work dir.
# Results: stdout, and bench/results/last.{txt,json}.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=$REPO/.venv/bin/python

if [ "$(id -u)" != 0 ]; then
    echo "bench/run.sh: run as root" >&2
    exit 2
fi
if [ ! -x "$PY" ] || [ ! -x "$REPO/.venv/bin/minipod" ]; then
    echo "bench/run.sh: $REPO/.venv with minipod is missing (run scripts/setup.sh first)" >&2
    exit 2
fi

args=()
no_podman=""
rev=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) args+=(-n 3 --warmup 1 --cli-iterations 3 --trace 2) ;;
        --no-podman) no_podman="disabled with --no-podman" ;;
        --rev) rev=$2; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exec "$PY" "$HERE/pods.py" --help ;;
        *) args+=("$1") ;;
    esac
    shift
done

TAG=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
WORK=/var/tmp/minipod-bench.$TAG
mkdir -p "$WORK" "$HERE/results"

cleaned=""
cleanup() {
    [ -n "$cleaned" ] && return
    cleaned=1
    # Idempotent: pods.py already cleaned up unless it was killed; this catches the rest.
    "$PY" "$HERE/pods.py" --work "$WORK" --tag "$TAG" --cleanup-only || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP

if ! [ -x /bin/busybox ]; then
    echo "[bench] installing busybox-static" >&2
    apt-get -o DPkg::Lock::Timeout=600 install -y busybox-static >/dev/null 2>&1 || {
        echo "bench/run.sh: busybox-static is missing and could not be installed" >&2
        exit 1
    }
fi

if [ -z "$no_podman" ]; then
    missing=()
    for b in podman runc catatonit conmon; do
        command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "[bench] installing ${missing[*]} (apt)" >&2
        if ! apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
                podman runc catatonit conmon >"$WORK/apt.log" 2>&1; then
            no_podman="apt-get install podman runc catatonit conmon failed: $(tail -1 "$WORK/apt.log")"
        fi
    fi
    if [ -z "$no_podman" ] && ! podman --version >/dev/null 2>&1; then
        no_podman="podman is installed but 'podman --version' fails"
    fi
fi
[ -n "$no_podman" ] && args+=(--no-podman "$no_podman")

if [ -n "$rev" ]; then
    # Measure a commit, not the working tree (which others may be editing): a read-only
    # export of minipod/ at REV, imported through PYTHONPATH (see pods.py --source).
    mkdir -p "$WORK/src"
    if ! git -C "$REPO" archive "$rev" minipod | tar -x -C "$WORK/src"; then
        echo "bench/run.sh: cannot export minipod/ at $rev" >&2
        exit 2
    fi
    args+=(--source "$WORK/src" --source-label "commit $(git -C "$REPO" rev-parse --short "$rev") ($rev)")
fi

if pgrep -f '(^|/)qemu-system' >/dev/null; then
    echo "[bench] note: a qemu VM is running (it takes CPU); the results say so" >&2
fi

"$PY" "$HERE/pods.py" --work "$WORK" --tag "$TAG" --json "$HERE/results/last.json" "${args[@]}" \
    | tee -i "$HERE/results/last.txt"
rc=${PIPESTATUS[0]}
cleanup
exit "$rc"
