"""HunyuanPortrait's preprocessing as its released code does it (spec §2.1-2.3, 2.7): the crop boxes, the
crops with the resampling filter of each step, the ArcFace alignment, the DINO input, the motion-intensity
buckets and the paste-back onto the full-resolution source.

Boxes are ``(x1, y1, x2, y2)`` in pixels unless a name says ``xywh``; faces are the detector's five points
(eye on the image's left, other eye, nose tip, mouth corner left, mouth corner right).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

from ..eval.identity import ARCFACE_SIZE, ARCFACE_TEMPLATE
from ..eval.landmarks import face_scale
from ..landmarks import similarity_transform

CROP_SIZE = 512
MOTION_SIZE = 256
DINO_SIZE = 224
SOURCE_EXPAND = 1.0
MOTION_BOX_PULL = 0.45
NOSE = 2
INTENSITY_CHUNK = 25
MAX_INTENSITY = 127
EXPRESSION_SCALE = 1024
HEAD_SCALE = 256
PASTE_BORDER = 0.1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def xywh_to_xyxy(box) -> np.ndarray:
    x, y, width, height = np.asarray(box, np.float64)
    return np.array([x, y, x + width, y + height])


def process_bbox(box, expand_ratio: float, height: int, width: int) -> tuple[int, int, int, int]:
    """The official crop box: ``box`` grown by ``expand_ratio`` of its size on every side and clamped to the
    image, then a square of the shorter side moved towards the face centre by at most half the difference.

    Python's ``round`` (half to even) makes the square up to 1 px off square, as the official box is.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    box_w, box_h = x2 - x1, y2 - y1
    ex1, ey1 = max(x1 - expand_ratio * box_w, 0), max(y1 - expand_ratio * box_h, 0)
    ex2, ey2 = min(x2 + expand_ratio * box_w, width), min(y2 + expand_ratio * box_h, height)
    exp_w, exp_h = ex2 - ex1, ey2 - ey1
    centre_x, centre_y = (ex1 + ex2) / 2, (ey1 + ey2) / 2
    half = min(exp_w, exp_h) / 2
    slack = abs(exp_h - exp_w) / 2
    if exp_w < exp_h:
        face_y = (y1 + y2) / 2
        centre_y += min(slack, abs(face_y - centre_y)) * (1 if face_y > centre_y else -1)
    else:
        face_x = (x1 + x2) / 2
        centre_x += min(slack, abs(face_x - centre_x)) * (1 if face_x > centre_x else -1)
    return (round(centre_x - half), round(centre_y - half), round(centre_x + half), round(centre_y + half))


def crop_resize(image: np.ndarray, box, size: int = CROP_SIZE) -> np.ndarray:
    """``image`` cut to ``box`` (black outside the image) and resized to ``size`` x ``size``, PIL bicubic."""
    return np.asarray(Image.fromarray(image).crop(tuple(box)).resize((size, size), Image.BICUBIC))


def source_crop(image: np.ndarray, face_box_xywh) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The crop box of the source face (kept for paste-back) and the 512 x 512 crop the model sees."""
    height, width = image.shape[:2]
    box = process_bbox(xywh_to_xyxy(face_box_xywh), SOURCE_EXPAND, height, width)
    return box, crop_resize(image, box)


def _resize_bilinear(image: np.ndarray, size: int = MOTION_SIZE) -> np.ndarray:
    """torchvision's ``Resize(size)`` of a square PIL image: PIL bilinear."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def motion_face_box(points: np.ndarray, first_box) -> np.ndarray:
    """The expression crop's box: the box of the frame's five points with each side pushed 45 % of the way
    towards the first frame's face box (so the crop keeps the first frame's framing as the face moves)."""
    low, high = np.asarray(points).min(axis=0), np.asarray(points).max(axis=0)
    first = np.asarray(first_box, np.float64)
    low = low - (low - first[:2]) * MOTION_BOX_PULL
    high = high + (first[2:] - high) * MOTION_BOX_PULL
    return np.concatenate([low, high])


