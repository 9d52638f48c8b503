"""Motion controls measured on the shared data, and the README's pictures.

For the painting driven by ``lp_d0``: per expression region, how far strength 0 stays from the portrait's own
landmarks (pose held) and the ratio strength 2 gives to the region's offsets (2 is exact doubling); relative
motion's start frame against the portrait's own face. For ``lp_d11_driving_long``: the One-Euro filter's jitter
on still stretches against the unfiltered landmarks and its lag on the fastest head turn, beside the official
centred mean at 5 frames. ``--picture`` draws the portrait at expression strength 0, 1 and 2 under the driving
frames; ``--overview`` what the product does, from driving frames to the landmarks that condition the model.

    .venv/bin/python bench/controls.py [--shared DIR] [--json OUT] [--picture PNG] [--overview PNG]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fye_core.eval import fastest_turn, lag_frames, landmark_jitter, still_frames  # noqa: E402
from fye_core.image import load_image, prepare_reference  # noqa: E402
from fye_core.landmarks import (  # noqa: E402
    EXPRESSION_REGIONS,
    FaceLandmarkDetector,
    MotionControls,
    align_motion,
    detect_face_track,
    detect_reference,
    expressiveness,
    render_expression_landmarks,
)
from fye_core.video import iter_video_frames, probe_video  # noqa: E402

PORTRAIT = "portrait_painting_s9.jpg"
SHORT, LONG = "lp_d0_driving.mp4", "lp_d11_driving_long.mp4"
HELD_POSE = {"rotation": 0.0, "translation": 0.0}


def detect_video(path: Path, detector):
    return detect_face_track(iter_video_frames(path), detector=detector, fps=probe_video(path).fps)


def region_checks(reference, driving) -> dict:
    official = align_motion(reference, driving, MotionControls(**HELD_POSE))
    results = {}
    for region, points in EXPRESSION_REGIONS.items():
        own = official.reference[points]
        kept = align_motion(reference, driving, MotionControls(**HELD_POSE, **{region: 0.0})).points[:, points]
        offsets = official.points[:, points] - own
        doubled = align_motion(reference, driving, MotionControls(**HELD_POSE, **{region: 2.0})).points[:, points] - own
        moving = np.linalg.norm(offsets, axis=(1, 2)) > 1.0
        ratio = np.linalg.norm(doubled, axis=(1, 2))[moving] / np.linalg.norm(offsets, axis=(1, 2))[moving]
        results[region] = {"strength_0_max_px": float(np.abs(kept - own).max()),
                           "official_max_offset_px": float(np.abs(offsets).max()),
                           "strength_2_ratio_min": float(ratio.min()), "strength_2_ratio_max": float(ratio.max())}
    relative = align_motion(reference, driving, MotionControls(relative="first"))
    results["relative_first_frame_max_px"] = float(np.abs(relative.points[0] - relative.reference).max())
    return results


def filter_checks(reference, driving) -> dict:
    raw = align_motion(reference, driving)
    still = still_frames(raw.points, np.linalg.norm(np.ptp(raw.reference, axis=0)))
    fastest = fastest_turn(driving.transforms)
    centre = raw.points[:, :468, 0].mean(axis=1)
    results = {"frames": len(raw), "still_frames": len(still), "fastest_turn_frame": fastest,
               "unfiltered_jitter_px": landmark_jitter(raw.points, still)}
    defaults = MotionControls()
    for name, controls in (("one-euro", MotionControls(filter="one-euro")),
                           ("mean 5", MotionControls(smooth_window=5))):
        points = align_motion(reference, driving, controls).points
        results[name] = {"jitter_ratio": landmark_jitter(points, still) / results["unfiltered_jitter_px"],
                         "lag_frames": lag_frames(centre, points[:, :468, 0].mean(axis=1), fastest)}
    results["one-euro"].update(min_cutoff=defaults.min_cutoff, beta=defaults.beta)
    return results


def face_box(points: np.ndarray, size: int, margin: float = 0.35) -> tuple[int, int, int]:
    """A square (left, top, side) around landmarks (..., 2), ``margin`` of the face's size on each side."""
    low, high = points.reshape(-1, 2).min(axis=0), points.reshape(-1, 2).max(axis=0)
    side = min(int(np.ceil((high - low).max() * (1 + 2 * margin))), size)
    left, top = np.clip(((low + high) / 2 - side / 2).astype(int), 0, size - side)
    return int(left), int(top), side


