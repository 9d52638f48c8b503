"""Motion alignment exactly as the official ``FaceMeshAlign``, batched over frames.

The driving track's expression is moved into the reference's canonical face (``mesh`` offsets from the
driving track's most neutral frame), posed with the driving head rotation and the driving translation
re-based on the reference, and projected with MediaPipe's 63 degree camera. Pupils are re-placed inside
the projected eye boxes at their relative driving positions.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import FYEInputError
from .geometry import FAR, NEAR, VERTICAL_FOV_DEGREES
from .track import FaceTrack, Motion

RIGHT_IRIS = np.arange(468, 473)
LEFT_IRIS = np.arange(473, 478)
RIGHT_EYE_CONTOUR = np.array([33, 7, 163, 144, 145, 153, 154, 155, 246, 161, 160, 159, 158, 157, 173, 133])
LEFT_EYE_CONTOUR = np.array([249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 263])


def neutral_frame(blendshapes: np.ndarray) -> int:
    """The official neutral frame: the smallest sum of blendshape scores."""
    return int(np.argmin(np.asarray(blendshapes, np.float64).sum(axis=1)))


def driving_poses(driving: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-frame ``[euler_xyz_deg, translation]`` (N, 6): driving rotation, translation re-based on frame 0."""
    euler = Rotation.from_matrix(driving[:, :3, :3]).as_euler("xyz", degrees=True)
    translation = driving[:, :3, 3] - driving[0, :3, 3] + reference[:3, 3]
    return np.concatenate([euler, translation], axis=1)


def smooth_poses(poses: np.ndarray, window: int = 1) -> np.ndarray:
    """The official ``smooth_pose_seq``: a centred moving average, shrinking at the ends (1 = off)."""
    if window <= 1:
        return poses
    half = window // 2
    cumulative = np.concatenate([np.zeros((1, poses.shape[1])), np.cumsum(poses, axis=0)])
    start = np.maximum(np.arange(len(poses)) - half, 0)
    stop = np.minimum(np.arange(len(poses)) + half + 1, len(poses))
    return (cumulative[stop] - cumulative[start]) / (stop - start)[:, None]


def pose_matrices(poses: np.ndarray) -> np.ndarray:
    matrices = np.zeros((len(poses), 4, 4))
    matrices[:, :3, :3] = Rotation.from_euler("xyz", poses[:, :3], degrees=True).as_matrix()
    matrices[:, :3, 3] = poses[:, 3:]
    matrices[:, 3, 3] = 1.0
    return matrices


def project_points(vertices: np.ndarray, poses: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels of canonical-space ``vertices`` (N, V, 3) posed by ``poses`` (N, 4, 4).

    The official projection multiplies row vectors by MediaPipe's column-major float32 perspective
    matrix without transposing it back, so the homogeneous w is ``z * far*near/(near-far)`` rather than
    ``-z``: a 0.01 % shrink about the image centre, kept for parity.
    """
    f = 1.0 / np.tan(np.deg2rad(VERTICAL_FOV_DEGREES) / 2.0)
    fx = np.float64(np.float32(f / (width / height)))
    fy = np.float64(np.float32(-f))
    pz = np.float64(np.float32(FAR * NEAR / (NEAR - FAR)))
    camera = vertices @ np.swapaxes(poses[:, :3, :3], 1, 2) + poses[:, None, :3, 3]
    w = camera[..., 2] * pz
    u = (camera[..., 0] * fx / w + 1.0) * 0.5 * width
    v = (camera[..., 1] * fy / w + 1.0) * 0.5 * height
    return np.stack([u, v], axis=-1)


def _box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low = points.min(axis=1, keepdims=True)
    return low, points.max(axis=1, keepdims=True) - low


def place_irises(projected: np.ndarray, driving_landmarks: np.ndarray) -> np.ndarray:
    """Official ``_scale_iris``: iris points keep their position relative to the eye box.

    Positions are measured on the driving frames' normalised landmarks and mapped into the eye boxes of
    the projected mesh. Returns (N, 10, 2): right iris (468-472) then left iris (473-477).
    """
    irises = []
    for iris, contour in ((RIGHT_IRIS, RIGHT_EYE_CONTOUR), (LEFT_IRIS, LEFT_EYE_CONTOUR)):
        src_low, src_size = _box(driving_landmarks[:, contour, :2])
        dst_low, dst_size = _box(projected[:, contour])
        irises.append((driving_landmarks[:, iris, :2] - src_low) / src_size * dst_size + dst_low)
    return np.concatenate(irises, axis=1)


def align_motion(
    reference: FaceTrack,
    driving: FaceTrack,
    *,
    smooth_window: int = 1,
    drop_first_frame: bool = False,
) -> Motion:
    """Retargets the driving track onto the reference face; N driving frames give N motion frames.

    ``reference`` is a one-frame track of the reference image, whose size sets the output pixels.
    ``smooth_window`` > 1 averages the driving poses over that many frames (off by default, as the
    official). The official code drops the first driving frame; ``drop_first_frame=True`` reproduces that.
    """
    if len(reference) != 1:
        raise FYEInputError(f"the reference track must hold one image, it holds {len(reference)} frames")
    if not reference.detected[0]:
        raise FYEInputError("no face was found in the reference image; use a portrait with a visible face, or "
                            "give the face's place by hand (FYE Place Face node; --face-box or --face-points)")
    if len(driving) == 0:
        raise FYEInputError("the driving track is empty: the driving video gave no frames")
    if not driving.detected.any():
        raise FYEInputError("no face was found in any frame of the driving video; use a video of a face")
    landmarks = np.asarray(driving.landmarks, np.float64)
    mesh = np.asarray(driving.mesh, np.float64)
    neutral = neutral_frame(driving.blendshapes[driving.detected])
    neutral = int(np.flatnonzero(driving.detected)[neutral])
    poses = smooth_poses(driving_poses(np.asarray(driving.transforms, np.float64),
                                       np.asarray(reference.transforms[0], np.float64)), smooth_window)
    vertices = mesh - mesh[neutral] + np.asarray(reference.mesh[0], np.float64)
    projected = project_points(vertices, pose_matrices(poses), reference.width, reference.height)
    points = np.concatenate([projected, place_irises(projected, landmarks)], axis=1)
    frames = np.arange(len(driving))
    if drop_first_frame:
        points, frames = points[1:], frames[1:]
    return Motion(points=points, width=reference.width, height=reference.height,
                  detected=driving.detected[frames].copy(), frame_index=frames, fps=driving.fps,
                  blendshapes=driving.blendshapes[frames].copy())
