"""Faces for the HunyuanPortrait backend: the five points and face box its YOLOv5-face detector gives.

By default they come from MediaPipe's landmarks, with no extra model: the iris centres (the detector's eye
points sit on the pupils, so gaze moves them, which the expression buckets count), the nose tip, the mouth
corners, and the box of the face mesh. This is the mapping the golden HunyuanPortrait fixtures were made
with. For parity with the released code a user-supplied YOLOv5-face TorchScript file can be used instead.

Driving frames without a face keep the previous frame's face (before the first face, the first one found)
and are reported; a reference without a face is an error that says how to place the face by hand.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from ..crop import FaceCrop
from ..errors import FYEInputError
from ..landmarks import FaceLandmarkDetector, FacePlacement, FaceTrack, describe_missing, describe_reference
from ..landmarks.detect import FrameCallback
from ..landmarks.geometry import NUM_MESH_LANDMARKS
from ..landmarks.model_file import sha256_of
from ..landmarks.pipeline import NO_FACE_HELP, detect_reference
from ..landmarks.placement import MOUTH_CORNERS, NOSE_TIP
from .preprocess import CROP_SIZE, source_crop

IRIS_CENTRES = (468, 473)
YOLO_INPUT_SIDE = 416
YOLO_STRIDES = (8, 16, 32)
YOLO_CONFIDENCE = 0.5
YOLO_IOU = 0.45
YOLO_SOURCE = ("yoloface_v5m.pt from HF LeonJoe13/Sonic, the detector the official HunyuanPortrait uses "
               "(YOLOv5-face, deepcam-cn, GPL-3.0)")


@dataclass(frozen=True)
class Face:
    """One face as the detector gives it: ``points`` (5, 2) pixels (eye on the image's left, other eye, nose
    tip, mouth corner left, mouth corner right) and ``box`` (x, y, width, height) pixels."""

    points: np.ndarray
    box: np.ndarray


def _sorted_by_x(points: np.ndarray) -> np.ndarray:
    return points[np.argsort(points[:, 0], kind="stable")]


def mediapipe_face(landmarks: np.ndarray) -> Face:
    """The detector-style face of MediaPipe landmarks (478, >=2) in pixels."""
    landmarks = np.asarray(landmarks, np.float64)[:, :2]
    points = np.concatenate([_sorted_by_x(landmarks[list(IRIS_CENTRES)]), landmarks[NOSE_TIP][None],
                             _sorted_by_x(landmarks[list(MOUTH_CORNERS)])])
    mesh = landmarks[:NUM_MESH_LANDMARKS]
    low = mesh.min(axis=0)
    return Face(points, np.concatenate([low, mesh.max(axis=0) - low]))


def track_face(track: FaceTrack, frame: int = 0) -> Face:
    """The detector-style face of one frame of a MediaPipe track."""
    return mediapipe_face(track.landmarks[frame, :, :2] * [track.width, track.height])


class FaceFinder(Protocol):
    """A face source: ``find`` gives the face of one frame or None; ``find_reference`` the face of a reference
    image (fitted to ``placement`` when given) and how it was found, or raises an error that names ``name``."""

    def find(self, image: np.ndarray) -> Face | None: ...

    def find_reference(self, image: np.ndarray, name: str,
                       placement: FacePlacement | None = None) -> tuple[Face, str]: ...


class MediaPipeFaces:
    """Faces from MediaPipe's landmarks (the default source); the caller owns ``detector``."""

    def __init__(self, detector: FaceLandmarkDetector):
        self.detector = detector

    def find(self, image: np.ndarray) -> Face | None:
        found = self.detector.detect(image)
        if found is None:
            return None
        height, width = image.shape[:2]
        return mediapipe_face(found[0][:, :2] * [width, height])

    def find_reference(self, image: np.ndarray, name: str,
                       placement: FacePlacement | None = None) -> tuple[Face, str]:
        track = detect_reference(image, name=name, detector=self.detector, placement=placement)
        return track_face(track), describe_reference(track)


