#!/usr/bin/env bash
# Runs the `fye` command line, building .venv first when needed. Without arguments it runs the
# landmark demo: the shared painting driven by the shared lp_d0 video -> out/landmarks.mp4.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${FYE_SHARED:-$ROOT/../shared}
"$ROOT/scripts/bootstrap.sh"
# Offline machines: use the shared copy of the MediaPipe model rather than downloading it.
if [ -z "${FYE_FACE_LANDMARKER:-}" ] && [ -f "$SHARED/models/face_landmarker_v2_with_blendshapes.task" ]; then
    export FYE_FACE_LANDMARKER="$SHARED/models/face_landmarker_v2_with_blendshapes.task"
fi
if [ $# -eq 0 ]; then
    set -- landmarks --portrait "$SHARED/data/portrait_painting_s9.jpg" \
        --driving "$SHARED/data/lp_d0_driving.mp4" --out "$ROOT/out/landmarks.mp4"
fi
exec "$ROOT/.venv/bin/fye" "$@"
