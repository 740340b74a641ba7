#!/bin/bash
# Build (or reuse) the wheelhouse a guest installs from, and print its path:
# <cache>/wheels-<key>, pyproject's runtime + test requirements and the build backend, downloaded
# with Debian's pip (the guest's Python is the same 3.11, so the same wheels fit). <key> hashes
# the requirement list. run.sh shares it with its guest over 9p, vagrant/ci.sh rsyncs it into
# the box, so neither guest needs HTTPS access to PyPI.
# Environment: MINIPOD_VM_CACHE (default /var/cache/minipod-vm), MINIPOD_VM_EXTRA_PIP (more
# requirements, space separated).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${MINIPOD_VM_CACHE:-/var/cache/minipod-vm}
log() { echo "wheels: $*" >&2; }

reqs=$(/usr/bin/python3 - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))
reqs = p["build-system"]["requires"] + ["wheel"] + p["project"].get("dependencies", [])
for extra in p["project"].get("optional-dependencies", {}).values():
    reqs += extra
print("\n".join(sorted(set(reqs))))
PY
)
reqs+=$'\n'$(tr ' ' '\n' <<<"${MINIPOD_VM_EXTRA_PIP:-}")
reqs=$(grep -v '^$' <<<"$reqs" | sort -u)
# (the "built" line: a wheelhouse of this script's older form still held the sources)
wheels="$cache/wheels-$(sha256sum <<<"$reqs"$'\nbuilt' | cut -c1-16)"
if [[ -d $wheels ]]; then
    echo "$wheels"
    exit 0
fi
mkdir -p "$cache"
# Two guests started together (CI runs run.sh and vagrant/ci.sh side by side) must not both
# download: the second mv would move its directory *into* the first one's.
exec 9>"$cache/.wheels.lock"
flock 9
if [[ ! -d $wheels ]]; then
    log "pip download into $wheels: $(tr '\n' ' ' <<<"$reqs")"
    tmp=$(mktemp -d "$cache/.wheels.XXXXXX")
    # shellcheck disable=SC2086
    if ! /usr/bin/python3 -m pip download -q -d "$tmp" $reqs 2>"$tmp.err"; then
        # (the host's pip config may name index directories that do not exist: not the error)
        grep -v 'is ignored: it is neither' "$tmp.err" >&2
        rm -rf "$tmp" "$tmp.err"
        log "pip download failed"
        exit 2
    fi
    rm -f "$tmp.err"
    # Packages that come only as sources (python-prctl, cgroupspy) are built into wheels here:
    # compiling C under TCG in the guest took minutes of every run. Debian 12's python3-dev,
    # gcc and libcap-dev (python-prctl's) must be here for that; without them the guest builds
    # the sources itself, as before (slower, not wrong).
    for sdist in "$tmp"/*.tar.gz; do
        [[ -e $sdist ]] || continue
        if /usr/bin/python3 -m pip wheel -q --no-deps --no-index --find-links "$tmp" \
                -w "$tmp" "$sdist" >/dev/null 2>"$tmp.err"; then
            rm -f "$sdist"
        else
            log "could not build $(basename "$sdist") into a wheel (the guest will): $(tail -n 1 "$tmp.err")"
        fi
    done
    rm -f "$tmp.err"
    mv "$tmp" "$wheels"
fi
echo "$wheels"
