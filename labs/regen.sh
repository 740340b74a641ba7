#!/usr/bin/env bash
# Regenerate every ready lab's README (Steps and What you should see) from a real run.
#   labs/regen.sh [LAB...]      as root; MINIPOD_CONFIG is honoured
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${MINIPOD_PYTHON:-$here/../.venv/bin/python}
[ -x "$py" ] || py=python3
labs=("$@")
if [ ${#labs[@]} -eq 0 ]; then
    mapfile -t labs < <("$py" -m minipod lab list | awk '$2 == "ready" {print $1}')
fi
for lab in "${labs[@]}"; do
    "$py" -m minipod lab run "$lab" --record >/dev/null
    echo "$lab: recorded"
done
