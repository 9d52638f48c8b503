"""A face placed by hand, for portraits MediaPipe cannot find (cats, llamas, cartoon animals).

MediaPipe's canonical face mesh is posed so that its projection fits a face box (frontal, centred, scaled to
the box) or five points (eyes, nose tip, mouth corners; head rotation, position and depth fitted), giving the same
kind of one-frame reference track the detector gives: landmarks, metric mesh, pose and a neutral face.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..errors import FYEInputError
from .align import pose_matrices, project_points
from .geometry import NEAR, NUM_MESH_LANDMARKS, CanonicalFaceModel, frustum
from .regions import LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR
from .track import NUM_BLENDSHAPES, NUM_LANDMARKS, FaceTrack

NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)  # image left, image right on a face looking at the camera
IRIS_RADIUS_OF_EYE_WIDTH = 0.2
INITIAL_DEPTH_CM = 50.0


@dataclass(frozen=True)
class FacePlacement:
    """Where the face is in pixels of the portrait: a box ``(x, y, width, height)`` and/or five points
    (eye on the image's left, eye on the image's right, nose tip, mouth corner left, mouth corner right).
    The points, being more precise, win when both are given."""

    box: tuple[float, float, float, float] | None = None
    points: np.ndarray | None = None

    def __post_init__(self):
        if self.box is None and self.points is None:
            raise FYEInputError("a face placement needs a face box or five face points")
        if self.box is not None and (len(self.box) != 4 or not min(self.box[2:]) > 0):
            raise FYEInputError(f"the face box must be X,Y,WIDTH,HEIGHT with a positive size, got {self.box}")
        if self.points is not None:
            points = np.asarray(self.points, np.float64)
            if points.shape != (5, 2) or not np.isfinite(points).all():
                raise FYEInputError("face points must be five [x, y] pairs: eye on the image's left, eye on the "
                                    "image's right, nose tip, mouth corner left, mouth corner right")
            if points[0, 0] >= points[1, 0]:
                raise FYEInputError("the first face point must be the eye on the image's left, the second the eye "
                                    f"on the image's right; got eyes at x = {points[0, 0]:g} and {points[1, 0]:g}")
            object.__setattr__(self, "points", points)

    @property
    def kind(self) -> str:
        return "face-points" if self.points is not None else "face-box"

    def check_inside(self, width: int, height: int, name: str = "the portrait") -> None:
        """Points must lie in the image; a box must overlap it (a face may be cut by the image's edge)."""
        if self.points is not None:
            outside = (self.points.min(axis=0) < 0).any() or (self.points.max(axis=0) > [width, height]).any()
        else:
            x, y, box_w, box_h = self.box
            outside = x >= width or y >= height or x + box_w <= 0 or y + box_h <= 0
        if outside:
            raise FYEInputError(f"the {self.kind.replace('-', ' ')} {self.describe()} is not inside {name} "
                                f"({width}x{height} pixels); give it in pixels of the original portrait")

    def mapped(self, transform: Callable[[np.ndarray], np.ndarray]) -> FacePlacement:
        """The placement in other pixels (``transform``: points (K, 2) -> (K, 2), axis-aligned for boxes)."""
        box = None
        if self.box is not None:
            (x0, y0), (x1, y1) = transform(np.array([self.box[:2], np.add(self.box[:2], self.box[2:])]))
            box = (x0, y0, x1 - x0, y1 - y0)
        return FacePlacement(box, None if self.points is None else transform(self.points))

    def describe(self) -> str:
        if self.points is not None:
            return json.dumps(np.round(self.points, 1).tolist())
        return ",".join(f"{v:g}" for v in self.box)


def parse_face_box(text: str) -> tuple[float, float, float, float]:
    """``"X,Y,W,H"`` -> the box (for the command line)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise FYEInputError(f"--face-box must be X,Y,W,H in pixels of the portrait, e.g. 70,10,320,290; got {text!r}")
    return values


def parse_face_points(text: str) -> np.ndarray:
    """``"[[x,y], ...]"`` (five pairs, JSON) -> (5, 2) points (for the command line and the node)."""
    try:
        points = np.asarray(json.loads(text), np.float64)
    except (ValueError, TypeError):
        points = np.zeros(0)
    if points.shape != (5, 2):
        raise FYEInputError("face points must be JSON with five [x, y] pairs: eye on the image's left, eye on the "
                            "image's right, nose tip, mouth corner left, mouth corner right, e.g. "
                            f"[[170,115],[318,135],[262,240],[228,272],[296,276]]; got {text!r}")
    return points


def mask_box(mask: np.ndarray, size: tuple[int, int], name: str = "the face box") -> tuple[int, int, int, int]:
    """The bounding box (x, y, width, height) of a mask (H, W) painted over the face of an image of ``size``
    (height, width); ``name`` says where the mask was given, in errors."""
    if mask.shape != size:
        raise FYEInputError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is {size[1]}x{size[0]}; "
                            f"paint the mask on the image given to {name}")
    painted = mask > 0.5
    rows, cols = np.flatnonzero(painted.any(axis=1)), np.flatnonzero(painted.any(axis=0))
    if len(rows) == 0:
        raise FYEInputError(f"the mask given to {name} is empty; paint over the face")
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def five_points(points: np.ndarray) -> np.ndarray:
    """The five placement points (5, 2) of face landmarks ``points`` (>=468, 2): eye centres (mean of the eye
    contours), nose tip, mouth corners."""
    points = np.asarray(points)[..., :2]
    return np.stack([points[RIGHT_EYE_CONTOUR].mean(axis=0), points[LEFT_EYE_CONTOUR].mean(axis=0),
                     points[NOSE_TIP], points[MOUTH_CORNERS[0]], points[MOUTH_CORNERS[1]]])


def _project(vertices: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels of ``vertices`` posed by ``pose``: Euler angles xyz (degrees) and translation (cm)."""
    return project_points(vertices[None], pose_matrices(pose[None]), width, height)[0]


def _fit_to_points(canonical: np.ndarray, targets: np.ndarray, width: int, height: int) -> np.ndarray:
    """Head rotation, position and depth whose projection of the canonical five points is closest to
    ``targets``; started from the frontal face rolled and scaled onto the eyes."""
    start = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -INITIAL_DEPTH_CM])
    frontal = five_points(_project(canonical, start, width, height))
    eyes = targets[1] - targets[0]
    start[2] = -np.degrees(np.arctan2(eyes[1], eyes[0]))  # the image's y axis points down, the camera's up
    start[5] *= np.linalg.norm(frontal[1] - frontal[0]) / np.linalg.norm(eyes)

    def residual(params):
        return (five_points(_project(canonical, params, width, height)) - targets).ravel()

    return least_squares(residual, start, x_scale=[10.0, 10.0, 10.0, 1.0, 1.0, abs(start[5])]).x