def square_crop(image: np.ndarray, box) -> np.ndarray:
    """The official ``center_crop``: a square of side ``2 * (int(longer side) // 2)`` around the truncated box
    centre, black where it leaves the image."""
    x1, y1, x2, y2 = box
    centre_x, centre_y = int((x1 + x2) / 2), int((y1 + y2) / 2)
    half = int(max(x2 - x1, y2 - y1)) // 2
    height, width = image.shape[:2]
    out = np.zeros((2 * half, 2 * half) + image.shape[2:], image.dtype)
    left, top = centre_x - half, centre_y - half
    src_x0, src_y0 = max(left, 0), max(top, 0)
    src_x1, src_y1 = min(centre_x + half, width), min(centre_y + half, height)
    if src_x1 > src_x0 and src_y1 > src_y0:
        out[src_y0 - top:src_y1 - top, src_x0 - left:src_x1 - left] = image[src_y0:src_y1, src_x0:src_x1]
    return out


def motion_face_crop(frame: np.ndarray, points: np.ndarray, first_box) -> np.ndarray:
    """(256, 256, 3) uint8 input of the expression encoder for one driving frame (the network takes /255)."""
    return _resize_bilinear(square_crop(frame, motion_face_box(points, first_box)))


def pose_box(first_box, height: int, width: int) -> tuple[int, int, int, int]:
    """The head-pose crop box of every driving frame, made from the first frame's face box."""
    return process_bbox(first_box, SOURCE_EXPAND, height, width)


def pose_crop(frame: np.ndarray, box) -> np.ndarray:
    """(256, 256, 3) uint8 input of the head-pose encoder: the 512 crop of ``pose_box``, then 256."""
    return _resize_bilinear(crop_resize(frame, box))


def driving_crops(frames, points: np.ndarray, first_box_xywh) -> tuple[np.ndarray, np.ndarray]:
    """The expression-encoder and head-pose-encoder inputs (N, 256, 256, 3) uint8 of driving frames with their
    five points (N, 5, 2); both crops are framed by the first frame's face box ``first_box_xywh``."""
    first_box = xywh_to_xyxy(first_box_xywh)
    box = pose_box(first_box, *frames[0].shape[:2])
    faces = np.stack([motion_face_crop(frame, face, first_box) for frame, face in zip(frames, points, strict=True)])
    return faces, np.stack([pose_crop(frame, box) for frame in frames])


def dino_input(crop: np.ndarray) -> torch.Tensor:
    """The appearance encoder's input (3, 224, 224) float32 from the 512 crop: [0, 1], torch bilinear
    antialiased resize (``RandomResizedCrop`` of a square at scale 1 takes the whole image), ImageNet norm."""
    pixels = torch.tensor(crop).permute(2, 0, 1).contiguous().float().div(255)  # a copy: PIL arrays are read-only
    resized = torch.nn.functional.interpolate(pixels[None], size=(DINO_SIZE, DINO_SIZE), mode="bilinear",
                                              align_corners=False, antialias=True)[0]
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return resized.sub(mean).div(std)


def _official_arcface_template() -> np.ndarray:
    """insightface's template as the official code holds it: float32, the 8 px x offset added in float32. It
    stays float32 because the alignment's template mean is taken in float32 there (0.8e-6 of the image)."""
    template = (ARCFACE_TEMPLATE - [8.0, 0.0]).astype(np.float32)
    template[:, 0] += np.float32(8.0)
    return template


