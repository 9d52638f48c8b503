"""HunyuanPortrait's long-video schedule (spec §2.3, §2.6): the driving motion padded with fades at both ends,
and the circular 25-frame windows, shifted every denoising step, that cover the padded clip."""
from __future__ import annotations

import numpy as np

WINDOW = 25
OVERLAP = 3
SHIFT_OFFSET = 3
PAD_FRAMES = 15


def padded_motion(num_frames: int, pad_frames: int = PAD_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """The driving frame and the weight of each of the ``num_frames + 2 * pad_frames`` sampled frames.

    The motion fades in from zero over the first frame (weights ``i / P``, i = 0..P-1) and out over the last
    one (``1 - i / P``: the first end pad is the full last frame, the last is never zero), so that the
    circular windows join the clip's ends through a still face. Weights are float32, as the motion is.
    """
    ramp = np.arange(pad_frames) / pad_frames if pad_frames else np.zeros(0)
    source = np.concatenate([np.zeros(pad_frames, np.int64), np.arange(num_frames),
                             np.full(pad_frames, num_frames - 1)])
    weight = np.concatenate([ramp, np.ones(num_frames), 1 - ramp]).astype(np.float32)
    return source, weight


def window_shift(step: int, window: int = WINDOW, shift_offset: int = SHIFT_OFFSET) -> int:
    """How far back the windows of denoising step ``step`` start: ``shift_offset`` more each step, mod the
    window, so the seams between windows move from step to step."""
    return step * shift_offset % window


def step_windows(num_frames: int, step: int, window: int = WINDOW, overlap: int = OVERLAP,
                 shift_offset: int = SHIFT_OFFSET) -> np.ndarray:
    """(windows, ``window``) positions of the frames each window of step ``step`` denoises, before wrapping:
    windows start every ``window - overlap`` frames from 0, moved back by ``window_shift``; a position
    outside ``[0, num_frames)`` is frame ``position % num_frames`` (the clip is circular, and a clip shorter
    than a window repeats frames inside it, each of which must be accumulated)."""
    if not 0 <= overlap < window:
        raise ValueError(f"window overlap must be in [0, {window}), got {overlap}")
    starts = np.arange(0, num_frames, window - overlap) - window_shift(step, window, shift_offset)
    return starts[:, None] + np.arange(window)
