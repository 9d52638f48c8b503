"""Training samples from a folder of talking-head videos (paper 4.1): cached face tracks, then a random
reference frame and a target frame (stage 1) or clip (stage 2) with their landmark images and FFG masks."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..crop import FaceCrop, crop_face
from ..errors import FYEInputError
from ..files import atomic_output
from ..landmarks import FaceLandmarkDetector, FaceTrack, detect_face_track, load_template, save_template
from ..landmarks.render import render_expression_landmarks
from ..video import frames_at, iter_video_frames, probe_video
from .config import TrainingConfig
from .masks import expression_mask, facial_mask

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


@dataclass(frozen=True)
class TrainingVideo:
    path: Path
    track: FaceTrack
    timestamps: np.ndarray | None = None  # every frame's pts, so samples seek instead of decoding from the start


def cached_track_path(video: Path, cache_dir: Path) -> Path:
    """The cache file of a video's face track; its size and modification time are in the name, so an edited
    video is detected again. Its frames' timestamps go beside it (``.pts.npy``)."""
    stat = video.stat()
    return cache_dir / f"{video.stem}-{stat.st_size}-{int(stat.st_mtime)}.track.npz"


def timestamps_path(track_path: Path) -> Path:
    return track_path.with_name(track_path.name.removesuffix(".track.npz") + ".pts.npy")


def load_training_videos(folder: str | os.PathLike, cache_dir: str | os.PathLike, frames: int = 1, stride: int = 1,
                         detector: FaceLandmarkDetector | None = None) -> list[TrainingVideo]:
    """Every video under ``folder`` with its face track (detected once, then read from ``cache_dir``).

    Videos without a clip of ``frames`` frames ``stride`` apart, all with a face, are left out and named on
    stderr.
    """
    folder, cache_dir = Path(folder), Path(cache_dir)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not paths:
        raise FYEInputError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under {folder}")
    videos = []
    for path in paths:
        cached, pts = cached_track_path(path, cache_dir), None
        if cached.is_file():
            track = load_template(cached)
            if timestamps_path(cached).is_file():
                pts = np.load(timestamps_path(cached), allow_pickle=False)
        else:
            found = []
            track = detect_face_track(iter_video_frames(path, "training", found), detector=detector,
                                       fps=probe_video(path, "training").fps)
            if None not in found:  # a file without timestamps is decoded from the start for each sample
                pts = np.array(found, np.int64)
                with atomic_output(timestamps_path(cached)) as tmp:
                    np.save(tmp, pts, allow_pickle=False)
            save_template(track, cached)
        if not len(clip_starts(track.detected, frames, stride)):
            print(f"skipping {path}: no {describe_clip(frames, stride)} with a face", file=sys.stderr)
            continue
        videos.append(TrainingVideo(path, track, pts))
    if not videos:
        raise FYEInputError(f"no video under {folder} has {describe_clip(frames, stride)} with a face")
    return videos


def load_run_videos(folder: str | os.PathLike, config: TrainingConfig) -> list[TrainingVideo]:
    """The videos under ``folder`` that a run of ``config`` can sample, their tracks cached in its output."""
    return load_training_videos(folder, Path(config.output) / "tracks", config.frames, config.clip_stride)


def describe_clip(frames: int, stride: int) -> str:
    return f"{frames} consecutive frames" if stride == 1 else f"{frames} frames {stride} apart"


def clip_starts(detected: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """First frames of every clip of ``length`` frames ``stride`` apart that all have a face (filled frames
    never train)."""
    span = stride * (length - 1) + 1
    if len(detected) < span:
        return np.zeros(0, int)
    clips = np.arange(len(detected) - span + 1)[:, None] + stride * np.arange(length)
    return np.flatnonzero(detected[clips].all(axis=1))


def centre_crop(width: int, height: int, size: int) -> FaceCrop:
    """The paper's preprocessing: the centred square, resized to ``size``."""
    side = min(width, height)
    return FaceCrop((width - side) // 2, (height - side) // 2, side, side, size, size, width, height)


class FaceClipDataset:
    """Map-style dataset (``torch.utils.data``) of ``length`` random samples, reproducible by ``seed``.

    Each item: ``reference`` (size, size, 3) uint8, a random frame with a face; ``target`` (F, size, size, 3)
    uint8, F = ``frames`` frames ``stride`` apart with a face (1 for stage 1, 16 for stage 2); ``landmarks``
    (F, size, size, 3) uint8, the targets' expression-aware landmark images; ``expression_mask`` and
    ``facial_mask`` (F, size/8, size/8) float32.
    """

    def __init__(self, videos: list[TrainingVideo], frames: int = 1, size: int = 512, length: int = 1000,
                 seed: int = 0, stride: int = 1):
        starts = [clip_starts(v.track.detected, frames, stride) for v in videos]
        self.videos = [v for v, found in zip(videos, starts, strict=True) if len(found)]
        self.starts = [found for found in starts if len(found)]
        if not self.videos:
            raise FYEInputError(f"no video has {describe_clip(frames, stride)} with a face")
        self.frames, self.stride, self.size, self.length, self.seed = frames, stride, size, length, seed

    @classmethod
    def for_run(cls, videos: list[TrainingVideo], config: TrainingConfig, length: int) -> FaceClipDataset:
        """``length`` samples of ``videos`` as a run of ``config`` draws them (its frames, stride, size, seed)."""
        return cls(videos, frames=config.frames, size=config.size, length=length, seed=config.seed,
                   stride=config.clip_stride)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, item))
        chosen = rng.integers(len(self.videos))
        video = self.videos[chosen]
        track = video.track
        reference = int(rng.choice(np.flatnonzero(track.detected)))
        start = int(rng.choice(self.starts[chosen]))
        clip = list(range(start, start + self.stride * self.frames, self.stride))
        frames = frames_at(video.path, [reference, *clip], video.timestamps, "training")
        crop = centre_crop(track.width, track.height, self.size)
        points = crop.from_source(track.landmarks[clip, :, :2] * [track.width, track.height])
        return {
            "reference": crop_face(frames[reference], crop),
            "target": np.stack([crop_face(frames[i], crop) for i in clip]),
            "landmarks": render_expression_landmarks(points, self.size, self.size),
            "expression_mask": expression_mask(points, self.size, self.size),
            "facial_mask": facial_mask(points, self.size, self.size),
        }
