"""The FFG loss's masks at latent resolution (paper 3.2): the expression mask, every expression-aware
landmark point dilated, and the facial mask, the projected face contour filled."""
from __future__ import annotations

import cv2
import numpy as np

from ..landmarks.render import EXPRESSION_GROUPS, FACE_OVAL, PUPIL_CENTRES

EXPRESSION_POINTS = np.unique(np.concatenate([np.ravel(edges) for edges, _ in EXPRESSION_GROUPS]
                                             + [np.array(PUPIL_CENTRES)]))
LATENT_SCALE = 8


def face_contour() -> np.ndarray:
    """The landmark ids of the face oval in order along it (the official 26-edge head outline, an open chain
    from brow to brow that filling closes across the forehead)."""
    neighbours: dict[int, list[int]] = {}
    for a, b in FACE_OVAL:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    start = min(point for point, linked in neighbours.items() if len(linked) == 1)
    order = [start]
    while len(order) < len(neighbours):
        order.append(next(p for p in neighbours[order[-1]] if p not in order))
    return np.array(order)


def _to_latent(masks: np.ndarray, scale: int) -> np.ndarray:
    """Image-resolution masks (N, H, W) -> (N, H/scale, W/scale): a latent cell is in when any pixel is."""
    n, height, width = masks.shape
    cells = masks[:, :height - height % scale, :width - width % scale]
    return cells.reshape(n, height // scale, scale, width // scale, scale).max(axis=(2, 4)).astype(np.float32)


def expression_mask(points: np.ndarray, width: int, height: int, radius: int = 8,
                    scale: int = LATENT_SCALE) -> np.ndarray:
    """(N, H/scale, W/scale) float32: 1 on latent cells within ``radius`` pixels of an expression-aware landmark
    point (eyes, eyebrows, inner lips, pupils) of ``points`` (N, 478, 2), pixels of a ``width`` x ``height``
    image."""
    masks = np.zeros((len(points), height, width), np.uint8)
    for mask, frame in zip(masks, np.asarray(points)[:, EXPRESSION_POINTS], strict=True):
        for x, y in np.round(frame).astype(int).tolist():
            cv2.circle(mask, (x, y), radius, 1, thickness=-1)
    return _to_latent(masks, scale)


def facial_mask(points: np.ndarray, width: int, height: int, scale: int = LATENT_SCALE) -> np.ndarray:
    """(N, H/scale, W/scale) float32: 1 on latent cells the filled face contour of ``points`` (N, 478, 2)
    reaches."""
    masks = np.zeros((len(points), height, width), np.uint8)
    contour = face_contour()
    for mask, frame in zip(masks, np.asarray(points), strict=True):
        cv2.fillPoly(mask, [np.round(frame[contour]).astype(np.int32)], 1)
    return _to_latent(masks, scale)
