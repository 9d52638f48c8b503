#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: builds .venv and the ComfyUI host when needed, then
# runs pytest (extra arguments go to pytest). Needs the shared data (FYE_SHARED, default ../shared).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/bootstrap.sh" --comfyui
cd "$ROOT"
exec .venv/bin/python -m pytest "$@"
