"""Per-stage time per frame of the landmark pipeline on the shared driving videos.

Stages: decode (PyAV), detect (MediaPipe FaceLandmarker), geometry (our metric-mesh port), align
(retargeting + projection + iris), render (expression-aware drawing). Also reports how far MediaPipe's
VIDEO mode (tracking) lands from IMAGE mode (the official, per-frame detection), and what each way of
getting a reference face costs: detection, the face crop's passes, the enlarged-crop search for a small
face (and its worst case, an image without a face), and the canonical face fitted to a box or five points.

    .venv/bin/python bench/landmarks.py [--shared DIR] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fye_core.image import load_image, prepare_reference  # noqa: E402
from fye_core.landmarks import (  # noqa: E402
    FaceLandmarkDetector,
    align_motion,
    detect_reference,
    load_canonical_face_model,
    metric_face_geometry,
    render_expression_landmarks,
)
from fye_core.landmarks.track import FaceTrack  # noqa: E402
from fye_core.video import iter_video_frames, probe_video  # noqa: E402

VIDEOS = ("lp_d0_driving.mp4", "fye_temple_driving.mp4", "lp_d11_driving_long.mp4")
PORTRAIT = "portrait_painting_s9.jpg"


def best_of(repeats: int, fn):
    """(best seconds, result of the last run)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def detect_all(detector, frames):
    return [detector.detect(frame) for frame in frames]


def bench_video(path: Path, reference: FaceTrack, model, repeats: int) -> dict:
    info = probe_video(path)
    t_decode, frames = best_of(repeats, lambda: list(iter_video_frames(path)))
    n = len(frames)
    with FaceLandmarkDetector(mode="image") as detector:
        detect_all(detector, frames[:5])  # warm-up
        t_detect, found = best_of(repeats, lambda: detect_all(detector, frames))
    with FaceLandmarkDetector(mode="video") as detector:
        t_video, tracked = best_of(1, lambda: detect_all(detector, frames))
    detected = np.array([f is not None for f in found])
    landmarks = np.stack([f[0] for f in found if f is not None])
    blendshapes = np.stack([f[1] for f in found if f is not None])
    t_geometry, (mesh, transforms) = best_of(
        repeats, lambda: metric_face_geometry(landmarks, info.width, info.height, model))
    track = FaceTrack(landmarks=landmarks, mesh=mesh, transforms=transforms, blendshapes=blendshapes,
                      detected=np.ones(len(landmarks), bool), width=info.width, height=info.height, fps=info.fps)
    t_align, motion = best_of(repeats, lambda: align_motion(reference, track))
    t_render, _ = best_of(repeats, lambda: render_expression_landmarks(motion.points, motion.width, motion.height))

    both = [i for i in range(n) if found[i] is not None and tracked[i] is not None]
    size = np.array([info.width, info.height])
    deviation = np.linalg.norm((np.stack([found[i][0][:, :2] for i in both])
                                - np.stack([tracked[i][0][:, :2] for i in both])) * size, axis=-1)
    per_frame = {name: 1e3 * t / n for name, t in (("decode", t_decode), ("detect", t_detect),
                                                  ("geometry", t_geometry), ("align", t_align),
                                                  ("render", t_render), ("detect_video_mode", t_video))}
    return dict(frames=n, detected=int(detected.sum()), size=f"{info.width}x{info.height}", ms=per_frame,
                video_mode_px_mean=float(deviation.mean()), video_mode_px_max=float(deviation.max()))


def bench_reference_paths(shared: Path, repeats: int) -> list[tuple[str, float, str]]:
    """(path, best ms, detail) for every way of getting a reference face."""
    import skimage.data
    from PIL import Image

    from fye_core.crop import detect_face_crop
    from fye_core.errors import FYEInputError
    from fye_core.landmarks import FacePlacement

    painting = load_image(shared / "data" / PORTRAIT)
    sculpture = load_image(shared / "data" / "portrait_sculpture_s6.jpg")
    small = np.full((1024, 1024, 3), 128, np.uint8)
    small[600:760, 700:860] = np.asarray(Image.fromarray(sculpture).resize((160, 160), Image.BICUBIC))
    cat = skimage.data.chelsea()

    def cat_without_placement():
        try:
            detect_reference(cat, detector=detector)
        except FYEInputError:
            return "no face, as expected"
        return "a face?"

    rows = []
    with FaceLandmarkDetector(mode="image") as detector:
        cases = (
            ("detect, painting 720x1280", lambda: detect_reference(painting, detector=detector).source),
            ("face crop, painting", lambda: f"drift {detect_face_crop(painting, detector=detector).drift:.2f} px"),
            ("enlarged-crop search, 160 px face in 1024x1024",
             lambda: detect_reference(small, detector=detector).source),
            ("search that fails, cat 451x300", cat_without_placement),
            ("fit to a box, cat", lambda: detect_reference(cat, detector=detector,
                                                            placement=FacePlacement(box=(70, 10, 320, 290))).source),
            ("fit to five points, cat", lambda: detect_reference(cat, detector=detector, placement=FacePlacement(
                points=[[170, 113], [317, 135], [262, 243], [232, 272], [292, 270]])).source),
        )
        for name, run in cases:
            seconds, detail = best_of(repeats, run)
            rows.append((name, 1e3 * seconds, detail))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("FYE_SHARED", REPO.parent / "shared")))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shared_model = args.shared / "models" / "face_landmarker_v2_with_blendshapes.task"
    os.environ.setdefault("FYE_FACE_LANDMARKER", str(shared_model))

    import cv2
    import mediapipe
    import scipy

    print(f"config: python {platform.python_version()}, {os.cpu_count()} cpus, {platform.machine()}, "
          f"mediapipe {mediapipe.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"opencv {cv2.__version__}, best of {args.repeats}, portrait {PORTRAIT} (letterbox 512)")
    reference = detect_reference(prepare_reference(load_image(args.shared / "data" / PORTRAIT)))
    model = load_canonical_face_model(os.environ["FYE_FACE_LANDMARKER"])
    header = ("video", "frames", "size", "decode", "detect", "geometry", "align", "render", "geo+align+render",
              "share_of_detect", "video_mode", "video_vs_image_px")
    print(" | ".join(header))
    for name in VIDEOS:
        r = bench_video(args.shared / "data" / name, reference, model, args.repeats)
        ms = r["ms"]
        ours = ms["geometry"] + ms["align"] + ms["render"]
        print(" | ".join([name, f"{r['detected']}/{r['frames']}", r["size"]]
                         + [f"{ms[k]:.3f}" for k in ("decode", "detect", "geometry", "align", "render")]
                         + [f"{ours:.3f}", f"{ours / ms['detect']:.3f}", f"{ms['detect_video_mode']:.3f}",
                            f"mean {r['video_mode_px_mean']:.3f} max {r['video_mode_px_max']:.3f}"]))
    print("times in ms per frame; share_of_detect = (geometry + align + render) / detect")
    print("reference face | ms | result")
    for name, ms, detail in bench_reference_paths(args.shared, args.repeats):
        print(f"{name} | {ms:.1f} | {detail}")


if __name__ == "__main__":
    main()
