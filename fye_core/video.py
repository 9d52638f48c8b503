"""Video decoding and encoding with PyAV (the decoder the golden fixtures were made with)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from .errors import FYEInputError
from .files import atomic_output


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int | None  # from the container; None when it does not say
    has_audio: bool


def _open(path: str | os.PathLike):
    if not os.path.isfile(path):
        raise FYEInputError(f"driving video not found: {path}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise FYEInputError(f"cannot read the driving video {path}: {err}; use an mp4, mov, webm or mkv file") from None
    if not container.streams.video:
        container.close()
        raise FYEInputError(f"the driving video {path} has no video stream")
    return container


def probe_video(path: str | os.PathLike) -> VideoInfo:
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 30
        return VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height, fps=float(rate),
                         frame_count=stream.frames or None, has_audio=bool(container.streams.audio))


def iter_video_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Every frame as RGB uint8 (H, W, 3), decoded in order; memory stays at one frame."""
    with _open(path) as container:
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            raise FYEInputError(f"the driving video {path} is damaged: {err}") from None


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """All frames (N, H, W, 3) uint8 and the frame rate."""
    info = probe_video(path)
    frames = list(iter_video_frames(path))
    if not frames:
        raise FYEInputError(f"the driving video {path} has no frames")
    return np.stack(frames), info.fps


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 16) -> int:
    """Encodes RGB uint8 frames to H.264 (yuv420p, even sizes padded) atomically; returns the frame count."""
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    with atomic_output(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                height, width = frame.shape[:2]
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height = width + width % 2, height + height % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf)}
            if frame.shape[0] % 2 or frame.shape[1] % 2:
                frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is None:
            raise FYEInputError(f"no frames to write to {path}")
        for packet in stream.encode():
            container.mux(packet)
    return count
