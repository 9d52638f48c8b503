"""A reference face and driving frames -> animated frames, as HunyuanPortrait's released inference does it.

The steps are plain functions so that the CLI and the ComfyUI nodes share them: appearance tokens of the
reference crop (DINOv2 with the ArcFace embedding, when the user has ``arcface.onnx``), motion tokens of the
driving frames a window-length chunk at a time (the intensity buckets are per chunk), the fade pads, the
windowed sampler and a chunked decode that drops the pads. Frames come out in 0..1, one per driving frame.
"""
from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FYEInputError
from ..sampling.cache import CachePlan
from ..sampling.sampler import FULL_RUN, check_interval
from .arcface import NO_IDENTITY, ArcFace, arcface_file
from .config import INFERENCE
from .face import DrivingFaces
from .loader import HunyuanModels, load_hunyuan_dir
from .models import time_ids
from .preprocess import arcface_input, chunk_intensity_ids, dino_input, driving_crops
from .sampler import (
    Callback,
    HunyuanConditioning,
    fixed_windows,
    guidance_scales,
    karras_schedule,
    noisy_start,
    sample_windows,
)
from .windows import padded_motion

SIZE_MULTIPLE = 64  # 8 (VAE) x 8 (the UNet's three downsamplings)

log = logging.getLogger(__name__)


@dataclass
class HunyuanOptions:
    """Sampling settings; the defaults are the released ``config/hunyuan-portrait.yaml``.

    ``appearance_guidance`` and ``motion_guidance``: the scale of the first and of the last step (the official
    min and max guidance), linear in between; ``window``: frames per window, also the chunk of driving frames
    whose motion intensity is bucketed together; ``overlap``: frames shared by neighbouring windows;
    ``shift_offset``: how much further back the windows start at every step; ``pad_frames``: frames faded in
    from and out to a still face at both ends, so that the circular windows join the clip's ends.

    Savings (``sampler`` module docstring; the defaults run none): ``cfg_interval``: the part of the run
    (fractions of the steps, [start, end)) whose steps run the three guidance branches, the others the
    conditional one alone; ``cfg_reuse``: outside it, add each frame's last guidance difference instead of
    dropping guidance; ``cache``: the cross-step feature cache, which forecasts only with fixed windows
    (``shift_offset`` 0). ``low_memory``: the guidance branches one after the other (the same output).
    """

    steps: int = INFERENCE.num_inference_steps
    appearance_guidance: tuple[float, float] = (INFERENCE.appearance_guidance,) * 2
    motion_guidance: tuple[float, float] = (INFERENCE.motion_guidance,) * 2
    seed: int = INFERENCE.seed
    window: int = INFERENCE.frames_per_window
    overlap: int = INFERENCE.overlap
    shift_offset: int = INFERENCE.shift_offset
    pad_frames: int = INFERENCE.pad_frames
    decode_chunk: int = INFERENCE.decode_chunk_size
    cfg_interval: tuple[float, float] = FULL_RUN
    cfg_reuse: bool = False
    cache: CachePlan = field(default_factory=CachePlan)
    low_memory: bool = False

    def __post_init__(self):
        if self.steps < 1 or self.window < 1 or self.decode_chunk < 1:
            raise FYEInputError("steps, window and decode chunk must be at least 1")
        if not 0 <= self.overlap < self.window:
            raise FYEInputError(f"the window overlap must be in [0, {self.window}), got {self.overlap}")
        if self.pad_frames < 0 or self.shift_offset < 0:
            raise FYEInputError("pad frames and shift offset must be at least 0")
        self.cfg_interval = check_interval(self.cfg_interval)


@dataclass
class HunyuanPortrait:
    """The networks and, when the user has ``arcface.onnx``, the identity model."""

    models: HunyuanModels
    arcface: ArcFace | None


def load_hunyuan_portrait(folder: str | os.PathLike, dtype: torch.dtype = torch.float16,
                          device: str | torch.device = "cpu", config: dict | None = None) -> HunyuanPortrait:
    """The released files of ``folder`` (``loader.locate_files``) and its ``arcface.onnx`` if there is one."""
    models = load_hunyuan_dir(folder, config, dtype, device)
    identity_file = arcface_file(folder)
    return HunyuanPortrait(models, None if identity_file is None else ArcFace(identity_file))


