"""Face landmarks, blendshapes and metric geometry from MediaPipe Tasks' FaceLandmarker."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ..errors import FYEInputError
from .geometry import load_canonical_face_model, metric_face_geometry
from .model_file import resolve_face_landmarker
from .track import NUM_BLENDSHAPES, NUM_LANDMARKS, FaceTrack, fill_missing

DETECTION_MODES = ("image", "video")

# progress(done, total, frame, landmarks or None); total is None when the length is unknown.
FrameCallback = Callable[[int, "int | None", np.ndarray, "np.ndarray | None"], None]


class FaceLandmarkDetector:
    """One MediaPipe FaceLandmarker (one face, blendshapes on), as the official extractor configures it.

    ``mode="image"`` detects every frame independently (the official behaviour); ``"video"`` uses
    MediaPipe's tracking between frames, which is faster and smoother but not what the official did.
    """

    def __init__(self, model_path=None, mode: str = "image", search_dirs=(), download_dir=None):
        if mode not in DETECTION_MODES:
            raise ValueError(f"detection mode must be one of {DETECTION_MODES}, got {mode!r}")
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self.model_path = resolve_face_landmarker(model_path, search_dirs, download_dir=download_dir)
        self.mode = mode
        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO if mode == "video" else vision.RunningMode.IMAGE,
            num_faces=1,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._timestamp_ms = -1

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> FaceLandmarkDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Landmarks (478, 3) and blendshapes (51,) of one RGB uint8 frame, or None without a face."""
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame[..., :3]))
        if self.mode == "video":
            # Strictly increasing timestamps are all MediaPipe needs; frame spacing does not matter.
            self._timestamp_ms += 33
            result = self._landmarker.detect_for_video(image, self._timestamp_ms)
        else:
            result = self._landmarker.detect(image)
        if not result.face_landmarks:
            return None
        landmarks = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], np.float64)
        blendshapes = np.array([c.score for c in result.face_blendshapes[0][1:]], np.float64)
        return landmarks, blendshapes


def detect_face_track(
    frames: Iterable[np.ndarray],
    *,
    detector: FaceLandmarkDetector | None = None,
    model_path=None,
    mode: str = "image",
    fill: str = "hold",
    fps: float | None = None,
    total: int | None = None,
    progress: FrameCallback | None = None,
) -> FaceTrack:
    """Detects every frame (RGB uint8, all the same size) and builds the track with its metric geometry.

    Frames without a face get ``detected=False`` and values filled by ``fill`` ("hold" or "interpolate").
    ``progress`` is called after every frame; raising from it cancels.
    """
    own = detector is None
    detector = detector or FaceLandmarkDetector(model_path, mode)
    landmarks, blendshapes, detected, size = [], [], [], None
    try:
        for index, frame in enumerate(frames):
            if size is None:
                size = frame.shape[:2]
            elif frame.shape[:2] != size:
                raise FYEInputError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, but the first frame is "
                                    f"{size[1]}x{size[0]}; all frames must have one size")
            found = detector.detect(frame)
            detected.append(found is not None)
            landmarks.append(found[0] if found else np.zeros((NUM_LANDMARKS, 3)))
            blendshapes.append(found[1] if found else np.zeros(NUM_BLENDSHAPES))
            if progress is not None:
                progress(index + 1, total, frame, found[0] if found else None)
    finally:
        if own:
            detector.close()
    if size is None:
        raise FYEInputError("no frames to detect faces in")
    height, width = size
    landmarks = np.stack(landmarks)
    detected = np.array(detected)
    mesh = np.zeros((len(detected), 468, 3))
    transforms = np.tile(np.eye(4), (len(detected), 1, 1))
    if detected.any():
        model = load_canonical_face_model(str(detector.model_path))
        mesh[detected], transforms[detected] = metric_face_geometry(landmarks[detected], width, height, model)
    track = FaceTrack(landmarks=landmarks, mesh=mesh, transforms=transforms, blendshapes=np.stack(blendshapes),
                      detected=detected, width=width, height=height, fps=fps, source=f"mediapipe-{mode}")
    return fill_missing(track, fill)
