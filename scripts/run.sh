#!/usr/bin/env bash
# Runs the `fye` command line, building .venv first when needed. Without arguments it runs the demo on
# the shared painting driven by the shared lp_d0 video: the animation (out/animation.mp4) when the
# models folder (FYE_MODELS, default models/ in the repository) holds the weights, otherwise the
# landmark video (out/landmarks.mp4).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${FYE_SHARED:-$ROOT/../shared}
MODELS=${FYE_MODELS:-$ROOT/models}
"$ROOT/scripts/bootstrap.sh"
# Offline machines: use the shared copy of the MediaPipe model rather than downloading it.
if [ -z "${FYE_FACE_LANDMARKER:-}" ] && [ -f "$SHARED/models/face_landmarker_v2_with_blendshapes.task" ]; then
    export FYE_FACE_LANDMARKER="$SHARED/models/face_landmarker_v2_with_blendshapes.task"
fi
if [ $# -eq 0 ]; then
    DEMO=(--portrait "$SHARED/data/portrait_painting_s9.jpg" --driving "$SHARED/data/lp_d0_driving.mp4")
    if [ -d "$MODELS" ]; then
        set -- animate "${DEMO[@]}" --models "$MODELS" --out "$ROOT/out/animation.mp4"
    else
        echo "no models folder at $MODELS (see README, 'Weights'): running the landmark demo" >&2
        set -- landmarks "${DEMO[@]}" --out "$ROOT/out/landmarks.mp4"
    fi
fi
exec "$ROOT/.venv/bin/fye" "$@"
