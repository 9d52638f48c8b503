"""Video decoding and encoding with PyAV (the decoder the golden fixtures were made with)."""
from __future__ import annotations

import itertools
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


def _open(path: str | os.PathLike, role: str = "driving"):
    if not os.path.isfile(path):
        raise FYEInputError(f"{role} video not found: {path}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise FYEInputError(f"cannot read the {role} video {path}: {err}; use an mp4, mov, webm or mkv file") from None
    if not container.streams.video:
        container.close()
        raise FYEInputError(f"the {role} video {path} has no video stream")
    return container


def probe_video(path: str | os.PathLike, role: str = "driving") -> VideoInfo:
    """Size, frame rate, frame count and sound of a video; ``role`` names it in errors ("driving", ...)."""
    with _open(path, role) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 30
        return VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height, fps=float(rate),
                         frame_count=stream.frames or None, has_audio=bool(container.streams.audio))


def iter_video_frames(path: str | os.PathLike, role: str = "driving",
                      timestamps: list | None = None) -> Iterator[np.ndarray]:
    """Every frame as RGB uint8 (H, W, 3), decoded in order; memory stays at one frame. ``timestamps``, when
    given, receives each frame's presentation timestamp (None where the file has none), for ``frames_at``."""
    with _open(path, role) as container:
        try:
            for frame in container.decode(video=0):
                if timestamps is not None:
                    timestamps.append(frame.pts)
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            raise FYEInputError(f"the {role} video {path} is damaged: {err}") from None


SEEK_GAP = 64  # wanted frames closer than this are decoded through rather than sought


def frames_at(path: str | os.PathLike, indices: Iterable[int], timestamps: np.ndarray | None = None,
              role: str = "driving") -> dict[int, np.ndarray]:
    """The frames at ``indices`` (places in decode order, as ``iter_video_frames`` counts them).

    With the ``timestamps`` of every frame it seeks to the keyframe before each group of wanted frames instead
    of decoding from the start, and knows frames by timestamp, so variable frame rates give the same frames.
    Frames a seek does not give, or every frame when timestamps are missing or not increasing, come from
    decoding from the start.
    """
    wanted = sorted(set(indices))
    frames = {}
    if timestamps is not None and np.all(np.diff(timestamps) > 0):
        frames = seek_frames(path, wanted, timestamps, role)
    missing = set(wanted) - set(frames)
    if missing:
        for index, frame in enumerate(iter_video_frames(path, role)):
            if index in missing:
                frames[index] = frame
                missing.discard(index)
                if not missing:
                    break
    return frames


def seek_frames(path: str | os.PathLike, wanted: list[int], timestamps: np.ndarray, role: str = "driving"
                ) -> dict[int, np.ndarray]:
    """The frames of ``wanted`` (sorted) that seeking by ``timestamps`` (increasing) gives; ``frames_at``
    decodes the rest."""

    def index_of(pts: int | None) -> int | None:
        if pts is None:
            return None
        index = int(np.searchsorted(timestamps, pts))
        return index if index < len(timestamps) and timestamps[index] == pts else None

    frames = {}
    with _open(path, role) as container:
        stream = container.streams.video[0]
        try:
            for group in np.split(np.array(wanted), np.flatnonzero(np.diff(wanted) > SEEK_GAP) + 1):
                members = set(group.tolist())
                container.seek(int(timestamps[group[0]]), stream=stream, backward=True, any_frame=False)
                first_key = None
                for frame in container.decode(stream):
                    if first_key is None and frame.key_frame:
                        first_key = frame.pts
                    index = index_of(frame.pts)
                    # frames shown before the first keyframe after a seek may refer to frames before it (open GOP)
                    if first_key is None or index is None or frame.pts < first_key:
                        continue
                    if index > group[-1]:
                        break
                    if index in members:
                        frames[index] = frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            raise FYEInputError(f"the {role} video {path} is damaged: {err}") from None
    return frames


def read_video(path: str | os.PathLike, role: str = "driving",
               max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """The frames (N, H, W, 3) uint8, the first ``max_frames`` only when given, and the frame rate."""
    info = probe_video(path, role)
    frames = list(itertools.islice(iter_video_frames(path, role), max_frames))
    if not frames:
        raise FYEInputError(f"the {role} video {path} has no frames")
    return np.stack(frames), info.fps


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 16,
                audio_from: str | os.PathLike | None = None, audio_start: float = 0.0) -> int:
    """Encodes RGB uint8 frames to H.264 (yuv420p, even sizes padded) atomically; returns the frame count.

    ``audio_from``: a video whose audio track (if any) is muxed in as AAC from ``audio_start`` seconds on
    (where the first frame was in the driving video), cut to the frames' duration.
    """
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    with atomic_output(path) as tmp, av.open(str(tmp), mode="w") as container:
        source = _open(audio_from) if audio_from is not None else None
        try:
            audio_in = source.streams.audio[0] if source is not None and source.streams.audio else None
            audio_out = None
            if audio_in is not None:  # streams must all exist before the first packet is written
                audio_out = container.add_stream("aac", rate=audio_in.rate, layout=audio_in.layout.name)
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
            if audio_out is not None:
                _copy_audio(source, audio_in, audio_out, container, audio_start, count / float(rate))
        finally:
            if source is not None:
                source.close()
    return count


def _slice_audio(frame, start: int, stop: int):
    """Samples ``start:stop`` of an audio frame (planar or packed)."""
    data = frame.to_ndarray()
    channels = 1 if frame.format.is_planar else len(frame.layout.channels)
    sliced = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[..., start * channels:stop * channels]),
                                        format=frame.format.name, layout=frame.layout.name)
    sliced.sample_rate = frame.sample_rate
    return sliced


def _copy_audio(source, audio_in, audio_out, container, start: float, duration: float) -> None:
    """Re-encodes the source's audio from ``start`` for ``duration`` seconds into ``audio_out``."""
    first = round(start * audio_in.rate)
    limit = first + round(duration * audio_in.rate)
    position = 0
    for frame in source.decode(audio_in):
        begin, end = position, position + frame.samples
        position = end
        if end <= first:
            continue
        if begin >= limit:
            break
        if begin < first or end > limit:
            frame = _slice_audio(frame, max(first - begin, 0), min(limit, end) - begin)
        frame.pts = None
        for packet in audio_out.encode(frame):
            container.mux(packet)
    for packet in audio_out.encode():
        container.mux(packet)
