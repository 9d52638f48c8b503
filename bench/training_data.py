"""Seconds per training sample read from a long video: seeking by the frames' timestamps (kept with the face
track) against decoding from the start, for single frames (stage 1) and 16-frame clips (stage 2).

The video is lp_d0 repeated to ``--frames`` frames at ``--size`` px (H.264, a keyframe every ``--gop`` frames,
written once into a temporary folder) with its face track repeated alike, so no detection is timed. Each
mode reads the same ``--samples`` samples (a reference frame and a target frame or clip, cropped, with their
landmark images and masks), one process, as a data-loader worker would.

    .venv/bin/python bench/training_data.py [--frames 3000] [--size 512] [--gop 250] [--samples 20]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import golden_track  # noqa: E402
from shared_data import VIDEOS, shared_path  # noqa: E402

from fye_core.training.data import FaceClipDataset, TrainingVideo  # noqa: E402
from fye_core.video import iter_video_frames, read_video  # noqa: E402


def long_video(folder: Path, frames: int, size: int, gop: int) -> tuple[Path, np.ndarray]:
    """lp_d0 repeated to ``frames`` frames; the path and every frame's timestamp."""
    import av

    clip, fps = read_video(shared_path("data", VIDEOS["lp_d0"]))
    path = folder / "long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        for index in range(frames):
            picture = av.VideoFrame.from_ndarray(clip[index % len(clip)], format="rgb24").reformat(size, size)
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    timestamps = []
    for _ in iter_video_frames(path, timestamps=timestamps):
        pass
    return path, np.array(timestamps, np.int64)


def seconds_per_sample(dataset: FaceClipDataset, samples: int) -> float:
    start = time.perf_counter()
    for item in range(samples):
        dataset[item]
    return (time.perf_counter() - start) / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000, help="frames of the long video (2 minutes at 25 fps)")
    parser.add_argument("--size", type=int, default=512, help="its width and height")
    parser.add_argument("--gop", type=int, default=250, help="frames between keyframes (x264's default)")
    parser.add_argument("--samples", type=int, default=20, help="samples read per mode")
    args = parser.parse_args()
    print(json.dumps(vars(args)))
    with tempfile.TemporaryDirectory() as folder:
        path, timestamps = long_video(Path(folder), args.frames, args.size, args.gop)
        lp_d0 = golden_track("driving_lp_d0")
        track = dataclasses.replace(lp_d0.select(np.arange(args.frames) % len(lp_d0)),
                                    width=args.size, height=args.size)
        for frames in (1, 16):
            for mode, known in (("seek", timestamps), ("from start", None)):
                dataset = FaceClipDataset([TrainingVideo(path, track, known)], frames=frames, size=args.size,
                                          length=args.samples)
                seconds = seconds_per_sample(dataset, args.samples)
                print(f"{frames:2d}-frame samples, {mode:10s} {seconds:7.3f} s/sample")


if __name__ == "__main__":
    main()
