#!/bin/bash
# The floor: the same 2-container pod as minipod's, built by a bare shell script with
# unshare/nsenter/ip -- no runtime, no state, no checks. What is left is the kernel's cost plus
# a handful of execs. Used by bench/pods.py; not a runtime (no restart, no logs, no rollback).
#
#   floor.sh up   DIR POD BRIDGE GATEWAY/PREFIX IP LOWERDIR PAUSE
#   floor.sh down DIR POD
#
# DIR holds the pod's pids, overlay dirs and cgroup list; the bridge (BRIDGE, with GATEWAY) must
# exist. The pod: cgroup leaves per controller (v1: memory, cpu, pids; v2: one tree), a pause
# process in new net/ipc/uts/mnt namespaces with its own /dev/shm, a veth with IP and default
# route, and two containers (busybox httpd, sleep) that join the sandbox's namespaces, unshare
# pid+mnt, mount an overlay and chroot into it. `up` returns when both have exec'd.
set -euo pipefail

cmd=$1 dir=$2 pod=$3

cgroup_dirs() {  # the pod's cgroup directory on every hierarchy we use
    if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
        echo "/sys/fs/cgroup/mpf-$pod.slice"
    else
        local c
        for c in memory cpu pids; do echo "/sys/fs/cgroup/$c/mpf-$pod.slice"; done
    fi
}

join() {  # join() LEAF PID: move PID into LEAF on every hierarchy
    local d
    for d in $(cgroup_dirs); do echo "$2" > "$d/$1/cgroup.procs"; done
}

wait_exec() {  # wait until PID runs COMM (it has exec'd its final program)
    local i c
    for ((i = 0; i < 2000; i++)); do
        { read -r c < "/proc/$1/comm"; } 2>/dev/null || c=""
        [ "$c" = "$2" ] && return 0
        sleep 0.001
    done
    echo "floor: $2 (pid $1) did not start" >&2
    return 1
}

up() {
    local bridge=$4 gw=$5 ip=$6 lower=$7 pause=$8 d leaf
    mkdir -p "$dir"
    mkfifo "$dir/go"
    for d in $(cgroup_dirs); do
        for leaf in sandbox web sleep; do mkdir -p "$d/$leaf"; done
    done
    # Sandbox: join the cgroup first (every page it touches is charged to the pod), then
    # unshare and exec pause. unshare -m makes / private, so the shm mount stays in the pod.
    bash -c 'echo $$ > "$1/sandbox.pid"; read -r _ < "$1/go"; exec unshare -n -i -u -m \
        sh -c "hostname $2 && mount -t tmpfs -o mode=1777,size=64m shm /dev/shm && exec $3" ' \
        _ "$dir" "$pod" "$pause" </dev/null >/dev/null 2>&1 &
    local spid
    while [ ! -s "$dir/sandbox.pid" ]; do sleep 0.001; done
    read -r spid < "$dir/sandbox.pid"
    join sandbox "$spid"
    echo go > "$dir/go"
    wait_exec "$spid" "$(basename "$pause" | cut -c1-15)"
    # Network: a veth whose pod end goes straight into the sandbox's netns as eth0.
    local veth="mfv${pod: -8}"
    ip link add "$veth" type veth peer name eth0 netns "/proc/$spid/ns/net"
    ip link set "$veth" master "$bridge" up
    nsenter -t "$spid" -n ip -b - <<EOF
link set lo up
addr add $ip/${gw#*/} dev eth0
link set eth0 up
route add default via ${gw%/*}
EOF
    echo "$veth" > "$dir/veth"
    # Containers: join net/ipc/uts/mnt of the sandbox, unshare pid+mnt (-f: the shell is PID 1
    # of the new pid ns), overlay the image, /proc, chroot, exec.
    local name cpid
    for name in web sleep; do
        mkdir -p "$dir/$name/upper" "$dir/$name/work" "$dir/$name/root"
        case $name in
            web) argv="httpd -f -p 80 -h /" comm=httpd ;;
            sleep) argv="sleep 3600" comm=sleep ;;
        esac
        bash -c 'echo $$ > "$1/$2.pid"; read -r _ < "$1/go"
            exec nsenter -t "$3" -n -i -u -m unshare -p -m -f sh -c "
                mount -t overlay overlay -o lowerdir=$4,upperdir=$1/$2/upper,workdir=$1/$2/work $1/$2/root &&
                mount -t proc proc $1/$2/root/proc &&
                exec chroot $1/$2/root $5"' \
            _ "$dir" "$name" "$spid" "$lower" "$argv" </dev/null >/dev/null 2>&1 &
        while [ ! -s "$dir/$name.pid" ]; do sleep 0.001; done
        read -r cpid < "$dir/$name.pid"
        join "$name" "$cpid"
        echo go > "$dir/go"
        echo "$comm" > "$dir/$name.comm"
    done
    # Both have exec'd when each cgroup leaf holds a process running the final program.
    local first want
    read -r first < <(cgroup_dirs)  # not `| head -1`: with pipefail, SIGPIPE to cgroup_dirs fails the script
    for name in web sleep; do
        local found="" i p c
        read -r want < "$dir/$name.comm"
        for ((i = 0; i < 2000; i++)); do
            while read -r p; do
                { read -r c < "/proc/$p/comm"; } 2>/dev/null || c=""
                [ "$c" = "$want" ] && found=$p
            done < "$first/$name/cgroup.procs"
            [ -n "$found" ] && break
            sleep 0.001
        done
        [ -n "$found" ] || { echo "floor: container $name did not start" >&2; return 1; }
    done
}

down() {
    local d first pids i
    read -r first < <(cgroup_dirs)  # not `| head -1`: with pipefail, SIGPIPE to cgroup_dirs fails the script
    # Kill everything in the pod, wait until every leaf is empty, then remove the leaves.
    for ((i = 0; i < 2000; i++)); do
        pids=$(cat "$first"/*/cgroup.procs 2>/dev/null || true)
        [ -z "$pids" ] && break
        kill -9 $pids 2>/dev/null || true
        sleep 0.001
    done
    if [ -s "$dir/veth" ]; then ip link del "$(cat "$dir/veth")" 2>/dev/null || true; fi
    for d in $(cgroup_dirs); do
        [ -d "$d" ] || continue
        for ((i = 0; i < 200; i++)); do
            rmdir "$d"/*/ "$d" 2>/dev/null && break
            sleep 0.001
        done
    done
    rm -rf "$dir"
}

case $cmd in
    up) up "$@" ;;
    down) down ;;
    *) echo "usage: floor.sh up|down DIR POD ..." >&2; exit 2 ;;
esac
