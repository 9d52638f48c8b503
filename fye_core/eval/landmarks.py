"""Landmark metrics: accuracy of the generated faces against the aligned driving landmarks, and
HunyuanPortrait's motion intensities.

Motion intensities (HunyuanPortrait, Xu et al. 2025, section 3.3, eq. 2-3), for landmarks l_{k,j} (pixels)
of n frames and m points, centre l_{k,c} (the nose tip):

    e_{k,j} = l_{k,j} - l_{k,c}                                                      (eq. 2)
    s       = sqrt((l_{1,max} - l_{1,min})^2)   the diagonal of the first frame's landmark box (eq. 2)
    I_e     = 1/(n s) sum_k sqrt(1/m sum_j ||e_{k,j} - 1/n sum_k e_{k,j}||^2)           (eq. 3)
    I_h     = 1/s sqrt(1/n sum_k ||l_{k,c} - 1/n sum_k l_{k,c}||^2)                     (eq. 3)

I_e is the RMS deviation of the centred face from its mean shape, I_h the RMS movement of the centre, both
in face sizes. These are the paper's continuous values; the released code instead averages Euclidean
distances, scales by 1024 and 256 and buckets them per 25-frame chunk, which is a conditioning signal, not a
measurement.
"""
from __future__ import annotations

import numpy as np

from ..landmarks.placement import NOSE_TIP
from ..landmarks.track import FaceTrack

DEFAULT_THRESHOLD_PX = 5.0


def track_pixels(track: FaceTrack) -> np.ndarray:
    """A track's landmarks (N, 478, 2) in pixels of its frames."""
    return track.landmarks[..., :2] * [track.width, track.height]


def face_scale(points: np.ndarray) -> float:
    """s of eq. 2: the diagonal of the bounding box of one frame's landmarks (P, 2)."""
    return float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))


def expression_intensity(points: np.ndarray, centre: int = NOSE_TIP) -> float:
    """I_e of eq. 3 for landmarks (N, P, 2) of consecutive detected frames."""
    relative = points - points[:, centre:centre + 1]
    deviation = relative - relative.mean(axis=0)
    per_frame = np.sqrt(np.mean(np.sum(deviation ** 2, axis=-1), axis=1))
    return float(per_frame.mean() / face_scale(points[0]))


def head_intensity(points: np.ndarray, centre: int = NOSE_TIP) -> float:
    """I_h of eq. 3 for landmarks (N, P, 2) of consecutive detected frames."""
    centres = points[:, centre]
    return float(np.sqrt(np.mean(np.sum((centres - centres.mean(axis=0)) ** 2, axis=-1))) / face_scale(points[0]))


def motion_intensities(points: np.ndarray, detected: np.ndarray) -> tuple[float, float]:
    """(I_e, I_h) over the frames where a face was found (filled-in frames would add motion that was not seen)."""
    found = points[np.asarray(detected, bool)]
    return expression_intensity(found), head_intensity(found)


def landmark_accuracy(found_points: np.ndarray, detected: np.ndarray, target_points: np.ndarray,
                      threshold_px: float = DEFAULT_THRESHOLD_PX) -> tuple[float | None, float]:
    """The mean distance in pixels between the landmarks found on the generated frames and the target landmarks
    (frames with a face only; None without any), and the share of all frames' points within ``threshold_px``
    (a frame without a face has none)."""
    detected = np.asarray(detected, bool)
    distances = np.linalg.norm(found_points[..., :2] - target_points[..., :2], axis=-1)
    within = (distances <= threshold_px) & detected[:, None]
    mean_px = float(distances[detected].mean()) if detected.any() else None
    return mean_px, float(within.mean())
