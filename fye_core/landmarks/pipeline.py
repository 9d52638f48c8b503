"""The landmark stages put together: reference and driving tracks -> aligned motion -> landmark frames."""
from __future__ import annotations

import numpy as np

from ..errors import FYEInputError
from .detect import FaceLandmarkDetector, detect_face_track
from .track import FaceTrack


def detect_reference(image: np.ndarray, *, name: str = "the reference image",
                     detector: FaceLandmarkDetector | None = None, model_path=None) -> FaceTrack:
    """The one-frame track of a reference image; a clear error naming ``name`` when it has no face."""
    track = detect_face_track([image], detector=detector, model_path=model_path, mode="image")
    if not track.detected[0]:
        raise FYEInputError(
            f"no face was found in {name}. Use a portrait whose face is clearly visible and not too small "
            "(crop closer to the face if it is far away)")
    return track


def describe_missing(track: FaceTrack) -> str:
    """A one-line report of the frames that had no face, for logs and node outputs."""
    missing = track.missing_frames
    if not missing:
        return f"face found in all {len(track)} frames"
    shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
    return f"no face in {len(missing)} of {len(track)} frames (filled from neighbours): {shown}"