def _yolo_grids(height: int, width: int) -> list[torch.Tensor]:
    """The detector's anchor grids (1, 1, ny, nx, 2) holding (x, y) per cell, one per stride."""
    grids = []
    for stride in YOLO_STRIDES:
        ys, xs = torch.meshgrid(torch.arange(height // stride), torch.arange(width // stride), indexing="ij")
        grids.append(torch.stack((xs, ys), 2).view(1, 1, height // stride, width // stride, 2).float())
    return grids


def yolo_input_size(height: int, width: int) -> tuple[int, int]:
    """The official input size: the shorter side scaled to 416, both sides rounded up to multiples of 32."""
    scale = YOLO_INPUT_SIDE / min(height, width)
    return int(height * scale + 31) // 32 * 32, int(width * scale + 31) // 32 * 32


def yolo_detections(prediction: torch.Tensor, height: int, width: int, input_height: int,
                    input_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces of the raw output (N, 16) (cx, cy, w, h, objectness, 10 landmark coordinates, class score) of
    an ``input_height`` x ``input_width`` input: confidence = objectness x class score over 0.5, NMS at IoU
    0.45, rescaled to the ``height`` x ``width`` image. Returns points (K, 5, 2), boxes (K, 4) x, y, w, h
    and scores (K,), best first."""
    from torchvision.ops import nms  # imported here: only the opt-in detector needs torchvision

    rows = prediction[prediction[:, 4] > YOLO_CONFIDENCE]
    scores = rows[:, 15] * rows[:, 4]
    rows, scores = rows[scores > YOLO_CONFIDENCE], scores[scores > YOLO_CONFIDENCE]
    corners = torch.cat([rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2], dim=1)
    keep = nms(corners, scores, YOLO_IOU)
    corners = corners[keep].double().numpy().reshape(-1, 2, 2) * [width, height] / [input_width, input_height]
    points = rows[keep, 5:15].double().numpy().reshape(-1, 5, 2) * [width / input_width, height / input_height]
    boxes = np.concatenate([corners[:, 0], corners[:, 1] - corners[:, 0]], axis=1)
    return points, boxes, scores[keep].double().numpy()


class YoloFaces:
    """The official detector, a user-supplied YOLOv5-face TorchScript file (``YOLO_SOURCE``).

    TorchScript is a program, not only weights, so the file is loaded only with ``allow_torchscript=True``;
    its sha256 is computed (``sha256``, ``describe()``) and, with ``expected_sha256``, must match.
    """

    def __init__(self, path, *, allow_torchscript: bool = False, expected_sha256: str | None = None,
                 device: str | torch.device = "cpu"):
        self.path = Path(path)
        if not self.path.is_file():
            raise FYEInputError(f"YOLOv5-face model not found: {self.path}; download {YOLO_SOURCE}, or use the "
                                "MediaPipe face source (no extra model)")
        if not allow_torchscript:
            raise FYEInputError(f"{self.path} is TorchScript, which runs code stored in the file. Load it only if "
                                "you trust its source, by allowing TorchScript for the YOLOv5-face detector; the "
                                "MediaPipe face source needs no extra model")
        self.sha256 = sha256_of(self.path)
        if expected_sha256 is not None and self.sha256 != expected_sha256.lower():
            raise FYEInputError(f"{self.path} has sha256 {self.sha256}, expected {expected_sha256}; it was not "
                                "loaded. Download the file again or give the expected checksum of your copy")
        self.device = torch.device(device)
        self.model = torch.jit.load(str(self.path), map_location=self.device).eval()

    def describe(self) -> str:
        return f"YOLOv5-face TorchScript {self.path.name} (sha256 {self.sha256})"

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All faces of an RGB uint8 image: points (K, 5, 2), boxes (K, 4) x, y, w, h, scores (K,)."""
        height, width = image.shape[:2]
        input_height, input_width = yolo_input_size(height, width)
        resized = cv2.resize(np.ascontiguousarray(image[..., :3]), (input_width, input_height),
                             interpolation=cv2.INTER_LINEAR)
        pixels = torch.from_numpy(resized).permute(2, 0, 1).float().div(255)[None].to(self.device)
        grids = [grid.to(self.device) for grid in _yolo_grids(input_height, input_width)]
        prediction = self.model(pixels, grids).float().cpu()[0]
        return yolo_detections(prediction, height, width, input_height, input_width)

    def find(self, image: np.ndarray) -> Face | None:
        """The largest face (box area), as the official code picks it, or None."""
        points, boxes, _ = self.detect(image)
        if len(boxes) == 0:
            return None
        largest = int(np.argmax(boxes[:, 2] * boxes[:, 3]))
        return Face(points[largest], boxes[largest])

    def find_reference(self, image: np.ndarray, name: str,
                       placement: FacePlacement | None = None) -> tuple[Face, str]:
        if placement is not None:
            track = detect_reference(image, name=name, placement=placement)
            return track_face(track), describe_reference(track)
        face = self.find(image)
        if face is None:
            raise FYEInputError(f"the YOLOv5-face detector found no face in {name}; use the MediaPipe face source "
                                f"(it also searches enlarged crops), or place the face by hand. {NO_FACE_HELP}")
        return face, f"reference face: found by {self.describe()}"


@dataclass(frozen=True)
class DrivingFaces:
    """The face of every driving frame: ``points`` (N, 5, 2), ``boxes`` (N, 4) x, y, w, h (pixels),
    ``detected`` (N,) whether the frame had its own face (the others hold one, see ``held_frames``)."""

    points: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray

    def __len__(self) -> int:
        return len(self.detected)

    @property
    def missing_frames(self) -> list[int]:
        return np.flatnonzero(~self.detected).tolist()

    def report(self) -> str:
        return describe_missing(self)


def held_frames(detected: np.ndarray) -> np.ndarray:
    """For each frame, the frame whose face it uses: its own, else the last one before it with a face, else
    (before the first face) the first face."""
    detected = np.asarray(detected, bool)
    if not detected.any():
        raise FYEInputError(f"no face was found in any of the {len(detected)} driving frames; use a driving video "
                            "that shows one face")
    last_seen = np.maximum.accumulate(np.where(detected, np.arange(len(detected)), -1))
    return np.where(last_seen < 0, np.argmax(detected), last_seen)


def hold_missing(faces: list[Face | None]) -> DrivingFaces:
    """The per-frame faces with frames without one (None) holding a neighbour's face (``held_frames``)."""
    detected = np.array([face is not None for face in faces], bool)
    held = [faces[i] for i in held_frames(detected)]
    return DrivingFaces(np.stack([face.points for face in held]), np.stack([face.box for face in held]), detected)


def faces_from_track(track: FaceTrack) -> DrivingFaces:
    """The driving faces of a MediaPipe track already detected (its filled-in frames count as missing)."""
    return hold_missing([track_face(track, frame) if found else None for frame, found in enumerate(track.detected)])


def driving_faces(frames: Iterable[np.ndarray], finder: FaceFinder, *, total: int | None = None,
                  progress: FrameCallback | None = None) -> DrivingFaces:
    """The face of every driving frame (RGB uint8). ``progress(done, total, frame, points or None)`` is
    called after every frame; raising from it cancels."""
    faces = []
    for index, frame in enumerate(frames):
        faces.append(finder.find(frame))
        if progress is not None:
            progress(index + 1, total, frame, None if faces[-1] is None else faces[-1].points)
    if not faces:
        raise FYEInputError("no driving frames to find faces in")
    return hold_missing(faces)


@dataclass(frozen=True)
class ReferenceFace:
    """The reference as the model sees it: ``crop_box`` (x1, y1, x2, y2) of the source, kept for paste-back;
    ``crop`` (512, 512, 3) uint8; ``face`` found again on the crop (its points align ArcFace); ``source_face``
    on the source image; ``how`` the face was found, for reports."""

    crop_box: tuple[int, int, int, int]
    crop: np.ndarray
    face: Face
    source_face: Face
    how: str


def reference_face(image: np.ndarray, finder: FaceFinder, *, name: str = "the reference image",
                   placement: FacePlacement | None = None) -> ReferenceFace:
    """The official reference preparation: the face of the source image gives the crop box; the face is
    found again on the 512 crop. ``placement`` (pixels of ``image``) places a face no detector finds."""
    source_face, how = finder.find_reference(image, name, placement)
    crop_box, crop = source_crop(image, source_face.box)
    x1, y1, x2, y2 = crop_box
    height, width = image.shape[:2]
    to_crop = FaceCrop(x1, y1, x2 - x1, y2 - y1, CROP_SIZE, CROP_SIZE, width, height).from_source
    face, _ = finder.find_reference(crop, f"the face crop of {name}",
                                    None if placement is None else placement.mapped(to_crop))
    return ReferenceFace(crop_box, crop, face, source_face, how)
