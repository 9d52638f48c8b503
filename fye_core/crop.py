"""Any portrait at any size: a face crop at the model's resolution, and the animated crop pasted back into
the full-resolution portrait with a feathered mask."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from .errors import FYEInputError
from .image import letterbox
from .landmarks import FaceLandmarkDetector, FacePlacement, FaceTrack, detect_reference


@dataclass(frozen=True)
class FaceCrop:
    """The source box (pixels, may extend past the image only for the whole-image letterbox) that is
    resized to ``out_width`` x ``out_height``; crop pixel centres map linearly onto the box."""

    left: float
    top: float
    width: float
    height: float
    out_width: int
    out_height: int
    source_width: int
    source_height: int
    letterboxed: bool = False

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Crop pixel coordinates (..., 2) -> source pixel coordinates."""
        scale = np.array([self.width / self.out_width, self.height / self.out_height])
        return np.array([self.left, self.top]) + (np.asarray(points) + 0.5) * scale - 0.5

    def from_source(self, points: np.ndarray) -> np.ndarray:
        """Source pixel coordinates (..., 2) -> crop pixel coordinates."""
        scale = np.array([self.width / self.out_width, self.height / self.out_height])
        return (np.asarray(points) + 0.5 - np.array([self.left, self.top])) / scale - 0.5

    def as_dict(self) -> dict:
        return asdict(self)


def letterbox_crop(width: int, height: int, size: int = 512) -> FaceCrop:
    """The official letterbox (``image.letterbox``) as a FaceCrop: the whole image, centred, padded black."""
    scale = min(size / width, size / height)
    fitted_w, fitted_h = int(width * scale), int(height * scale)
    offset_x, offset_y = size // 2 - fitted_w // 2, size // 2 - fitted_h // 2
    step_x, step_y = width / fitted_w, height / fitted_h
    return FaceCrop(-offset_x * step_x, -offset_y * step_y, size * step_x, size * step_y, size, size, width, height,
                    letterboxed=True)


def reference_crop(width: int, height: int, mode: str = "letterbox", size: int = 512) -> FaceCrop:
    """Where ``image.prepare_reference`` takes its pixels from, as a FaceCrop (to map points into it)."""
    if mode == "letterbox":
        return letterbox_crop(width, height, size)
    new_w, new_h = width - width % 8, height - height % 8
    return FaceCrop((width - new_w) // 2, (height - new_h) // 2, new_w, new_h, new_w, new_h, width, height)


def face_crop_box(points: np.ndarray, width: int, height: int, margin: float = 0.5, aspect: float = 1.0,
                  size: int = 512) -> FaceCrop:
    """A box around the face landmarks ``points`` (N, 2) in pixels of a ``width`` x ``height`` image.

    The box is ``1 + 2 * margin`` times the face's larger side high and ``aspect`` times that wide, centred
    on the face and moved inside the image where it overhangs; it is resized to ``size`` pixels high (width
    a multiple of 8). A box as large as the whole image or larger gives the official letterbox of the whole
    image, so a portrait that already is a face crop is prepared exactly as the official code does.
    """
    if margin < 0 or aspect <= 0:
        raise FYEInputError(f"margin must be >= 0 and aspect > 0, got margin {margin}, aspect {aspect}")
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    box_h = round(max(x1 - x0, y1 - y0) * (1 + 2 * margin))
    box_w = round(box_h * aspect)
    if box_w >= width and box_h >= height and aspect == 1.0:
        return letterbox_crop(width, height, size)
    if box_w > width or box_h > height:
        raise FYEInputError(f"the face box with margin {margin} is {box_w}x{box_h} px, larger than the "
                            f"{width}x{height} portrait; lower the margin (or use the letterbox reference mode)")
    left = int(np.clip(round((x0 + x1) / 2 - box_w / 2), 0, width - box_w))
    top = int(np.clip(round((y0 + y1) / 2 - box_h / 2), 0, height - box_h))
    out_w = max(8, round(size * aspect / 8) * 8)
    return FaceCrop(left, top, box_w, box_h, out_w, size - size % 8, width, height)


class CropDetection(NamedTuple):
    """A face crop, the face track found on it, the source landmarks (pixels) the box was made from, and how
    far (mean crop pixels) the landmarks found on the crop lie from those landmarks mapped into it."""

    crop: FaceCrop
    track: FaceTrack
    box_points: np.ndarray
    drift: float


def detect_face_crop(image: np.ndarray, margin: float = 0.5, aspect: float = 1.0, size: int = 512,
                     max_passes: int = 4, tolerance: float = 1.0, name: str = "the portrait",
                     detector: FaceLandmarkDetector | None = None,
                     placement: FacePlacement | None = None) -> CropDetection:
    """The face box of a portrait and the face track of its crop.

    MediaPipe finds a small face in a large image a few percent smaller than in a close crop, so the box is
    made again around the landmarks found on the previous crop until those landmarks, found once more on the
    new crop, stay within ``tolerance`` crop pixels (a box that no longer moves the face), for at most
    ``max_passes`` detections on crops; the steadiest crop is kept. With a ``placement`` (pixels of the
    portrait) the canonical face is fitted to it instead, on the portrait for the box and on the crop for its
    track.
    """
    height, width = image.shape[:2]
    points = detect_reference(image, name=name, detector=detector,
                              placement=placement).landmarks[0, :, :2] * [width, height]
    best = None
    for _ in range(max_passes):
        crop = face_crop_box(points, width, height, margin, aspect, size)
        track = detect_reference(crop_face(image, crop), name=f"the face crop of {name}", detector=detector,
                                 placement=None if placement is None else placement.mapped(crop.from_source))
        found = track.landmarks[0, :, :2] * [crop.out_width, crop.out_height]
        drift = float(np.linalg.norm(found - crop.from_source(points), axis=1).mean())
        if best is None or drift < best.drift:
            best = CropDetection(crop, track, points, drift)
        if crop.letterboxed or drift <= tolerance or placement is not None:
            break
        points = crop.to_source(found)
    return best


def crop_face(image: np.ndarray, crop: FaceCrop) -> np.ndarray:
    """The uint8 crop (out_height, out_width, 3) of ``image`` (PIL bicubic, as the official letterbox)."""
    if image.shape[:2] != (crop.source_height, crop.source_width):
        raise FYEInputError(f"the image is {image.shape[1]}x{image.shape[0]} but the crop was made for "
                            f"{crop.source_width}x{crop.source_height}")
    if crop.letterboxed:
        return letterbox(image, crop.out_width)
    box = (crop.left, crop.top, crop.left + crop.width, crop.top + crop.height)
    return np.array(Image.fromarray(image).resize((crop.out_width, crop.out_height), Image.BICUBIC, box=box))


def _covered_region(crop: FaceCrop) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]]:
    """The source pixels the crop covers (left, top, right, bottom) and the same area in crop pixels."""
    left, top = max(0, int(np.ceil(crop.left))), max(0, int(np.ceil(crop.top)))
    right = min(crop.source_width, int(np.floor(crop.left + crop.width)))
    bottom = min(crop.source_height, int(np.floor(crop.top + crop.height)))
    sx, sy = crop.out_width / crop.width, crop.out_height / crop.height
    inside = ((left - crop.left) * sx, (top - crop.top) * sy, (right - crop.left) * sx, (bottom - crop.top) * sy)
    return (left, top, right, bottom), inside