def reference_tokens(backend: HunyuanPortrait, image: np.ndarray,
                     face_points: Callable[[], np.ndarray]) -> tuple[torch.Tensor, str]:
    """The appearance tokens of the reference crop (uint8) with its ArcFace identity when the backend has
    ArcFace (the five points of ``face_points()`` are only asked for then), else with the official zero
    embedding; and a line saying which."""
    if backend.arcface is None:
        return appearance_tokens(backend.models, image), NO_IDENTITY
    identity = backend.arcface(arcface_input(image, face_points()))
    return appearance_tokens(backend.models, image, identity), f"identity: ArcFace ({backend.arcface.path.name})"


def appearance_tokens(models: HunyuanModels, image: np.ndarray, identity: torch.Tensor | None = None) -> torch.Tensor:
    """The image tokens (1, N, C) of the reference crop (uint8, 512 x 512 in the released code)."""
    with torch.no_grad():
        return models.encode_appearance(dino_input(image)[None], identity)


def _pixels(images: np.ndarray, device) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> NCHW-contiguous float in [0, 1] (GroupNorm on channels-last input rounds
    differently on CPU), copied: PIL arrays are read-only."""
    return torch.tensor(images).to(device).permute(0, 3, 1, 2).float().div(255).contiguous()


def encode_driving(models: HunyuanModels, frames: Iterable[np.ndarray], faces: DrivingFaces,
                   chunk: int = INFERENCE.frames_per_window, callback: Callback | None = None) -> torch.Tensor:
    """Motion tokens (N, Q, C), in the UNet's dtype, of N driving frames (RGB uint8, read once, in order) and
    their faces, ``chunk`` frames at a time: the crops are framed by the first frame's face box, and the
    motion intensity is bucketed per chunk, as the released code does with its window length.
    ``callback({"event": "motion", "done", "total"})`` after every chunk; raising from it cancels."""
    frames = iter(frames)
    device = models.unet.device
    tokens = []
    for start, end, head_id, exp_id in chunk_intensity_ids(faces.points, chunk):
        block = list(itertools.islice(frames, end - start))
        if len(block) < end - start:
            raise FYEInputError(f"{len(faces)} driving faces but only {start + len(block)} driving frames")
        face_crops, pose_crops = driving_crops(block, faces.points[start:end], faces.boxes[0])
        with torch.no_grad():
            motion = models.encode_motion(_pixels(face_crops, device), _pixels(pose_crops, device), int(head_id),
                                          int(exp_id))
        tokens.append(motion.to(models.unet.dtype))
        if callback is not None:
            callback({"event": "motion", "done": int(end), "total": len(faces)})
    return torch.cat(tokens)


def pad_motion(motion: torch.Tensor, pad_frames: int) -> torch.Tensor:
    """The sampled clip's motion tokens (1, N + 2 P, Q, C): the driving tokens (N, Q, C) faded in from zero
    before the first frame and out after the last (``windows.padded_motion``)."""
    source, weight = padded_motion(len(motion), pad_frames)
    weight = torch.from_numpy(weight).to(motion.device, motion.dtype)
    return (motion[torch.from_numpy(source).to(motion.device)] * weight[:, None, None])[None]


def check_reference(reference: np.ndarray) -> None:
    """An input error unless the reference's sides are multiples of 64 (before any slow work)."""
    height, width = reference.shape[:2]
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise FYEInputError(f"the reference is {width}x{height}; HunyuanPortrait needs both sides to be multiples "
                            f"of {SIZE_MULTIPLE} (the released code uses 512x512 face crops)")


def prepare_conditioning(models: HunyuanModels, reference: np.ndarray, image_tokens: torch.Tensor,
                         motion: torch.Tensor, options: HunyuanOptions) -> tuple[HunyuanConditioning, torch.Tensor]:
    """The conditioning of a clip and the reference's scaled latents (1, 4, h, w), the start of sampling.

    ``reference``: the crop the video is made at, uint8 (H, W, 3), sides multiples of 64; ``image_tokens``:
    ``appearance_tokens``; ``motion``: the driving tokens (N, Q, C), padded here.
    """
    check_reference(reference)
    height, width = reference.shape[:2]
    device, dtype = models.unet.device, models.unet.dtype
    with torch.no_grad():
        start, cond_latent = models.encode_reference(_pixels(reference[None], device) * 2 - 1)
        pose = models.pose_feature(height, width)
    ids = time_ids(INFERENCE.fps, INFERENCE.motion_bucket_id, INFERENCE.noise_aug_strength).to(device, dtype)
    cond = HunyuanConditioning(image_tokens=image_tokens.to(device, dtype),
                               motion_tokens=pad_motion(motion.to(device), options.pad_frames),
                               cond_latent=cond_latent, pose_feature=pose, time_ids=ids)
    return cond, start