def _fit_to_box(canonical: np.ndarray, box, width: int, height: int) -> np.ndarray:
    """Position and depth (frontal) whose projected mesh is centred in ``box`` and touches its limiting sides."""
    x, y, box_w, box_h = box

    def residual(params):
        projected = _project(canonical, np.concatenate([[0.0, 0.0, 0.0], params]), width, height)
        low, high = projected.min(axis=0), projected.max(axis=0)
        centre, size = (low + high) / 2, high - low
        return np.array([(centre[0] - x - box_w / 2) / box_w, (centre[1] - y - box_h / 2) / box_h,
                         max(size[0] / box_w, size[1] / box_h) - 1.0])

    fitted = least_squares(residual, np.array([0.0, 0.0, -INITIAL_DEPTH_CM]), x_scale=[1.0, 1.0, INITIAL_DEPTH_CM])
    return np.concatenate([[0.0, 0.0, 0.0], fitted.x])


def _iris_points(projected: np.ndarray) -> np.ndarray:
    """Centred irises (10, 2) in projected eyes: the centre, then right, top, left, bottom on a ring."""
    irises = []
    for contour in (RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR):
        eye = projected[contour]
        centre = eye.mean(axis=0)
        radius = IRIS_RADIUS_OF_EYE_WIDTH * np.linalg.norm(eye.max(axis=0) - eye.min(axis=0))
        ring = np.array([[1.0, 0.0], [0.0, -1.0], [-1.0, 0.0], [0.0, 1.0]]) * radius
        irises.append(np.concatenate([centre[None], centre + ring]))
    return np.concatenate(irises)


def fit_face_track(placement: FacePlacement, width: int, height: int, model: CanonicalFaceModel) -> FaceTrack:
    """The one-frame reference track of a ``width`` x ``height`` portrait whose face is at ``placement``.

    The mesh is the canonical face (neutral blendshapes), the pose the fitted one; the landmarks are its
    projection, with MediaPipe's relative depth (z in units of the image width, negative towards the camera),
    so the metric geometry step recovers the same mesh and pose from them.
    """
    placement.check_inside(width, height)
    canonical = model.vertices.astype(np.float64)
    if placement.points is not None:
        params = _fit_to_points(canonical, placement.points, width, height)
    else:
        params = _fit_to_box(canonical, placement.box, width, height)
    pose = pose_matrices(params[None])[0]
    projected = _project(canonical, params, width, height)
    camera_z = canonical @ pose[:3, :3].T[:, 2] + pose[2, 3]
    near_width = frustum(width, height)[0]
    depth = -(camera_z - camera_z.mean()) * NEAR / (-camera_z.mean() * near_width)
    landmarks = np.zeros((1, NUM_LANDMARKS, 3))
    landmarks[0, :NUM_MESH_LANDMARKS, :2] = projected / [width, height]
    landmarks[0, :NUM_MESH_LANDMARKS, 2] = depth
    landmarks[0, NUM_MESH_LANDMARKS:, :2] = _iris_points(projected) / [width, height]
    iris_depth = [depth[RIGHT_EYE_CONTOUR].mean()] * 5 + [depth[LEFT_EYE_CONTOUR].mean()] * 5
    landmarks[0, NUM_MESH_LANDMARKS:, 2] = iris_depth
    return FaceTrack(landmarks=landmarks, mesh=canonical[None], transforms=pose[None],
                     blendshapes=np.zeros((1, NUM_BLENDSHAPES)), detected=np.ones(1, bool), width=width,
                     height=height, source=placement.kind)
