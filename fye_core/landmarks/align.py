"""Motion alignment as the official ``FaceMeshAlign``, batched over frames, with motion controls.

The driving track's expression is moved into the reference's canonical face (``mesh`` offsets from the
driving track's most neutral frame), posed with the driving head rotation and the driving translation
re-based on the reference, and projected with MediaPipe's 63 degree camera. Pupils are re-placed inside
the projected eye boxes at their relative driving positions. ``MotionControls`` scale each part: the
expression offsets per region before projection, the head rotation and translation as changes from the
portrait's pose, the pupils between the portrait's own and the transferred positions; the defaults take
exactly the official path.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import FYEInputError
from .controls import MotionControls
from .filters import one_euro, smooth_poses
from .geometry import FAR, NEAR, VERTICAL_FOV_DEGREES
from .regions import EXPRESSION_REGIONS, LEFT_EYE_CONTOUR, LEFT_IRIS, RIGHT_EYE_CONTOUR, RIGHT_IRIS
from .track import FaceTrack, Motion

MESH_POINTS = 468
OFFICIAL_CONTROLS = MotionControls()


def neutral_frame(blendshapes: np.ndarray) -> int:
    """The official neutral frame: the smallest sum of blendshape scores."""
    return int(np.argmin(np.asarray(blendshapes, np.float64).sum(axis=1)))


def expressiveness(blendshapes: np.ndarray) -> np.ndarray:
    """Per frame, how far its blendshape scores are from the clip's median expression (the most expressive
    frames make the best keyframes)."""
    return np.abs(blendshapes - np.median(blendshapes, axis=0)).sum(axis=1)


def driving_poses(driving: np.ndarray, reference: np.ndarray, *, rotation: float = 1.0, translation: float = 1.0,
                  base: int | None = None) -> np.ndarray:
    """Per-frame ``[euler_xyz_deg, translation]`` (N, 6) of the posed portrait.

    Official (``base`` None, strengths 1): the driving rotation as is, the driving translation re-based on
    frame 0 and moved to the reference's. Otherwise the rotation is the driving rotation's change from the
    portrait's (``base`` None) or from driving frame ``base``, scaled by ``rotation`` (along the geodesic) and
    applied to the portrait's rotation; the translation's change from frame 0 (or ``base``) is scaled by
    ``translation``. Strength 0 keeps the portrait's pose.
    """
    rotations = Rotation.from_matrix(driving[:, :3, :3])
    if rotation == 1.0 and base is None:
        euler = rotations.as_euler("xyz", degrees=True)
    else:
        own = Rotation.from_matrix(reference[:3, :3])
        change = rotations * (own if base is None else rotations[base]).inv()
        euler = (Rotation.from_rotvec(rotation * change.as_rotvec()) * own).as_euler("xyz", degrees=True)
    moved = (driving[:, :3, 3] - driving[0 if base is None else base, :3, 3]) * translation
    return np.concatenate([euler, moved + reference[:3, 3]], axis=1)


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


def iris_positions(landmarks: np.ndarray) -> np.ndarray:
    """Iris points (N, 10, 2) relative to their eye boxes (0..1 across the eye) in landmarks (N, >=478, 2+):
    the right iris (468-472) then the left (473-477)."""
    positions = []
    for iris, contour in ((RIGHT_IRIS, RIGHT_EYE_CONTOUR), (LEFT_IRIS, LEFT_EYE_CONTOUR)):
        low, size = _box(landmarks[:, contour, :2])
        positions.append((landmarks[:, iris, :2] - low) / size)
    return np.concatenate(positions, axis=1)


def place_irises(projected: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Official ``_scale_iris``: iris ``positions`` relative to the eye boxes (``iris_positions``, measured on
    the driving frames) mapped into the eye boxes of the projected mesh (N, 468, 2). Returns (N, 10, 2)."""
    irises = []
    for half, contour in ((slice(0, 5), RIGHT_EYE_CONTOUR), (slice(5, 10), LEFT_EYE_CONTOUR)):
        low, size = _box(projected[:, contour])
        irises.append(positions[:, half] * size + low)
    return np.concatenate(irises, axis=1)


def base_frame(controls: MotionControls, driving: FaceTrack, neutral: int) -> int | None:
    """The driving frame relative motion starts from, or None for the official absolute transfer."""
    if controls.relative == "off":
        return None
    if controls.relative == "first":
        return 0
    if controls.relative == "neutral":
        return neutral
    if controls.relative >= len(driving):
        raise FYEInputError(f"relative motion from driving frame {controls.relative}, but the driving video has "
                            f"{len(driving)} frames (0 to {len(driving) - 1})")
    return controls.relative