def tile(image: np.ndarray, box: tuple[int, int, int], size: int = 256) -> np.ndarray:
    from PIL import Image

    left, top, side = box
    return np.asarray(Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side])).resize(
        (size, size), Image.NEAREST))


def driving_tile(frame: np.ndarray, landmarks: np.ndarray, margin: float = 0.35) -> np.ndarray:
    """A driving frame cropped around its face (normalised landmarks (478, 3))."""
    return tile(frame, face_box(landmarks[:, :2] * frame.shape[1::-1], min(frame.shape[:2]), margin))


def chosen_frames(driving, count: int = 4) -> list[int]:
    """The most expressive frames, spread over the clip."""
    scores = expressiveness(driving.blendshapes)
    spans = np.array_split(np.arange(len(driving)), count)
    return [int(span[np.argmax(scores[span])]) for span in spans]


def write_picture(path: Path, portrait: np.ndarray, reference, driving, frames_rgb: list[np.ndarray]) -> None:
    """Driving frames on top, then the portrait with its landmarks at expression strength 0, 1 and 2 (head pose
    held, so that only the expression changes)."""
    from PIL import Image

    frames = chosen_frames(driving)
    rows = [[driving_tile(frames_rgb[i], driving.landmarks[i]) for i in frames]]
    motions = [align_motion(reference, driving, MotionControls(expression=s, **HELD_POSE)) for s in (0.0, 1.0, 2.0)]
    box = face_box(np.concatenate([m.points[frames] for m in motions]), portrait.shape[0])
    for motion in motions:
        drawn = render_expression_landmarks(motion.points[frames], motion.width, motion.height,
                                            background=np.broadcast_to(portrait, (len(frames), *portrait.shape)))
        rows.append([tile(image, box) for image in drawn])
    Image.fromarray(np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)).save(path)


def write_overview(path: Path, portrait: np.ndarray, reference, driving, frames_rgb: list[np.ndarray]) -> None:
    """The portrait, then driving frames over the landmark frames retargeted onto the portrait (what the
    diffusion model is conditioned on), over those landmarks drawn on the portrait."""
    from PIL import Image

    frames = chosen_frames(driving)
    motion = align_motion(reference, driving)
    black = np.zeros((256, 256, 3), np.uint8)
    box = face_box(motion.points[frames], portrait.shape[0], margin=0.6)
    landmarks = render_expression_landmarks(motion.points[frames], motion.width, motion.height)
    over = render_expression_landmarks(motion.points[frames], motion.width, motion.height,
                                       background=np.broadcast_to(portrait, (len(frames), *portrait.shape)))
    rows = [[tile(portrait, box), *(driving_tile(frames_rgb[i], driving.landmarks[i], 0.6) for i in frames)],
            [black, *(tile(image, box) for image in landmarks)],
            [black, *(tile(image, box) for image in over)]]
    Image.fromarray(np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("FYE_SHARED") or REPO.parent / "shared"))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--picture", type=Path, default=None,
                        help="PNG: driving frames, then the portrait at expression strength 0, 1 and 2 (pose held)")
    parser.add_argument("--overview", type=Path, default=None,
                        help="PNG: portrait and driving frames, the retargeted landmark frames, and them over the "
                             "portrait")
    args = parser.parse_args()
    data = args.shared / "data"
    os.environ.setdefault("FYE_FACE_LANDMARKER",
                          str(args.shared / "models" / "face_landmarker_v2_with_blendshapes.task"))
    portrait = prepare_reference(load_image(data / PORTRAIT))
    with FaceLandmarkDetector(mode="image") as detector:
        reference = detect_reference(portrait, detector=detector)
        short, long = detect_video(data / SHORT, detector), detect_video(data / LONG, detector)
    results = {"regions": region_checks(reference, short), "filters": filter_checks(reference, long),
               "config": {"portrait": PORTRAIT, "regions_video": SHORT, "filter_video": LONG,
                          "size": list(portrait.shape[1::-1]), "machine": platform.processor() or platform.machine()}}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.picture or args.overview:
        frames_rgb = list(iter_video_frames(data / SHORT))
        if args.picture:
            write_picture(args.picture, portrait, reference, short, frames_rgb)
        if args.overview:
            write_overview(args.overview, portrait, reference, short, frames_rgb)


if __name__ == "__main__":
    main()
