"""The face's expression regions: brows, eyelids, pupils and mouth, as landmark index sets.

Every one of the 468 mesh points belongs to exactly one region, so that all regions at strength 0 keep the
whole face: the region of its nearest seed (the points drawn for the brows, the eye contours, the outer and
inner lips) on MediaPipe's canonical face. The sets below are that partition, written out so that they are
public constants; ``partition_mesh`` makes them again from the canonical face (a test checks they agree).
The pupils are the ten iris points, which the official code places inside the eye boxes.
"""
from __future__ import annotations

import numpy as np

from .render import (
    INNER_LIPS_BOTTOM_LEFT,
    INNER_LIPS_BOTTOM_RIGHT,
    INNER_LIPS_TOP_LEFT,
    INNER_LIPS_TOP_RIGHT,
    LEFT_EYEBROW,
    RIGHT_EYEBROW,
)

OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409)
RIGHT_IRIS = np.arange(468, 473)
LEFT_IRIS = np.arange(473, 478)
RIGHT_EYE_CONTOUR = np.array([33, 7, 163, 144, 145, 153, 154, 155, 246, 161, 160, 159, 158, 157, 173, 133])
LEFT_EYE_CONTOUR = np.array([249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 263])

BROWS = np.array([
    6, 8, 9, 10, 21, 34, 46, 52, 53, 54, 55, 63, 65, 66, 67, 68, 69, 70, 71, 103, 104, 105, 107, 108, 109, 122,
    124, 127, 139, 143, 151, 156, 162, 168, 193, 195, 196, 197, 223, 224, 225, 234, 251, 264, 276, 282, 283, 284,
    285, 293, 295, 296, 297, 298, 299, 300, 301, 332, 333, 334, 336, 337, 338, 351, 353, 356, 368, 372, 383, 389,
    417, 419, 443, 444, 445, 454
])
EYELIDS = np.array([
    3, 7, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 33, 35, 36, 47, 50, 56, 93, 100, 101, 110, 111, 112, 113, 114,
    116, 117, 118, 119, 120, 121, 123, 126, 128, 130, 133, 137, 142, 144, 145, 147, 153, 154, 155, 157, 158, 159,
    160, 161, 163, 173, 174, 177, 188, 189, 190, 198, 209, 217, 221, 222, 226, 227, 228, 229, 230, 231, 232, 233,
    236, 243, 244, 245, 246, 247, 248, 249, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 263, 265, 266, 277,
    280, 286, 323, 329, 330, 339, 340, 341, 342, 343, 345, 346, 347, 348, 349, 350, 352, 355, 357, 359, 362, 366,
    371, 373, 374, 376, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 399, 401, 412, 413, 414, 420, 429, 437,
    441, 442, 446, 447, 448, 449, 450, 451, 452, 453, 456, 463, 464, 465, 466, 467
])
MOUTH = np.array([
    0, 1, 2, 4, 5, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 32, 37, 38, 39, 40, 41, 42, 43, 44, 45, 48, 49, 51, 57,
    58, 59, 60, 61, 62, 64, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92,
    94, 95, 96, 97, 98, 99, 102, 106, 115, 125, 129, 131, 132, 134, 135, 136, 138, 140, 141, 146, 148, 149, 150,
    152, 164, 165, 166, 167, 169, 170, 171, 172, 175, 176, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 191,
    192, 194, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 210, 211, 212, 213, 214, 215, 216, 218, 219, 220,
    235, 237, 238, 239, 240, 241, 242, 250, 262, 267, 268, 269, 270, 271, 272, 273, 274, 275, 278, 279, 281, 287,
    288, 289, 290, 291, 292, 294, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317,
    318, 319, 320, 321, 322, 324, 325, 326, 327, 328, 331, 335, 344, 354, 358, 360, 361, 363, 364, 365, 367, 369,
    370, 375, 377, 378, 379, 391, 392, 393, 394, 395, 396, 397, 400, 402, 403, 404, 405, 406, 407, 408, 409, 410,
    411, 415, 416, 418, 421, 422, 423, 424, 425, 426, 427, 428, 430, 431, 432, 433, 434, 435, 436, 438, 439, 440,
    455, 457, 458, 459, 460, 461, 462
])
PUPILS = np.concatenate([RIGHT_IRIS, LEFT_IRIS])
EXPRESSION_REGIONS = {"brows": BROWS, "eyelids": EYELIDS, "pupils": PUPILS, "mouth": MOUTH}


def region_seeds() -> dict[str, np.ndarray]:
    """The points each mesh region grows from: the drawn brows, the eye contours and both lip lines."""
    return {"brows": np.unique(np.ravel([LEFT_EYEBROW, RIGHT_EYEBROW])),
            "eyelids": np.unique(np.concatenate([RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR])),
            "mouth": np.unique(np.concatenate([OUTER_LIPS, *(np.ravel(lips) for lips in (
                INNER_LIPS_BOTTOM_LEFT, INNER_LIPS_BOTTOM_RIGHT, INNER_LIPS_TOP_LEFT, INNER_LIPS_TOP_RIGHT))]))}


def partition_mesh(vertices: np.ndarray) -> dict[str, np.ndarray]:
    """Each mesh point (468, 3) given to the region of its nearest seed point."""
    seeds = region_seeds()
    distance = np.stack([np.linalg.norm(vertices[:, None] - vertices[ids][None], axis=-1).min(axis=1)
                         for ids in seeds.values()])
    nearest = distance.argmin(axis=0)
    return {name: np.flatnonzero(nearest == i) for i, name in enumerate(seeds)}