def expression_weights(controls: MotionControls) -> np.ndarray:
    """Each mesh point's expression strength (468, 1): the strength of its region."""
    weights = np.empty((MESH_POINTS, 1))
    for name in ("brows", "eyelids", "mouth"):
        weights[EXPRESSION_REGIONS[name]] = controls.region(name)
    return weights


def portrait_points(reference: FaceTrack) -> np.ndarray:
    """The portrait's own landmarks (478, 2) as the transfer draws them: its mesh at its own pose, its irises
    at their own places in its eyes (within hundredths of a pixel of MediaPipe's landmarks)."""
    pose = driving_poses(reference.transforms[:1], reference.transforms[0])
    projected = project_points(reference.mesh[:1], pose_matrices(pose), reference.width, reference.height)
    return np.concatenate([projected, place_irises(projected, iris_positions(reference.landmarks[:1]))], axis=1)[0]


def _float64(track: FaceTrack) -> FaceTrack:
    return replace(track, landmarks=np.asarray(track.landmarks, np.float64), mesh=np.asarray(track.mesh, np.float64),
                   transforms=np.asarray(track.transforms, np.float64))


def _check_tracks(reference: FaceTrack, driving: FaceTrack) -> None:
    if len(reference) != 1:
        raise FYEInputError(f"the reference track must hold one image, it holds {len(reference)} frames")
    if not reference.detected[0]:
        raise FYEInputError("no face was found in the reference image; use a portrait with a visible face, or "
                            "give the face's place by hand (FYE Place Face node; --face-box or --face-points)")
    if len(driving) == 0:
        raise FYEInputError("the driving track is empty: the driving video gave no frames")
    if not driving.detected.any():
        raise FYEInputError("no face was found in any frame of the driving video; use a video of a face")


def align_motion(
    reference: FaceTrack,
    driving: FaceTrack,
    controls: MotionControls = OFFICIAL_CONTROLS,
    *,
    drop_first_frame: bool = False,
) -> Motion:
    """Retargets the driving track onto the reference face; N driving frames give N motion frames.

    ``reference`` is a one-frame track of the reference image, whose size sets the output pixels.
    ``controls`` scale and filter the motion (the defaults are the official transfer). The official code drops
    the first driving frame; ``drop_first_frame=True`` reproduces that.
    """
    _check_tracks(reference, driving)
    reference, driving = _float64(reference), _float64(driving)
    neutral = neutral_frame(driving.blendshapes[driving.detected])
    neutral = int(np.flatnonzero(driving.detected)[neutral])
    base = base_frame(controls, driving, neutral)
    poses = driving_poses(driving.transforms, reference.transforms[0], rotation=controls.rotation,
                          translation=controls.translation, base=base)
    if controls.filter == "mean":
        poses = smooth_poses(poses, controls.smooth_window)
    matrices = pose_matrices(poses)
    mesh = driving.mesh
    expression = (mesh - mesh[neutral if base is None else base]) * expression_weights(controls)
    projected = project_points(expression + reference.mesh[0], matrices, reference.width, reference.height)
    positions = iris_positions(driving.landmarks)
    own_positions = iris_positions(reference.landmarks)
    if base is not None:
        positions = own_positions + (positions - positions[base])
    irises = place_irises(projected, positions)
    pupils = controls.region("pupils")
    if pupils != 1.0:
        # Between the portrait's own pupils (in its own eyes, posed) and the transferred ones, in pixels, so
        # that 0 keeps them exactly in place even while the eyelids move.
        own = place_irises(project_points(np.broadcast_to(reference.mesh, mesh.shape), matrices, reference.width,
                                          reference.height), own_positions)
        irises = own + pupils * (irises - own)
    points = np.concatenate([projected, irises], axis=1)
    frames = np.arange(len(driving))
    if drop_first_frame:
        points, frames = points[1:], frames[1:]
    own_points = portrait_points(reference)
    if controls.filter == "one-euro":
        face_size = np.linalg.norm(np.ptp(own_points, axis=0))
        points = one_euro(points / face_size, driving.fps or 30.0, controls.min_cutoff, controls.beta) * face_size
    return Motion(points=points, width=reference.width, height=reference.height,
                  detected=driving.detected[frames].copy(), frame_index=frames, fps=driving.fps,
                  blendshapes=driving.blendshapes[frames].copy(), reference=own_points, poses=poses[frames])