def paste_mask(crop: FaceCrop, feather: int = 16) -> np.ndarray:
    """(source_height, source_width) float32: 1 where the animated crop replaces the portrait, 0 where the
    portrait stays, a linear ramp ``feather`` pixels wide inside the box edges that lie within the image."""
    (left, top, right, bottom), _ = _covered_region(crop)
    ys, xs = np.arange(crop.source_height)[:, None] + 0.5, np.arange(crop.source_width)[None, :] + 0.5
    distance = np.full((crop.source_height, crop.source_width), np.inf)
    for edge, coordinate, is_border in ((left, xs, left == 0), (top, ys, top == 0)):
        if not is_border:
            distance = np.minimum(distance, coordinate - edge)
    for edge, coordinate, is_border in ((right, xs, right == crop.source_width),
                                        (bottom, ys, bottom == crop.source_height)):
        if not is_border:
            distance = np.minimum(distance, edge - coordinate)
    inside = (xs >= left) & (xs <= right) & (ys >= top) & (ys <= bottom)
    ramp = np.ones_like(distance) if feather <= 0 else np.clip(distance / feather, 0, 1)
    return np.where(inside, ramp, 0).astype(np.float32)


def paste_back(frames: np.ndarray, original: np.ndarray, crop: FaceCrop, feather: int = 16) -> np.ndarray:
    """Animated crops (N, out_height, out_width, 3) uint8 -> full-resolution frames (N, H, W, 3) uint8."""
    if frames.shape[1:3] != (crop.out_height, crop.out_width):
        raise FYEInputError(f"the animated frames are {frames.shape[2]}x{frames.shape[1]} but the crop is "
                            f"{crop.out_width}x{crop.out_height}; paste back the frames made from this crop")
    if original.shape[:2] != (crop.source_height, crop.source_width):
        raise FYEInputError(f"the portrait is {original.shape[1]}x{original.shape[0]} but the crop was made for "
                            f"{crop.source_width}x{crop.source_height}")
    (left, top, right, bottom), inside = _covered_region(crop)
    mask = paste_mask(crop, feather)[top:bottom, left:right, None]
    out = np.repeat(original[None], len(frames), axis=0)
    for frame, target in zip(frames, out, strict=True):
        patch = np.asarray(Image.fromarray(frame).resize((right - left, bottom - top), Image.BICUBIC, box=inside))
        region = target[top:bottom, left:right].astype(np.float32)
        target[top:bottom, left:right] = np.round(region + (patch - region) * mask).astype(np.uint8)
    return out
