"""Per-frame face tracks and aligned motion: the plain data that flows between the landmark stages."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

NUM_LANDMARKS = 478
NUM_BLENDSHAPES = 51
FILL_MODES = ("hold", "interpolate")


@dataclass
class FaceTrack:
    """MediaPipe results for N frames of ``width`` x ``height`` (one frame for a reference image).

    ``landmarks``: (N, 478, 3) normalised x/W, y/H (origin top-left) and MediaPipe's relative z;
    ``mesh``: (N, 468, 3) canonical-space metric mesh in cm (head pose removed);
    ``transforms``: (N, 4, 4) canonical -> camera pose; ``blendshapes``: (N, 51) scores without
    ``_neutral``; ``detected``: (N,) whether MediaPipe found the face in that frame (frames without one
    carry filled-in values, see ``fill_missing``).
    """

    landmarks: np.ndarray
    mesh: np.ndarray
    transforms: np.ndarray
    blendshapes: np.ndarray
    detected: np.ndarray
    width: int
    height: int
    fps: float | None = None
    source: str = "mediapipe"

    def __len__(self) -> int:
        return len(self.detected)

    def select(self, indices: np.ndarray) -> FaceTrack:
        return replace(self, landmarks=self.landmarks[indices], mesh=self.mesh[indices],
                       transforms=self.transforms[indices], blendshapes=self.blendshapes[indices],
                       detected=self.detected[indices])

    @property
    def missing_frames(self) -> list[int]:
        return np.flatnonzero(~self.detected).tolist()


def fill_missing(track: FaceTrack, mode: str = "hold") -> FaceTrack:
    """Gives frames without a face the values of their neighbours; ``detected`` stays False for them.

    ``hold`` copies the nearest detected frame (the earlier one on ties); ``interpolate`` blends linearly
    between the detected frames on both sides (rotations by slerp) and holds at the ends.
    """
    if mode not in FILL_MODES:
        raise ValueError(f"fill mode must be one of {FILL_MODES}, got {mode!r}")
    found = np.flatnonzero(track.detected)
    if len(found) == 0 or len(found) == len(track):
        return track
    frames = np.arange(len(track))
    if mode == "hold" or len(found) == 1:
        after = np.clip(np.searchsorted(found, frames), 0, len(found) - 1)
        before = np.clip(after - 1, 0, len(found) - 1)
        take_before = np.abs(frames - found[before]) <= np.abs(found[after] - frames)
        source = np.where(take_before, found[before], found[after])
        filled = track.select(source)
        return replace(filled, detected=track.detected.copy())

    position = np.interp(frames, found, np.arange(len(found), dtype=np.float64))
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, len(found) - 1)
    weight = position - lower

    def lerp(values: np.ndarray) -> np.ndarray:
        w = weight.reshape((-1,) + (1,) * (values.ndim - 1))
        return values[found[lower]] * (1.0 - w) + values[found[upper]] * w

    transforms = track.transforms.copy()
    scale = np.linalg.norm(transforms[found, :3, 0], axis=1)
    rotations = Rotation.from_matrix(transforms[found, :3, :3] / scale[:, None, None])
    inner = (frames >= found[0]) & (frames <= found[-1])
    rot = np.empty((len(track), 3, 3))
    rot[inner] = Slerp(found, rotations)(frames[inner]).as_matrix()
    rot[frames < found[0]] = rotations[0].as_matrix()
    rot[frames > found[-1]] = rotations[-1].as_matrix()
    transforms[:, :3, :3] = rot * np.interp(frames, found, scale)[:, None, None]
    transforms[:, :3, 3] = lerp(track.transforms[:, :3, 3])
    return replace(track, landmarks=lerp(track.landmarks), mesh=lerp(track.mesh), transforms=transforms,
                   blendshapes=lerp(track.blendshapes))


@dataclass
class Motion:
    """Driving motion retargeted onto a reference: 2D landmarks in pixels of the reference image.

    ``points``: (N, 478, 2), 468 projected mesh points then 10 iris points; ``detected``: (N,) whether the
    driving frame had a face (others were filled); ``frame_index``: (N,) the driving frame of each;
    ``blendshapes``: (N, 51) the driving frames' blendshape scores, when known; ``reference``: (478, 2) the
    portrait's own landmarks as the transfer draws them, and ``poses``: (N, 6) the head pose each frame was
    drawn with (Euler xyz degrees, then translation in cm), when known.
    """

    points: np.ndarray
    width: int
    height: int
    detected: np.ndarray
    frame_index: np.ndarray
    fps: float | None = None
    blendshapes: np.ndarray | None = None
    reference: np.ndarray | None = None
    poses: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)
