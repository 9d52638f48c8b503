"""Landmark metrics: accuracy of the generated faces against the aligned driving landmarks,
HunyuanPortrait's motion intensities, and the steadiness of a landmark stream (jitter on still stretches,
lag behind fast motion).

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

from ..landmarks.filters import smooth_poses
from ..landmarks.placement import NOSE_TIP
from ..landmarks.track import FaceTrack

DEFAULT_THRESHOLD_PX = 5.0
STILL_SPEED = 0.005  # face sizes per frame
STILL_RUN = 7  # frames


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


def still_frames(points: np.ndarray, face_size: float, speed: float = STILL_SPEED, run: int = STILL_RUN) -> np.ndarray:
    """Frames inside still stretches of landmarks (N, P, 2): where the landmarks, smoothed over 9 frames, move
    less than ``speed`` face sizes per frame throughout the ``run`` frames around them (first and last frames
    excluded, so that each has a second difference)."""
    smoothed = smooth_poses(points.reshape(len(points), -1), 9).reshape(points.shape)
    slow = np.concatenate([[True], np.linalg.norm(np.diff(smoothed, axis=0), axis=-1).mean(axis=1) / face_size < speed])
    half = run // 2
    still = np.array([slow[max(t - half, 0):t + half + 1].all() for t in range(len(points))])
    return np.flatnonzero(still[1:-1]) + 1


def landmark_jitter(points: np.ndarray, frames: np.ndarray) -> float:
    """Mean absolute second difference of landmarks (N, P, 2) at ``frames`` (pixels per frame squared)."""
    return float(np.abs(points[frames + 1] - 2 * points[frames] + points[frames - 1]).mean())


def lag_frames(signal: np.ndarray, follower: np.ndarray, centre: int, half: int = 12, most: int = 4) -> int:
    """How many frames ``follower`` trails ``signal`` (1D, N) around frame ``centre``: the shift, up to ``most``
    either way, that maximises the cross-correlation of their frame-to-frame changes within ``half`` frames."""
    window = slice(max(centre - half, 0), centre + half)
    a, b = np.diff(signal[window]), np.diff(follower[window])

    def correlation(shift: int) -> float:
        if shift >= 0:
            return float(np.dot(a[:len(a) - shift], b[shift:]) / (len(a) - shift))
        return float(np.dot(a[-shift:], b[:len(b) + shift]) / (len(a) + shift))

    return max(range(-most, most + 1), key=correlation)


def fastest_turn(transforms: np.ndarray) -> int:
    """The frame of the fastest head turn: the largest change of yaw (smoothed over 5 frames) of poses (N, 4, 4)."""
    from scipy.spatial.transform import Rotation

    yaw = Rotation.from_matrix(transforms[:, :3, :3]).as_euler("xyz", degrees=True)[:, 1]
    return int(np.argmax(np.abs(np.diff(smooth_poses(yaw[:, None], 5)[:, 0]))))
