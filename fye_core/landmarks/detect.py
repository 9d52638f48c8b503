"""Face landmarks, blendshapes and metric geometry from MediaPipe Tasks' FaceLandmarker."""
from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np

from ..errors import FYEInputError
from .geometry import load_canonical_face_model, metric_face_geometry
from .model_file import resolve_face_landmarker
from .track import NUM_BLENDSHAPES, NUM_LANDMARKS, FaceTrack, fill_missing

DETECTION_MODES = ("image", "video")
# What MediaPipe's native code logs to stderr each time a landmarker starts: glog info and warning lines
# ("I1206 ..." / "W0000 ...") and TensorFlow Lite's notes. Errors ("E...", "F...") and anything else pass.
_NATIVE_NOISE = re.compile(r"^(?:[IW]\d{4} |INFO: |WARNING: Logging before InitGoogle\(\))")
SMALLEST_FACE = 40  # pixels; smaller faces carry too little detail to animate

# progress(done, total, frame, landmarks or None); total is None when the length is unknown.
FrameCallback = Callable[[int, "int | None", np.ndarray, "np.ndarray | None"], None]


@contextmanager
def _quiet_native_start() -> Iterator[None]:
    """Holds back the native log lines MediaPipe prints to the process's stderr while a landmarker starts.

    The file descriptor is redirected (the lines come from C++, past ``sys.stderr``) to a temporary file, which
    is written back afterwards less the known noise: an error, or anything another thread printed meanwhile,
    still shows.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not _NATIVE_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


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
        with _quiet_native_start():
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
    track = face_track(np.stack(landmarks), np.stack(blendshapes), np.array(detected), size, detector.model_path,
                       fps=fps, source=f"mediapipe-{mode}")
    return fill_missing(track, fill)


def face_track(landmarks: np.ndarray, blendshapes: np.ndarray, detected: np.ndarray, size: tuple[int, int],
               model_path, *, fps: float | None = None, source: str = "mediapipe-image") -> FaceTrack:
    """The track of detections (N, 478, 3) / (N, 51) on frames of ``size`` (height, width), with the metric
    geometry of the detected ones (the canonical face model is read from the ``.task`` at ``model_path``)."""
    height, width = size
    mesh = np.zeros((len(detected), 468, 3))
    transforms = np.tile(np.eye(4), (len(detected), 1, 1))
    if detected.any():
        model = load_canonical_face_model(str(model_path))
        mesh[detected], transforms[detected] = metric_face_geometry(landmarks[detected], width, height, model)
    return FaceTrack(landmarks=landmarks, mesh=mesh, transforms=transforms, blendshapes=blendshapes,
                     detected=detected, width=width, height=height, fps=fps, source=source)


def search_windows(width: int, height: int, smallest: int = 128) -> list[tuple[int, int, int]]:
    """Square windows ``(left, top, side)`` of a half, a quarter, ... of the image's shorter side (not under
    ``smallest``), overlapping by half, larger ones first and central ones first within a size."""
    windows = []
    side = min(width, height) // 2
    while side >= smallest:
        step = side // 2
        lefts = sorted({*range(0, width - side + 1, step), width - side})
        tops = sorted({*range(0, height - side + 1, step), height - side})
        ring = sorted(((left, top) for left in lefts for top in tops),
                      key=lambda p: np.hypot(p[0] + side / 2 - width / 2, p[1] + side / 2 - height / 2))
        windows += [(left, top, side) for left, top in ring]
        side //= 2
    return windows


def _detect_in(detector: FaceLandmarkDetector, image: np.ndarray, left: int, top: int, side_w: int, side_h: int):
    """Detection on a crop of ``image``, with the landmarks in the whole image's normalised coordinates."""
    found = detector.detect(image[top:top + side_h, left:left + side_w])
    if found is None:
        return None
    height, width = image.shape[:2]
    landmarks = found[0] * [side_w / width, side_h / height, side_w / width]
    landmarks[:, :2] += [left / width, top / height]
    return landmarks, found[1]


def detect_small_face(image: np.ndarray, detector: FaceLandmarkDetector,
                      smallest_face: int = SMALLEST_FACE) -> tuple[np.ndarray, np.ndarray] | None:
    """The second chance for a face too small or far for MediaPipe's face detector in the whole image.

    Overlapping windows are searched (``search_windows``). A face found in a window counts only when it is at
    least ``smallest_face`` pixels and is found again, in the same place, on a crop three times its size
    around it (which also sees a face cut by the window's edge whole): MediaPipe sees faces in the texture
    of fur and eyes when it is shown small windows. Returns the landmarks of the second detection in the whole
    image's normalised coordinates and its blendshapes, or None.
    """
    height, width = image.shape[:2]
    for left, top, side in search_windows(width, height):
        found = _detect_in(detector, image, left, top, side, side)
        if found is None:
            continue
        points = found[0][:, :2] * [width, height]
        centre, extent = (points.min(axis=0) + points.max(axis=0)) / 2, np.ptp(points, axis=0).max()
        if extent < smallest_face:
            continue
        x0, y0 = np.maximum(np.floor(centre - 1.5 * extent), 0).astype(int)
        x1, y1 = np.minimum(np.ceil(centre + 1.5 * extent), [width, height]).astype(int)
        again = _detect_in(detector, image, x0, y0, x1 - x0, y1 - y0)
        if again is not None and np.abs(again[0][:, :2] * [width, height] - points).mean() < 0.1 * extent:
            return again
    return None
