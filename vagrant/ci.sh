#!/bin/bash
# The Vagrant path, end to end, as CI runs it: a local libvirt box made from the VM harness's
# image, `vagrant up`, the README's test command inside, `vagrant destroy -f`.
#
#   vagrant/ci.sh [-- PYTEST ARGS]      (as root)
#   vagrant/ci.sh --prepare             only install the host tools and build the box (and so
#                                       the harness's image) and the wheelhouse: tests/vm/run.sh
#                                       then needs nothing more, and CI starts both runs at once
#
# Exit code: the suite's (`vagrant ssh -c 'cd /vagrant && sudo scripts/setup.sh test'`); 0 with
# a "SKIPPED:" line on a host that cannot run it at all (not x86_64, no network namespaces, no
# loop device to build the box).
#
# How: tests/vm/vagrant-box.sh builds the box (cached by its inputs, as image.sh caches the
# image) and tests/vm/wheels.sh the wheelhouse the guest installs from (it has no internet).
# libvirtd runs in a network namespace this script creates, so the management network
# (192.168.121.0/24, its bridge and dnsmasq) and every packet to the guest exist only in there,
# and in a private mount namespace, so its config, sockets, state, storage pool and logs live in
# a temporary directory: nothing of it is left on the host, and a libvirt the host may run is
# not touched. Vagrant runs in the same namespaces with its own VAGRANT_HOME, so the box
# registration goes with the run too.
#
# Environment:
#   MINIPOD_VM_CACHE        box, image and wheelhouse cache (default /var/cache/minipod-vm)
#   MINIPOD_VM_ACCEL        auto | kvm | tcg, as tests/vm/run.sh (tcg = libvirt's "qemu" driver)
#   MINIPOD_VAGRANT_TIMEOUT seconds for up + suite + destroy (default 3000)
#   MINIPOD_VAGRANT_KEEP=1  keep the run directory (libvirt logs, the guest's console log)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
box_name=minipod/bookworm-local
log() { echo "vagrant-ci: $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# --- inside the namespaces (the script runs itself again under `ip netns exec`) -------------
pidfile=/run/libvirt/libvirtd.pid   # (globals: the EXIT trap runs after inner() has returned)
upped=0
child=""
# A long command in the background, waited for: bash runs a trap only between commands, so a
# TERM (the timeout) would otherwise wait for `vagrant ssh` to end on its own.
bg() {
    "$@" &
    child=$!
    local rc=0
    wait "$child" || rc=$?
    child=""
    return "$rc"
}
inner() {
    local tmp=$1; shift
    inner_cleanup() {
        local rc=$?
        set +e
        [[ -n $child ]] && kill "$child" 2>/dev/null && wait "$child"
        if ((upped)); then
            vagrant destroy -f >/dev/null 2>&1 || log "vagrant destroy failed"
        fi
        # Whatever vagrant left: domains, then the daemon (which takes dnsmasq with it).
        if [[ -S /run/libvirt/libvirt-sock ]]; then
            for d in $(virsh -q list --all --name 2>/dev/null); do
                virsh -q destroy "$d" >/dev/null 2>&1; virsh -q undefine "$d" --nvram >/dev/null 2>&1
            done
        fi
        if [[ -s $pidfile ]]; then
            local pid; pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        fi
        exit "$rc"
    }
    trap inner_cleanup EXIT
    trap 'exit 143' TERM INT

    ip link set lo up
    # `ip netns exec` gave us a mount namespace whose mounts do not propagate to the host: bind
    # a private tree over each of libvirt's directories. /etc/libvirt is the host's, changed:
    # qemu runs as root with no security driver (it reads the box's kernel under VAGRANT_HOME),
    # logs to files (no virtlogd needed), makes no cgroups (this /sys has none mounted, and
    # nothing may be left in the host's), and no network autostarts but vagrant's own.
    cp -a /etc/libvirt "$tmp/etc-libvirt"
    rm -f "$tmp"/etc-libvirt/qemu/networks/autostart/*.xml
    cat >>"$tmp/etc-libvirt/qemu.conf" <<'EOF'

# minipod vagrant/ci.sh: a private libvirtd in its own network and mount namespaces
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
EOF
    mkdir -p "$tmp/var-lib-libvirt" "$tmp/run-libvirt" "$tmp/var-log-libvirt" "$tmp/var-cache-libvirt"
    cp -a /var/lib/libvirt/. "$tmp/var-lib-libvirt/"
    mount --bind "$tmp/etc-libvirt" /etc/libvirt
    mount --bind "$tmp/var-lib-libvirt" /var/lib/libvirt
    mount --bind "$tmp/run-libvirt" /run/libvirt
    mount --bind "$tmp/var-log-libvirt" /var/log/libvirt
    mount --bind "$tmp/var-cache-libvirt" /var/cache/libvirt

    libvirtd --daemon --pid-file "$pidfile"
    for _ in $(seq 100); do
        virsh -q version >/dev/null 2>&1 && break
        sleep 0.2
    done
    virsh -q version >/dev/null || { log "libvirtd did not start"; exit 1; }

    export VAGRANT_HOME=$tmp/vagrant.d VAGRANT_DOTFILE_PATH=$tmp/dot-vagrant VAGRANT_CWD=$repo/vagrant
    export VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
    export MINIPOD_VAGRANT_BOX=$box_name MINIPOD_VAGRANT_CONSOLE=$tmp/console.log MINIPOD_VAGRANT_DISPOSABLE=1
    local t0 t1 t2 t3 t4 rc=0
    t0=$(now)
    vagrant --no-tty box add --name "$box_name" "$MINIPOD_VAGRANT_BOX_FILE" >/dev/null
    t1=$(now)
    upped=1
    # --no-tty: no progress meter (the box upload would print thousands of them into the log)
    if ! bg vagrant --no-tty up --provider libvirt; then
        log "vagrant up failed; last lines of the guest's console:"
        tail -n 40 "$tmp/console.log" >&2 2>/dev/null
        exit 1
    fi
    t2=$(now)
    bg vagrant ssh -c "cd /vagrant && sudo scripts/setup.sh test$(printf ' %q' "$@")" || rc=$?
    t3=$(now)
    vagrant destroy -f
    upped=0
    t4=$(now)
    echo "== vagrant: box add $(elapsed "$t0" "$t1") s, up (boot + rsync + provision) $(elapsed "$t1" "$t2") s," \
        "suite $(elapsed "$t2" "$t3") s, destroy $(elapsed "$t3" "$t4") s"
    return "$rc"
}
# --- on the host --------------------------------------------------------------------------
# All in functions, called on the last line: bash reads a script as it runs, and this one runs
# for many minutes (a checkout or an edit meanwhile must not change what it does).
skip() { echo "vagrant-ci: SKIPPED: $*"; exit 0; }
main() {
    prepare=0
    [[ ${1:-} == --prepare ]] && { prepare=1; shift; }
    [[ ${1:-} == -- ]] && shift
    [[ ${1:-} == -h || ${1:-} == --help ]] && { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0; }
    [[ $(id -u) == 0 ]] || { log "needs root (libvirtd, network namespaces, the box build)"; exit 2; }
    [[ $(uname -m) == x86_64 ]] || skip "the box is an x86_64 Debian image and this host is $(uname -m)"
    [[ -e /dev/loop-control ]] || skip "no loop device: the box is built by mounting a copy of the image"

    # Host tools, installed when missing (a fresh CI machine has none of them).
    need=(vagrant:vagrant vagrant-libvirt:vagrant-libvirt libvirtd:libvirt-daemon-system
          virsh:libvirt-clients qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils
          dnsmasq:dnsmasq-base rsync:rsync ssh:openssh-client bsdtar:libarchive-tools
          debootstrap:debootstrap mkfs.ext4:e2fsprogs ip:iproute2)
    missing=()
    for n in "${need[@]}"; do
        cmd=${n%%:*} pkg=${n#*:}
        if [[ $cmd == vagrant-libvirt ]]; then
            dpkg-query -W -f='${Status}' vagrant-libvirt 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
        else
            command -v "$cmd" >/dev/null || [[ -x /usr/sbin/$cmd ]] || missing+=("$pkg")
        fi
    done
    /usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        # libvirt-daemon-system's scripts would start libvirtd (and its 192.168.122.0/24 default
        # network) on the host: a policy-rc.d that says no, unless the machine has one already.
        own_policy=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
            own_policy=1
        fi
        export DEBIAN_FRONTEND=noninteractive
        install_rc=0
        apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >/dev/null \
            || { apt-get update >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
            || install_rc=$?
        ((own_policy)) && rm -f /usr/sbin/policy-rc.d
        ((install_rc == 0)) || { log "apt-get install ${missing[*]} failed"; exit 1; }
    fi

    accel=$("$repo/tests/vm/accel.sh")
    case $accel in
        kvm) export MINIPOD_VAGRANT_LIBVIRT_DRIVER=kvm ;;
        tcg) export MINIPOD_VAGRANT_LIBVIRT_DRIVER=qemu ;;   # libvirt's name for TCG
    esac

    tmp=$(mktemp -d /var/tmp/minipod-vagrant.XXXXXX)
    ns=minipod-vagrant-${tmp##*.}
    made_run_libvirt=0
    cleanup() {
        local rc=$?
        set +e
        # The inner script stops what it started; this is the net under it (a timeout, a kill):
        # every process still in our namespace is ours.
        if ip netns list | awk "{ print \$1 }" | grep -qx "$ns"; then
            local pids; pids=$(ip netns pids "$ns")
            [[ -n $pids ]] && kill $pids 2>/dev/null && sleep 2
            pids=$(ip netns pids "$ns"); [[ -n $pids ]] && kill -9 $pids 2>/dev/null
            ip netns delete "$ns"
        fi
        ((made_run_libvirt)) && rmdir /run/libvirt 2>/dev/null
        if [[ ${MINIPOD_VAGRANT_KEEP:-0} == 1 ]]; then log "kept $tmp"; else rm -rf "$tmp"; fi
        exit "$rc"
    }
    trap cleanup EXIT
    trap 'exit 143' TERM INT

    t0=$(now)
    box=$("$repo/tests/vm/vagrant-box.sh")
    t_box=$(elapsed "$t0" "$(now)")
    wheels=$("$repo/tests/vm/wheels.sh")
    export MINIPOD_VAGRANT_BOX_FILE=$box MINIPOD_VAGRANT_WHEELS=$wheels
    # The kubectl clients the API tests drive: the box is offline, so it gets the host's copies
    # (installed by the host's own test run, or here).
    clients=${MINIPOD_TEST_CACHE:-/var/cache/minipod-test}
    MINIPOD_TEST_CACHE=$clients /usr/bin/python3 "$repo/tests/kubectl_clients.py" >&2 || true
    [[ -d $clients ]] && export MINIPOD_VAGRANT_TEST_CACHE=$clients
    if ((prepare)); then
        log "prepared: $box ($t_box s), $wheels"
        exit 0
    fi

    if ! err=$(ip netns add "$ns" 2>&1); then
        skip "cannot create a network namespace for libvirt's management network: $err"
    fi
    # The mount point for the private /run/libvirt (the host's libvirtd would make it; ours is not
    # the host's).
    [[ -d /run/libvirt ]] || { mkdir /run/libvirt && made_run_libvirt=1; }

    log "box $(basename "$box") ($t_box s, 0 = cached), accel $accel, namespace $ns"
    rc=0
    t1=$(now)
    timeout --kill-after=30 "${MINIPOD_VAGRANT_TIMEOUT:-3000}" \
        ip netns exec "$ns" "$here/ci.sh" __inner "$tmp" "$@" </dev/null || rc=$?
    log "box ${t_box} s (0 = cached), vagrant run $(elapsed "$t1" "$(now)") s, accel $accel, exit $rc"
    ((rc == 124)) && log "did not finish within ${MINIPOD_VAGRANT_TIMEOUT:-3000} s"
    exit "$rc"
}

if [[ ${1:-} == __inner ]]; then
    shift
    inner "$@"
    exit $?
fi
main "$@"
