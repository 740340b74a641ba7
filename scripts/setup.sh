#!/usr/bin/env bash
# Set up minipod on a Debian 12 / Ubuntu 24.04 machine, as root, idempotently.
#   scripts/setup.sh install   install what is missing (packages, venv, pause, busybox image)
#   scripts/setup.sh demo      install, then run a pod from specs/ and show it
#   scripts/setup.sh test      install, then run the whole test suite (exit code = pytest's)
set -euo pipefail

mode=${1:-install}
shift || true
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MINIPOD_VENV:-$repo/.venv}
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "scripts/setup.sh: run as root (sudo $0 $mode)" >&2; exit 1; }

packages=(python3 python3-venv python3-dev gcc libc6-dev libcap-dev make iproute2 iptables
          busybox-static procps kmod python3-seccomp)
# The tests run a real registry (Debian's docker-registry) on 127.0.0.1, and strace holds
# processes at execve for the CVE-2019-5736 tests.
[ "$mode" = test ] && packages+=(docker-registry strace)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
modprobe overlay 2>/dev/null || true
# On a systemd host the package starts a registry on *:5000 that nobody asked for.
if [ "$mode" = test ] && [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

# The distribution's Python, not whatever python3 comes first on PATH.
py=/usr/bin/python3
stamp="$venv/.minipod-installed"
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    "$py" -m venv "$venv"
fi
# scripts/minipod too: pip copies it into the venv (an editable install links only the package)
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ] || [ "$repo/scripts/minipod" -nt "$stamp" ]; then
    say "installing minipod and its dependencies into $venv"
    # compat: a plain .pth path entry; the default editable finder costs every start ~30 ms
    "$venv/bin/pip" install -q --disable-pip-version-check --config-settings editable_mode=compat -e "$repo[test]"
    touch "$stamp"
fi
# seccompProfile: libseccomp's own Python binding, as the distribution builds it against its
# libseccomp (see minipod/kernel/seccomp.py for why not PyPI's). Only that one module is linked
# into the venv: the rest of dist-packages stays out of it.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
ext=$("$venv/bin/python" -c 'import importlib.machinery as m; print(m.EXTENSION_SUFFIXES[0])')
if [ -e "/usr/lib/python3/dist-packages/seccomp$ext" ]; then
    ln -sf "/usr/lib/python3/dist-packages/seccomp$ext" "$site/seccomp$ext"
fi
for helper in pause janitor; do  # the two C helpers (pause/); rebuilt when their source changed
    bin="$venv/libexec/minipod/$helper"
    if [ ! -x "$bin" ] || [ "$repo/pause/$helper.c" -nt "$bin" ]; then
        say "building pause and janitor"
        make -s -C "$repo/pause" install PREFIX="$venv"
        break
    fi
done
# Byte-code now: where PYTHONDONTWRITEBYTECODE is set, every command would compile minipod anew.
"$venv/bin/python" -m compileall -q "$repo/minipod" >/dev/null
ln -sf "$venv/bin/minipod" /usr/local/bin/minipod
"$venv/bin/python" -m minipod.images.busybox >/dev/null

case "$mode" in
install)
    say "minipod is installed: $(minipod version)"
    ;;
demo)
    exec "$repo/scripts/demo.sh"
    ;;
test)
    cd "$repo"
    # The real kubectl clients of tests/integration/test_kubectl.py, pinned (1.35 and 1.20).
    "$venv/bin/python" tests/kubectl_clients.py || true
    # Test paths among the arguments (tests/integration/test_x.py[::name]) run instead of the
    # whole suite; other arguments (-k, -x, --durations) go to pytest with it.
    paths=(tests)
    for a in "$@"; do
        [[ -e ${a%%::*} ]] && { paths=(); break; }
    done
    say "running ${paths[*]:-the named tests}"
    exec "$venv/bin/pytest" -q -rs "$@" "${paths[@]}"
    ;;
*)
    echo "usage: $0 install|demo|test" >&2
    exit 2
    ;;
esac