def _bilinear_warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """scikit-image's ``warp`` (order 1, constant 0, clipped) of a float image (H, W, C) through the 3 x 3
    output -> input ``matrix``, at ``size`` x ``size``; the official ArcFace input is made this way."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    x = matrix[0, 0] * cols + matrix[0, 1] * rows + matrix[0, 2]
    y = matrix[1, 0] * cols + matrix[1, 1] * rows + matrix[1, 2]
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.ceil(x).astype(np.int64), np.ceil(y).astype(np.int64)
    dx, dy = (x - x0)[..., None], (y - y0)[..., None]
    height, width = image.shape[:2]

    def pixel(r, c):
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        return np.where(inside[..., None], image[np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)], 0.0)

    top = (1 - dx) * pixel(y0, x0) + dx * pixel(y0, x1)
    bottom = (1 - dx) * pixel(y1, x0) + dx * pixel(y1, x1)
    return np.clip((1 - dy) * top + dy * bottom, min(image.min(), 0.0), max(image.max(), 0.0))


def arcface_input(crop: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The ArcFace model's input (112, 112, 3) float64 RGB in [0, 1] (no mean/std: the official input) from
    the 512 crop and its five points; transpose to (1, 3, 112, 112) float32 for the ONNX model."""
    forward = np.vstack([similarity_transform(np.asarray(points, np.float64), _official_arcface_template()),
                         [0.0, 0.0, 1.0]])
    return _bilinear_warp(crop.astype(np.float64) / 255, np.linalg.inv(forward), ARCFACE_SIZE)


def intensity_ids(points: np.ndarray) -> tuple[int, int]:
    """The official motion-intensity ids ``(head, expression)`` of consecutive frames' five points (T, 5, 2).

    Points are taken relative to the nose; the face size is the diagonal of the first frame's box. The
    expression id is 1024 x the mean distance of the points from their mean position, the head id 256 x the
    mean distance of the nose from its mean position, both per face size, floored and clamped to [0, 127]
    (the paper's RMS formulas are ``fye_core.eval.landmarks``; these are the released code's buckets).
    """
    points = np.asarray(points, np.float64)
    relative = points - points[:, NOSE:NOSE + 1]
    scale = face_scale(relative[0])
    expression = np.sqrt(((relative - relative.mean(axis=0)) ** 2).sum(axis=2)).mean() / scale * EXPRESSION_SCALE
    noses = points[:, NOSE]
    head = np.sqrt(((noses - noses.mean(axis=0)) ** 2).sum(axis=1)).mean() / scale * HEAD_SCALE
    return min(max(int(head), 0), MAX_INTENSITY), min(max(int(expression), 0), MAX_INTENSITY)


def chunk_intensity_ids(points: np.ndarray, chunk: int = INTENSITY_CHUNK) -> np.ndarray:
    """``[start, end, head id, expression id]`` rows for the consecutive ``chunk``-frame pieces of a driving
    video's five points (N, 5, 2): the official code buckets each piece of ``n_sample_frames`` on its own."""
    return np.array([[start, min(start + chunk, len(points)), *intensity_ids(points[start:start + chunk])]
                     for start in range(0, len(points), chunk)], np.int64).reshape(-1, 4)


def paste_mask(width: int, height: int) -> np.ndarray:
    """(height, width, 1) float32 blend weights of the generated crop: 1 inside, linear ramps to 0 over 10 %
    of the width and height at the borders (the horizontal ramps set, the vertical ones multiplied)."""
    mask = np.ones((height, width), np.float32)
    border_w, border_h = int(width * PASTE_BORDER), int(height * PASTE_BORDER)
    if border_w > 0:
        mask[:, :border_w] = np.linspace(0, 1, border_w)
        mask[:, -border_w:] = np.linspace(1, 0, border_w)
    if border_h > 0:
        mask[:border_h] *= np.linspace(0, 1, border_h)[:, None]
        mask[-border_h:] *= np.linspace(1, 0, border_h)[:, None]
    return mask[..., None]


def paste_back(source: np.ndarray, frames: np.ndarray, crop_box) -> np.ndarray:
    """Generated crops (N, h, w, 3) uint8 blended into the static ``source`` (H, W, 3) uint8 at ``crop_box``
    (the box of ``source_crop``): cv2 bilinear resize, ``paste_mask`` blend, truncated to uint8."""
    x1, y1, x2, y2 = crop_box
    mask = paste_mask(x2 - x1, y2 - y1)
    background = source[y1:y2, x1:x2].astype(np.float32) / 255
    out = np.repeat(source[None], len(frames), axis=0)
    for frame, target in zip(frames, out, strict=True):
        foreground = cv2.resize(frame, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
        target[y1:y2, x1:x2] = ((foreground * mask + background * (1 - mask)) * 255).astype(np.uint8)
    return out
