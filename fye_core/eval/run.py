"""Scoring generated videos: one pair (``score_pair``), several with shared networks (``score_pairs``), a
benchmark folder (``find_pairs``, ``folder_report``), and the JSON and tables that show the scores."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FYEInputError
from ..files import atomic_output
from ..image import load_image, prepare_reference
from ..landmarks import FaceLandmarkDetector, FaceTrack, Motion, align_motion, detect_face_track, detect_reference
from ..video import read_video
from .fvd import CLIP_FRAMES, frechet_distance, i3d_features, load_i3d
from .identity import aligned_face, identity_similarity, load_arcface
from .landmarks import DEFAULT_THRESHOLD_PX, landmark_accuracy, motion_intensities, track_pixels
from .metrics import check_same_frames, l1, psnr, video_ssim
from .perceptual import load_lpips, lpips_distances
from .weights import MetricUnavailable

# metric -> (table label, format); the order of tables and JSON
METRICS = {
    "l1": ("L1", "{:.4f}"),
    "ssim": ("SSIM", "{:.4f}"),
    "psnr": ("PSNR dB", "{:.2f}"),
    "lpips": ("LPIPS", "{:.4f}"),
    "fvd": ("FVD", "{:.1f}"),
    "landmark_distance_px": ("landmark px", "{:.2f}"),
    "landmark_within_threshold": ("landmarks within", "{:.3f}"),
    "identity_similarity": ("ID sim", "{:.4f}"),
    "expression_intensity_driving": ("I_e driving", "{:.4f}"),
    "head_intensity_driving": ("I_h driving", "{:.4f}"),
    "expression_intensity_pred": ("I_e pred", "{:.4f}"),
    "head_intensity_pred": ("I_h pred", "{:.4f}"),
}
SELF_METRICS = ("l1", "ssim", "psnr", "lpips", "fvd")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MANIFEST = "pairs.json"


@dataclass
class EvalOptions:
    reference_mode: str = "letterbox"
    drop_first_frame: bool = False
    max_frames: int | None = None
    landmark_threshold_px: float = DEFAULT_THRESHOLD_PX
    lpips_weights: Path | None = None
    lpips_backbone: Path | None = None
    i3d_weights: Path | None = None
    arcface_onnx: Path | None = None
    face_landmarker: Path | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class EvalPair:
    """A generated video with what made it: the driving video, the reference image (None: the first driving
    frame, as self-reenactment defines it) and, for self-reenactment, the ground-truth video."""

    pred: Path
    driving: Path
    reference: Path | None = None
    gt: Path | None = None
    name: str = ""


@dataclass
class PairScore:
    """The metrics of one pair, None where unavailable (``unavailable`` says why), and the I3D features of the
    ground-truth and generated clips when FVD was computed (a benchmark's FVD pools them)."""

    pair: EvalPair
    frames: int
    pred_frames_without_face: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    fvd_features: tuple[np.ndarray, np.ndarray] | None = None

    def measure(self, names: tuple[str, ...], compute: Callable[[], tuple]) -> None:
        """Runs ``compute`` for the values of ``names``; a ``MetricUnavailable`` leaves them None, with its reason."""
        try:
            values = compute()
        except MetricUnavailable as reason:
            values = (None,) * len(names)
            self.unavailable.update(dict.fromkeys(names, str(reason)))
        self.metrics.update(zip(names, values, strict=True))

    def as_json(self, options: EvalOptions) -> dict:
        paths = {key: None if value is None else str(value) for key, value in
                 (("pred", self.pair.pred), ("driving", self.pair.driving), ("reference", self.pair.reference),
                  ("gt", self.pair.gt))}
        return {"name": self.pair.name or self.pair.pred.stem, **paths, "frames": self.frames,
                "reference_mode": options.reference_mode, "drop_first_frame": options.drop_first_frame,
                "landmark_threshold_px": options.landmark_threshold_px,
                "pred_frames_without_face": self.pred_frames_without_face,
                "metrics": {name: self.metrics[name] for name in METRICS},
                "unavailable": {name: self.unavailable[name] for name in METRICS if name in self.unavailable}}


class OptionalNetworks:
    """The user-supplied metric networks, loaded once before any pair is scored (so a wrong path fails at once);
    one that cannot be had is kept as its reason."""

    def __init__(self, options: EvalOptions):
        loaders = {"lpips": lambda: load_lpips(options.lpips_weights, options.lpips_backbone, options.device),
                   "i3d": lambda: load_i3d(options.i3d_weights, options.device),
                   "arcface": lambda: load_arcface(options.arcface_onnx)}
        self._networks: dict[str, object] = {}
        for name, load in loaders.items():
            try:
                self._networks[name] = load()
            except MetricUnavailable as reason:
                self._networks[name] = reason

    def get(self, name: str):
        """The network, or its ``MetricUnavailable`` raised."""
        if isinstance(self._networks[name], MetricUnavailable):
            raise self._networks[name]
        return self._networks[name]


def _reference_image(pair: EvalPair, driving: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    if pair.reference is None:
        return prepare_reference(driving[0], mode), "the first driving frame"
    return prepare_reference(load_image(pair.reference), mode), f"the reference {pair.reference}"


def _needs_ground_truth() -> tuple:
    raise MetricUnavailable("self-reenactment only: pass --gt, the video the prediction should reproduce")


def _no_face() -> tuple:
    raise MetricUnavailable("MediaPipe found no face in any predicted frame")


def _fvd(score: PairScore, networks: OptionalNetworks, pred: np.ndarray, gt: np.ndarray) -> tuple[float]:
    model = networks.get("i3d")
    if len(gt) < 2 * CLIP_FRAMES:
        raise MetricUnavailable(f"FVD needs at least {2 * CLIP_FRAMES} frames (two {CLIP_FRAMES}-frame clips), the "
                                f"videos have {len(gt)}")
    score.fvd_features = (i3d_features(model, gt), i3d_features(model, pred))
    return (frechet_distance(*score.fvd_features),)


def _self_reenactment(score: PairScore, networks: OptionalNetworks, pred: np.ndarray, gt: np.ndarray) -> None:
    score.measure(("l1",), lambda: (l1(pred, gt),))
    score.measure(("ssim", "psnr"), lambda: (video_ssim(pred, gt), psnr(pred, gt)))  # scikit-image's
    score.measure(("lpips",), lambda: (float(lpips_distances(networks.get("lpips"), pred, gt).mean()),))
    score.measure(("fvd",), lambda: _fvd(score, networks, pred, gt))


def _identity(networks: OptionalNetworks, reference: np.ndarray, reference_track: FaceTrack, pred: np.ndarray,
              pred_track: FaceTrack) -> tuple[float]:
    embed = networks.get("arcface")
    if not pred_track.detected.any():
        _no_face()
    faces = [aligned_face(frame, points) for frame, points, found in
             zip(pred, track_pixels(pred_track), pred_track.detected, strict=True) if found]
    return (identity_similarity(embed, aligned_face(reference, track_pixels(reference_track)[0]), np.stack(faces)),)


def _cross_reenactment(score: PairScore, networks: OptionalNetworks, options: EvalOptions, pred: np.ndarray,
                       pred_track: FaceTrack, motion: Motion, reference: np.ndarray, reference_track: FaceTrack,
                       driving_track: FaceTrack) -> None:
    """Landmark accuracy against the aligned driving landmarks, identity, and the motion intensities."""
    pred_points, found = track_pixels(pred_track), pred_track.detected
    distance, within = landmark_accuracy(pred_points, found, motion.points, options.landmark_threshold_px)
    score.measure(("landmark_distance_px", "landmark_within_threshold"),
                  lambda: (distance, within) if found.any() else _no_face())
    score.measure(("identity_similarity",), lambda: _identity(networks, reference, reference_track, pred, pred_track))
    driving_points = track_pixels(driving_track)[motion.frame_index]
    score.measure(("expression_intensity_driving", "head_intensity_driving"),
                  lambda: motion_intensities(driving_points, driving_track.detected[motion.frame_index]))
    score.measure(("expression_intensity_pred", "head_intensity_pred"),
                  lambda: motion_intensities(pred_points, found) if found.any() else _no_face())


def score_pair(pair: EvalPair, options: EvalOptions, detector: FaceLandmarkDetector,
               networks: OptionalNetworks) -> PairScore:
    """Every metric of one generated video; those that cannot be computed are None, with the reason."""
    skip = int(options.drop_first_frame)
    count = None if options.max_frames is None else options.max_frames + skip
    driving = read_video(pair.driving, "driving", count)[0]
    pred = read_video(pair.pred, "predicted", options.max_frames)[0]
    reference, reference_name = _reference_image(pair, driving, options.reference_mode)
    if pred.shape[1:3] != reference.shape[:2]:
        raise FYEInputError(f"the predicted video {pair.pred} is {pred.shape[2]}x{pred.shape[1]} but {reference_name} "
                            f"prepared with --reference-mode {options.reference_mode} is {reference.shape[1]}x"
                            f"{reference.shape[0]}: pass the --reference-mode the video was made with (a "
                            "--paste-back video cannot be scored: score its 512x512 crops)")
    reference_track = detect_reference(reference, name=reference_name, detector=detector)
    driving_track = detect_face_track(driving, detector=detector)
    motion = align_motion(reference_track, driving_track, drop_first_frame=options.drop_first_frame)
    if len(pred) != len(motion):
        raise FYEInputError(f"the predicted video {pair.pred} has {len(pred)} frames but the driving video "
                            f"{pair.driving} gives {len(motion)}: pass --drop-first-frame if it was made with it, "
                            "or --max-frames")
    pred_track = detect_face_track(pred, detector=detector)
    score = PairScore(pair, len(pred), int((~pred_track.detected).sum()))
    if pair.gt is not None:
        gt = read_video(pair.gt, "ground-truth", count)[0][skip:]
        check_same_frames(pred, gt, f"the predicted video {pair.pred}", f"the ground-truth video {pair.gt}")
        _self_reenactment(score, networks, pred, gt)
    else:
        score.measure(SELF_METRICS, _needs_ground_truth)
    _cross_reenactment(score, networks, options, pred, pred_track, motion, reference, reference_track, driving_track)
    return score


def find_pairs(folder: Path) -> list[EvalPair]:
    """A benchmark folder's pairs: listed in ``pairs.json`` (``[{"name", "pred", "driving", "reference", "gt"}]``,
    paths relative to the folder, reference and gt optional), or else one subfolder per pair holding
    ``pred.mp4``, ``driving.mp4`` and optionally ``reference.png|jpg|jpeg|webp`` and ``gt.mp4``."""
    if not folder.is_dir():
        raise FYEInputError(f"benchmark folder not found: {folder}")
    manifest = folder / MANIFEST
    if manifest.is_file():
        return _manifest_pairs(manifest)
    pairs = [_folder_pair(sub) for sub in sorted(folder.iterdir()) if (sub / "pred.mp4").is_file()]
    if not pairs:
        raise FYEInputError(f"{folder} holds no {MANIFEST} and no subfolder with a pred.mp4: give each pair a "
                            "subfolder with pred.mp4, driving.mp4 and reference.png (or gt.mp4), or list them in "
                            f"{MANIFEST}")
    return pairs


def _folder_pair(sub: Path) -> EvalPair:
    references = [sub / f"reference{suffix}" for suffix in IMAGE_SUFFIXES if (sub / f"reference{suffix}").is_file()]
    gt = sub / "gt.mp4"
    return EvalPair(pred=sub / "pred.mp4", driving=sub / "driving.mp4", reference=references[0] if references else None,
                    gt=gt if gt.is_file() else None, name=sub.name)


def _manifest_pairs(manifest: Path) -> list[EvalPair]:
    try:
        entries = json.loads(manifest.read_text())
        if not isinstance(entries, list) or not entries:
            raise ValueError("it must be a non-empty list of pairs")
        return [EvalPair(pred=manifest.parent / entry["pred"], driving=manifest.parent / entry["driving"],
                         reference=manifest.parent / entry["reference"] if entry.get("reference") else None,
                         gt=manifest.parent / entry["gt"] if entry.get("gt") else None,
                         name=entry.get("name") or Path(entry["pred"]).stem) for entry in entries]
    except (ValueError, KeyError, TypeError) as err:
        raise FYEInputError(f"cannot read {manifest} ({type(err).__name__}: {err}): it must be a JSON list of "
                            '{"name", "pred", "driving", "reference", "gt"} with paths relative to its folder, '
                            "pred and driving required") from None


def score_pairs(pairs: list[EvalPair], options: EvalOptions,
                progress: Callable[[int, int, EvalPair], None] | None = None) -> list[PairScore]:
    """Scores every pair with one face detector and the optional networks loaded once."""
    networks = OptionalNetworks(options)
    scores = []
    with FaceLandmarkDetector(options.face_landmarker, "image") as detector:
        for index, pair in enumerate(pairs):
            if progress is not None:
                progress(index, len(pairs), pair)
            scores.append(score_pair(pair, options, detector, networks))
    return scores


def summarise(scores: list[PairScore]) -> tuple[dict, dict, dict]:
    """The mean of each metric over the pairs that have it, the count of those pairs, and the reasons of metrics
    no pair has. FVD is not averaged: it is computed once from every pair's clips together."""
    means, counts, unavailable = {}, {}, {}
    for name in METRICS:
        values = [score.metrics[name] for score in scores if score.metrics[name] is not None]
        means[name], counts[name] = (float(np.mean(values)) if values else None), len(values)
        if not values:
            unavailable[name] = next(score.unavailable[name] for score in scores if name in score.unavailable)
    features = [score.fvd_features for score in scores if score.fvd_features is not None]
    if features:
        means["fvd"] = frechet_distance(np.concatenate([real for real, _ in features]),
                                        np.concatenate([fake for _, fake in features]))
    return means, counts, unavailable


def folder_report(folder: Path, scores: list[PairScore], options: EvalOptions) -> dict:
    means, counts, unavailable = summarise(scores)
    return {"folder": str(folder), "pairs": [score.as_json(options) for score in scores], "mean": means,
            "pairs_with_value": counts, "unavailable": unavailable}


def _json_safe(value):
    """JSON has no infinity (the PSNR of identical frames): it is written as the string "inf"."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def write_report(report: dict, path: str | os.PathLike) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")
    return Path(path)


def _label(name: str, threshold: float) -> str:
    label = METRICS[name][0]
    return f"{label} {threshold:g}px" if name == "landmark_within_threshold" else label


def _value(name: str, value: float | None) -> str:
    return "n/a" if value is None else METRICS[name][1].format(value)


def format_pair_table(report: dict) -> str:
    """One metric a line; an unavailable metric says why."""
    threshold = report["landmark_threshold_px"]
    width = max(len(_label(name, threshold)) for name in METRICS) + 2
    lines = [f"{report['name']}: {report['frames']} frames"]
    for name, value in report["metrics"].items():
        shown = f"unavailable ({report['unavailable'][name]})" if value is None else _value(name, value)
        lines.append(f"  {_label(name, threshold):<{width}}{shown}")
    return "\n".join(lines)


def format_folder_table(report: dict) -> str:
    """One row per pair and the means; metrics no pair has are listed under the table with their reasons."""
    pairs = report["pairs"]
    threshold = pairs[0]["landmark_threshold_px"]
    shown = [name for name in METRICS if name not in report["unavailable"]]
    rows = [[pair["name"], *(_value(name, pair["metrics"][name]) for name in shown)] for pair in pairs]
    rows.append(["mean", *(_value(name, report["mean"][name]) for name in shown)])
    header = ["pair", *(_label(name, threshold) for name in shown)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))) for row in [header, *rows]]
    lines += [f"{_label(name, threshold)}: unavailable ({reason})" for name, reason in report["unavailable"].items()]
    if "fvd" in shown:
        lines.append("FVD in the mean row: computed from all pairs' clips together")
    return "\n".join(lines)
