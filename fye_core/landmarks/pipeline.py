"""The landmark stages put together: reference and driving tracks -> aligned motion -> landmark frames."""
from __future__ import annotations

import numpy as np

from ..errors import FYEInputError
from .detect import FaceLandmarkDetector, detect_face_track, detect_small_face, face_track
from .geometry import load_canonical_face_model
from .placement import FacePlacement, fit_face_track
from .track import FaceTrack

NO_FACE_HELP = (
    "MediaPipe finds no face in many animals and cartoons: give the face's place instead, with --face-box "
    "X,Y,W,H or --face-points '[[x,y] x 5]' (eye on the image's left, eye on the right, nose tip, mouth corner "
    "left, mouth corner right; pixels of the portrait) on the command line, or the FYE Place Face node in ComfyUI")
REFERENCE_SOURCES = {
    "mediapipe-image": "found by MediaPipe",
    "mediapipe-enlarged-crop": "found by MediaPipe on an enlarged crop (a small or far face)",
    "face-box": "the canonical face fitted to the face box",
    "face-points": "the canonical face fitted to the five face points",
}


def detect_image(image: np.ndarray, detector: FaceLandmarkDetector) -> FaceTrack:
    """The one-frame track of an image: MediaPipe on the whole image, then on enlarged crops for a small or
    far face; ``detected`` is False when neither finds one. ``track.source`` tells which found it."""
    track = detect_face_track([image], detector=detector, mode="image")
    if track.detected[0]:
        return track
    found = detect_small_face(image, detector)
    if found is None:
        return track
    return face_track(found[0][None], found[1][None], np.ones(1, bool), image.shape[:2], detector.model_path,
                      source="mediapipe-enlarged-crop")


def detect_reference(image: np.ndarray, *, name: str = "the reference image",
                     detector: FaceLandmarkDetector | None = None, model_path=None,
                     placement: FacePlacement | None = None) -> FaceTrack:
    """The one-frame track of a reference image: the canonical face fitted to ``placement`` when given, else
    ``detect_image``; without a face, an error that names ``name`` and says how to place the face by hand."""
    own = detector is None
    detector = detector or FaceLandmarkDetector(model_path, "image")
    try:
        if placement is not None:
            height, width = image.shape[:2]
            placement.check_inside(width, height, name)
            return fit_face_track(placement, width, height, load_canonical_face_model(str(detector.model_path)))
        track = detect_image(image, detector)
    finally:
        if own:
            detector.close()
    if not track.detected[0]:
        raise FYEInputError(f"no face was found in {name}, not even on enlarged crops. {NO_FACE_HELP}")
    return track


def describe_reference(track: FaceTrack) -> str:
    """Which path made a reference track, for logs and node reports."""
    return f"reference face: {REFERENCE_SOURCES.get(track.source, track.source)}"


def describe_missing(track: FaceTrack) -> str:
    """A one-line report of the frames that had no face, for logs and node outputs."""
    missing = track.missing_frames
    if not missing:
        return f"face found in all {len(track)} frames"
    shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
    return f"no face in {len(missing)} of {len(track)} frames (filled from neighbours): {shown}"