def initial_noise(num_frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    """(1, num_frames, 4, height/8, width/8) fp32, seeded on the CPU so that a seed gives the same video on
    every device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((1, num_frames, 4, height // 8, width // 8), generator=generator)


def sample(models: HunyuanModels, cond: HunyuanConditioning, reference_latents: torch.Tensor, noise: torch.Tensor,
           options: HunyuanOptions, callback: Callback | None = None) -> torch.Tensor:
    """The denoised latents (1, L, 4, h, w) fp32 of the whole padded clip, from ``noise`` of its shape."""
    sigmas, timesteps = karras_schedule(options.steps)
    appearance = guidance_scales(*options.appearance_guidance, len(timesteps))
    motion = guidance_scales(*options.motion_guidance, len(timesteps))
    x = noisy_start(reference_latents.float(), noise.to(reference_latents.device), sigmas[0])
    log.info("HunyuanPortrait sampling %d frames of %dx%d latents: %d steps, guidance %s / %s, windows of %d%s",
             x.shape[1], x.shape[4], x.shape[3], len(timesteps), options.appearance_guidance,
             options.motion_guidance, options.window, describe_savings(options))
    with torch.no_grad():
        return sample_windows(models.unet, x, cond, sigmas, timesteps, appearance, motion, options.window,
                              options.overlap, options.shift_offset, callback, cfg_interval=options.cfg_interval,
                              cfg_reuse=options.cfg_reuse, cache=options.cache, batched=not options.low_memory)


def describe_savings(options: HunyuanOptions) -> str:
    """The savings in use, for the log line ('' when none)."""
    parts = []
    if options.cfg_interval != FULL_RUN:
        start, end = options.cfg_interval
        parts.append(f"guidance branches in {start:g}-{end:g} of the run"
                     + (" (difference reused after)" if options.cfg_reuse else ""))
    if options.cache.enabled:
        parts.append(options.cache.describe()
                     + ("" if fixed_windows(options.window, options.shift_offset) else " with shifting windows"))
    return "".join(f"; {part}" for part in parts)


def decode_frames(models: HunyuanModels, latents: torch.Tensor, keep: range,
                  chunk: int = INFERENCE.decode_chunk_size) -> Iterator[torch.Tensor]:
    """The frames ``keep`` of latents (1, L, 4, h, w) as images (n, H, W, 3) in [0, 1], a chunk at a time.

    Chunks of ``chunk`` frames start at the clip's first frame, as in the released decode (the decoder's
    temporal layers see one chunk), and chunks with no frame to keep are skipped.
    """
    vae = models.vae
    dtype = vae.decoder.conv_in.weight.dtype
    num_frames = latents.shape[1]
    for start in range(0, num_frames, chunk):
        stop = min(start + chunk, num_frames)
        if stop <= keep.start or start >= keep.stop:
            continue
        with torch.no_grad():
            pixels = vae.decode(latents[0, start:stop].to(dtype) / vae.config.scaling_factor,
                                num_frames=stop - start).sample
        frames = (pixels.float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
        yield frames[max(keep.start - start, 0):min(keep.stop, stop) - start]


def truncated_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames in [0, 1] -> uint8 as the released code writes them: ``* 255`` truncated, not rounded."""
    return (frames * 255).to(torch.uint8).cpu().numpy()


def animate_frames(models: HunyuanModels, reference: np.ndarray, image_tokens: torch.Tensor, motion: torch.Tensor,
                   options: HunyuanOptions | None = None, callback: Callback | None = None) -> Iterator[torch.Tensor]:
    """The whole job as a stream: frames (n, H, W, 3) in [0, 1], a decode chunk at a time, one per driving
    frame of ``motion`` (``encode_driving``), at the size of ``reference`` (see ``prepare_conditioning``)."""
    options = options or HunyuanOptions()
    cond, reference_latents = prepare_conditioning(models, reference, image_tokens, motion, options)
    noise = initial_noise(cond.motion_tokens.shape[1], *reference.shape[:2], options.seed)
    latents = sample(models, cond, reference_latents, noise, options, callback)
    yield from decode_frames(models, latents, range(options.pad_frames, options.pad_frames + len(motion)),
                             options.decode_chunk)
