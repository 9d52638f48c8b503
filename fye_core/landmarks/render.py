"""Follow-Your-Emoji's expression-aware landmark images, reproduced bit-exactly and batched.

The official ``FaceMeshVisualizer`` (forehead_edge=False, iris_edge=False, iris_point=True) draws eyes,
eyebrows and inner lips with 1-px LINE_8 segments on black, plus a 6x6 red square on each pupil. Its
face oval is drawn in black, i.e. not at all, so the contour never reaches the model.
"""
from __future__ import annotations

import cv2
import numpy as np

LEFT_EYE = ((249, 390), (263, 249), (263, 466), (373, 374), (374, 380), (380, 381), (381, 382), (382, 362),
            (384, 398), (385, 384), (386, 385), (387, 386), (388, 387), (390, 373), (398, 362), (466, 388))
LEFT_EYEBROW = ((276, 283), (282, 295), (283, 282), (293, 334), (295, 285), (296, 336), (300, 293), (334, 296))
RIGHT_EYE = ((7, 163), (33, 7), (33, 246), (144, 145), (145, 153), (153, 154), (154, 155), (155, 133),
             (157, 173), (158, 157), (159, 158), (160, 159), (161, 160), (163, 144), (173, 133), (246, 161))
RIGHT_EYEBROW = ((46, 53), (52, 65), (53, 52), (63, 105), (65, 55), (66, 107), (70, 63), (105, 66))
INNER_LIPS_BOTTOM_LEFT = ((78, 95), (95, 88), (88, 178), (178, 87), (87, 14))
INNER_LIPS_BOTTOM_RIGHT = ((14, 317), (317, 402), (402, 318), (318, 324), (324, 308))
INNER_LIPS_TOP_LEFT = ((78, 191), (191, 80), (80, 81), (81, 82), (82, 13))
INNER_LIPS_TOP_RIGHT = ((13, 312), (312, 311), (311, 310), (310, 415), (415, 308))
# Drawn first and in black by the official code, hence invisible; kept for the facial mask of training.
FACE_OVAL = ((176, 149), (150, 136), (356, 454), (58, 132), (152, 148), (361, 288), (251, 389), (132, 93),
             (389, 356), (400, 377), (136, 172), (377, 152), (323, 361), (172, 58), (454, 323), (365, 379),
             (379, 378), (148, 176), (93, 234), (397, 365), (149, 150), (288, 397), (234, 127), (378, 400),
             (127, 162), (162, 21))

# (edges, RGB colour) in the official drawing order; later groups overwrite earlier ones where they cross.
EXPRESSION_GROUPS = (
    (LEFT_EYE, (180, 200, 10)),
    (LEFT_EYEBROW, (180, 220, 10)),
    (RIGHT_EYE, (10, 200, 180)),
    (RIGHT_EYEBROW, (10, 220, 180)),
    (INNER_LIPS_BOTTOM_LEFT, (100, 100, 30)),
    (INNER_LIPS_BOTTOM_RIGHT, (100, 150, 50)),
    (INNER_LIPS_TOP_LEFT, (120, 100, 200)),
    (INNER_LIPS_TOP_RIGHT, (150, 120, 100)),
)
PUPIL_CENTRES = (473, 468)  # left then right, as drawn
PUPIL_COLOUR = (255, 0, 0)
PUPIL_HALF_SIZE = 3


def expression_connections() -> tuple[np.ndarray, np.ndarray]:
    """All drawn edges (E, 2) with their colours (E, 3), face oval first, in drawing order."""
    edges = [FACE_OVAL] + [group for group, _ in EXPRESSION_GROUPS]
    colours = [((0, 0, 0),) * len(FACE_OVAL)] + [(colour,) * len(group) for group, colour in EXPRESSION_GROUPS]
    return np.concatenate(edges).astype(np.int32), np.concatenate(colours).astype(np.int32)


def _inside_unit(values: np.ndarray) -> np.ndarray:
    """mediapipe's ``is_valid_normalized_value``: ``v >= 0`` and ``v <= 1`` up to ``math.isclose`` slack."""
    return (values >= 0) & ((values < 1) | (np.abs(values - 1) <= 1e-9 * np.maximum(np.abs(values), 1.0)))


def render_expression_landmarks(
    points: np.ndarray,
    width: int,
    height: int,
    *,
    normalized: bool = False,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Draws expression-aware landmark images.

    ``points``: (478, 2|3) or (N, 478, 2|3) landmarks, in pixels of a ``width`` x ``height`` image, or
    normalised to [0, 1] when ``normalized``. Returns uint8 RGB (H, W, 3) or (N, H, W, 3), drawn on black
    or, when ``background`` (same shape as the output) is given, over a copy of it.
    """
    single = np.ndim(points) == 2
    raw = np.asarray(points, np.float64)[None if single else slice(None), :, :2]
    size = np.array([width, height], np.float64)
    # The official code stores normalised positions in a float32 protobuf before converting to pixels.
    xy = (raw if normalized else raw / size).astype(np.float32).astype(np.float64)
    valid = _inside_unit(xy).all(axis=-1)
    pixels = np.minimum(np.floor(xy * size), size - 1).astype(np.int32)
    pupils = np.trunc(raw[:, PUPIL_CENTRES] * size if normalized else raw[:, PUPIL_CENTRES]).astype(np.int64)

    n = len(xy)
    if background is None:
        out = np.zeros((n, height, width, 3), np.uint8)
    else:
        out = np.array(background[None] if single else background, dtype=np.uint8, order="C", copy=True)
    groups = [(np.asarray(edges), colour) for edges, colour in EXPRESSION_GROUPS]
    for f in range(n):
        canvas = out[f]
        for edges, colour in groups:
            keep = valid[f, edges[:, 0]] & valid[f, edges[:, 1]]
            if keep.any():
                cv2.polylines(canvas, list(pixels[f][edges[keep]]), False, colour, 1, cv2.LINE_8)
        for x, y in pupils[f].tolist():
            # Plain slicing on purpose: the official square wraps like numpy slices near the border.
            canvas[y - PUPIL_HALF_SIZE:y + PUPIL_HALF_SIZE, x - PUPIL_HALF_SIZE:x + PUPIL_HALF_SIZE] = PUPIL_COLOUR
    return out[0] if single else out
