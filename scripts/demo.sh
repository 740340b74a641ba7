#!/usr/bin/env bash
# A two-minute tour: run specs/web.yaml detached, look at it, talk to it, remove it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
cleanup() { minipod rm -f web >/dev/null 2>&1 || true; }
trap cleanup EXIT
minipod rm -f web >/dev/null 2>&1 || true

step minipod run -d "$repo/specs/web.yaml"
step minipod ps
ip=$(minipod get pod web -o json | "$repo/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["status"]["podIP"])')
echo; echo "pod IP: $ip"
# The container is running; its httpd needs a moment more to listen (no readiness probe here).
for _ in $(seq 50); do busybox wget -q -O /dev/null "http://$ip/" 2>/dev/null && break; sleep 0.1; done
step busybox wget -q -O- "http://$ip/"
step minipod exec web -c shell -- wget -q -O- http://localhost/
step minipod exec web -c shell -- hostname
echo; echo "namespaces (sandbox, then each container):"
minipod inspect web | "$repo/.venv/bin/python" -c '
import json, sys
p = json.load(sys.stdin)
print("  sandbox ", p["sandbox"]["pid"], p["sandbox"]["namespaces"])
for c in p["containers"]:
    print("  %-8s" % c["name"], c["pid"], c["namespaces"])'
sleep 1
step minipod logs web -c web
step minipod rm -f web
trap - EXIT
