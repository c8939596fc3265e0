#!/usr/bin/env bash
# The README's first command: install voxmill and render the sample chapter in the sample voice,
# in-process (SQLite + a local folder, no servers). With the official models (fetched on first
# run when online) the audio is real speech; offline, voxmill says exactly which files are
# missing and then runs the same pipeline on tiny random models so every stage still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/bootstrap.sh
status=0
.venv/bin/voxmill demo "$@" || status=$?
if [[ $status -eq 3 ]]; then  # 3: the official models are missing and could not be fetched
  echo
  echo "→ running the same pipeline on tiny random models (the audio is noise):"
  exec .venv/bin/voxmill demo --tiny "$@"
fi
exit $status
