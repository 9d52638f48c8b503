"""Portrait + motion frames -> animated frames: the official FYE inference, with the paper's options.

The pieces are plain functions so that ComfyUI (native VAE and CLIP vision) and the CLI (diffusers and
transformers) share everything but the VAE and CLIP calls, which come in through ``LatentCodec`` and
ready-made CLIP tokens.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .errors import FYEInputError
from .image import images_to_uint8
from .landmarks import Motion, expressiveness, render_expression_landmarks
from .memory import MemoryPlan, attention_chunks, is_out_of_memory, out_of_memory_error, plan_memory
from .models import FYEModels
from .models.student import StudentSettings
from .sampling import (
    CONSISTENCY,
    FULL_RUN,
    KEYFRAME_CHOICES,
    TEACHER_STEPS,
    Callback,
    ClipStore,
    Conditioning,
    Guidance,
    Progressive,
    Schedule,
    Solver,
    SpeedSettings,
    describe_speed,
    even_keyframes,
    expression_keyframes,
    make_solver,
    official_windows,
    overlapping_windows,
    sample_gaussian_tiles,
    sample_windows,
    speed_settings,
)

OFFICIAL_GUIDANCE = 3.5
LATENT_SCALE = 0.18215  # SD-1.5 VAE scaling factor
LONG_VIDEO_MODES = ("official", "overlap", "tiles", "progressive")
OFFICIAL_SEED = 12580
RenderMotion = Callable[[list[int]], np.ndarray]  # motion frame indices -> their uint8 landmark frames

log = logging.getLogger(__name__)


@dataclass
class AnimationOptions:
    """Sampling settings; the defaults are the official ones (30 DDIM steps, CFG 3.5, 24-frame cyclic
    windows). ``long_video``: ``official`` cyclic non-overlapping windows, ``overlap`` windows overlapping
    by ``context_overlap`` frames averaged with ``fuse`` weights, ``tiles`` the official Gaussian temporal
    tiling (``forward_long``) with ``context_overlap`` frames of overlap, ``progressive`` the paper's
    keyframes-then-segments strategy with clips of at most ``context_frames`` and ``keyframes`` chosen
    ``even``-ly or at ``expression`` extremes. ``preset``: ``official``, ``fast`` or ``fastest`` (``PRESETS``);
    ``steps``, ``solver``, ``cfg_interval``, ``cfg_reuse`` and ``cache_*`` override it where not None
    (``speed`` gives the result). ``teacher_steps``: the skipping schedule of a distilled student (solver
    ``lcm``) and ``student_timesteps`` the timesteps it was distilled at where chosen, both of which
    ``student_options`` takes from the student's weights. ``memory``: the default or the
    low-memory computation (``memory_options`` plans it from the free memory)."""

    steps: int | None = None
    guidance: float = OFFICIAL_GUIDANCE
    seed: int = OFFICIAL_SEED
    long_video: str = "official"
    context_frames: int = 24
    context_overlap: int = 4
    fuse: str = "flat"
    keyframes: str = "even"
    decode_chunk: int = 8
    preset: str = "official"
    solver: str | None = None
    cfg_interval: tuple[float, float] | None = None
    cfg_reuse: bool | None = None
    cache_interval: int | None = None
    cache_order: int | None = None
    cache_depth: int | None = None
    cache_warmup: int | None = None
    teacher_steps: int = TEACHER_STEPS
    student_timesteps: tuple[int, ...] | None = None
    memory: MemoryPlan = MemoryPlan()

    def __post_init__(self):
        if self.long_video not in LONG_VIDEO_MODES:
            raise FYEInputError(f"long_video must be one of {LONG_VIDEO_MODES}, got {self.long_video!r}")
        if self.keyframes not in KEYFRAME_CHOICES:
            raise FYEInputError(f"keyframes must be one of {KEYFRAME_CHOICES}, got {self.keyframes!r}")
        speed = self.speed
        if self.long_video == "tiles" and (speed.solver != "ddim" or speed.cache.enabled
                                           or speed.cfg_interval != FULL_RUN):
            raise FYEInputError("long_video='tiles' steps every tile with the official DDIM on every step; use "
                                "preset 'official' (solver ddim, no cache, full cfg interval) or another long_video")

    @property
    def speed(self) -> SpeedSettings:
        """The preset with this run's overrides."""
        return speed_settings(self.preset, steps=self.steps, solver=self.solver, cfg_interval=self.cfg_interval,
                              cfg_reuse=self.cfg_reuse, cache_interval=self.cache_interval,
                              cache_order=self.cache_order, cache_depth=self.cache_depth,
                              cache_warmup=self.cache_warmup)

    def solver_factory(self) -> Solver:
        """A fresh solver for a run with these options."""
        speed = self.speed
        return make_solver(speed.solver, speed.steps, self.seed, self.teacher_steps, self.student_timesteps)

    @property
    def guidance_plan(self) -> Guidance:
        speed = self.speed
        return Guidance(self.guidance, speed.cfg_interval, speed.cfg_reuse, batched=not self.memory.low)


def memory_options(options: AnimationOptions, mode: str, free_bytes: int | None, height: int, width: int,
                   dtype: torch.dtype) -> AnimationOptions:
    """``options`` with the memory plan of ``mode`` (``MEMORY_MODES``) for a ``height`` x ``width`` reference,
    given the device's free memory with the weights loaded (None: unknown)."""
    plan = plan_memory(mode, free_bytes, height, width, options.context_frames, options.guidance > 1, dtype,
                       options.decode_chunk)
    log.info("FYE %s", plan.describe())
    return replace(options, memory=plan, decode_chunk=plan.decode_chunk)


def student_options(options: AnimationOptions, student: StudentSettings | None,
                    guidance_given: bool = False) -> AnimationOptions:
    """What a distilled student samples with unless told otherwise: its consistency sampler and steps (where
    ``options`` leave solver and steps to the preset) and no unconditional pass (its guidance is folded in)
    unless ``guidance_given``."""
    if student is None:
        return options
    return replace(options, solver=options.solver or CONSISTENCY, steps=options.steps or student.steps,
                   guidance=options.guidance if guidance_given else 1.0, teacher_steps=student.teacher_steps,
                   student_timesteps=student.timesteps)


def describe_student(student: StudentSettings, options: AnimationOptions) -> str:
    """One line for logs: what the student was made for and what this run does."""
    speed = options.speed
    at = f" (timesteps {', '.join(map(str, student.timesteps))})" if student.timesteps else ""
    return (f"student: distilled for {student.steps} {CONSISTENCY} steps{at} with guidance {student.guidance:g} "
            f"folded in; sampling {speed.solver} {speed.steps} steps, cfg {options.guidance:g}")


class LatentCodec(Protocol):
    """The VAE, seen from the sampler: images (B, H, W, 3) in [0, 1] <-> scaled latents (B, 4, H/8, W/8)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


def _contiguous_output(module, args, output: torch.Tensor) -> torch.Tensor:
    return output.contiguous()


class DiffusersVAE:
    """A diffusers AutoencoderKL as a ``LatentCodec``: the posterior mean, scaled, as the official code."""

    def __init__(self, vae):
        from diffusers.models.attention_processor import Attention

        self.vae = vae
        # diffusers' mid-block attention hands back its 4-D output channels-last strided, and every GroupNorm after
        # it then takes the CPU's channels-last path, which loses precision at large means (golden/models README):
        # up to 8e-5 on the decoder's last norms, differing with the batch size; contiguous, 1e-6 of float64
        for module in vae.modules():
            if isinstance(module, Attention):
                module.register_forward_hook(_contiguous_output)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        # contiguous NCHW: GroupNorm on channels-last input is inaccurate on CPU (golden/models README)
        pixels = (images.permute(0, 3, 1, 2) * 2 - 1).contiguous().to(self.vae.device, self.vae.dtype)
        with torch.no_grad():
            return self.vae.encode(pixels).latent_dist.mean * LATENT_SCALE

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pixels = self.vae.decode((latents / LATENT_SCALE).to(self.vae.device, self.vae.dtype)).sample
        return (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float()


def load_diffusers_vae(path: str | os.PathLike, dtype=torch.float32, device="cpu") -> DiffusersVAE:
    """sd-vae-ft-mse as a diffusers folder (config.json + weights)."""
    from diffusers import AutoencoderKL

    path = Path(path)
    try:
        vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise FYEInputError(f"{path} is not a diffusers VAE folder ({err}); use the sd-vae-ft-mse folder with "
                            "config.json and diffusion_pytorch_model.safetensors") from None
    return DiffusersVAE(vae.to(device).eval().requires_grad_(False))


def check_window(context_frames: int, max_frames: int) -> None:
    if context_frames > max_frames:
        raise FYEInputError(f"a window of {context_frames} frames is longer than the motion modules allow "
                            f"({max_frames}); use context_frames <= {max_frames}")
    if context_frames < 1:
        raise FYEInputError("context_frames must be at least 1")


def reference_conditioning(models: FYEModels, codec: LatentCodec, clip_tokens: torch.Tensor,
                           reference: np.ndarray, guidance: float) -> Conditioning:
    """CLIP contexts and the 16 reference features (ReferenceNet once, on the conditional item only);
    ``landmarks`` left empty for ``landmark_features``."""
    height, width = reference.shape[:2]
    if height % 8 or width % 8:
        raise FYEInputError(f"the reference is {width}x{height}; both sides must be multiples of 8")
    device, dtype = models.device, models.unet.dtype
    tokens = clip_tokens.to(device, dtype)
    with torch.no_grad():
        if guidance > 1:
            tokens = torch.cat([torch.zeros_like(tokens), tokens])
        reference_context, context = models.encode_context(tokens)
        image = torch.tensor(reference)[None].float().div(255)  # a copy: PIL arrays are read-only
        latents = codec.encode(image).to(device, dtype)
        features = models.referencenet.reference_features(latents, reference_context[-1:], 0)
    return Conditioning(context=context, reference=features, landmarks=None)


def landmark_features(models: FYEModels, reference: np.ndarray, motion_frames: np.ndarray) -> torch.Tensor:
    """Guider features (1, 320, N, h, w) of uint8 landmark frames (N, H, W, 3) of the reference's size."""
    height, width = reference.shape[:2]
    if motion_frames.shape[1:3] != (height, width):
        raise FYEInputError(f"the motion frames are {motion_frames.shape[2]}x{motion_frames.shape[1]} but the "
                            f"reference is {width}x{height}; align the motion to this reference (same size)")
    frames = torch.from_numpy(np.ascontiguousarray(motion_frames)).to(models.device, models.unet.dtype)
    with torch.no_grad():
        return models.guider(frames.div(255).permute(3, 0, 1, 2)[None])


def prepare_conditioning(models: FYEModels, codec: LatentCodec, clip_tokens: torch.Tensor, reference: np.ndarray,
                         motion_frames: np.ndarray, guidance: float) -> Conditioning:
    """``reference_conditioning`` with the landmark features of every motion frame."""
    landmarks = landmark_features(models, reference, motion_frames)
    return replace(reference_conditioning(models, codec, clip_tokens, reference, guidance), landmarks=landmarks)


def initial_noise(num_frames: int, height: int, width: int, seed: int, device, dtype) -> torch.Tensor:
    """Seeded on the CPU so that a seed gives the same video on every device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn((1, 4, num_frames, height // 8, width // 8), generator=generator)
    return noise.to(device, dtype)


def sample(models: FYEModels, cond: Conditioning, noise: torch.Tensor, options: AnimationOptions,
           callback: Callback | None = None) -> torch.Tensor:
    """Denoises ``noise`` (1, 4, F, h, w) with the chosen long-video mode; returns the final latents."""
    num_frames = noise.shape[2]
    context = min(options.context_frames, num_frames)
    check_window(context, models.unet.max_frames)
    speed = options.speed
    log.info("FYE sampling %d frames of %dx%d latents: %s, cfg %g, %s windows of %d", num_frames,
             noise.shape[4], noise.shape[3], describe_speed(options.preset, speed), options.guidance,
             options.long_video, context)
    with torch.no_grad():
        if options.long_video in ("official", "overlap"):
            windows = official_windows(num_frames, context) if options.long_video == "official" else \
                overlapping_windows(num_frames, context, min(options.context_overlap, context - 1))
            return sample_windows(models.unet, noise, cond, options.solver_factory(), windows,
                                  options.guidance_plan, options.fuse, callback, speed.cache)
        if options.long_video == "tiles":
            return sample_gaussian_tiles(models.unet, noise, cond, Schedule(speed.steps), context,
                                         min(options.context_overlap, context - 1), options.guidance, callback,
                                         batched=not options.memory.low)
    raise FYEInputError(f"long_video={options.long_video!r} streams its clips: use animate_frames")


def sample_progressive(models: FYEModels, cond: Conditioning, reference: np.ndarray, render: RenderMotion,
                       noise: torch.Tensor, options: AnimationOptions, expressiveness: np.ndarray | None = None,
                       store: ClipStore | None = None,
                       callback: Callback | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """The progressive strategy: (frame, latent (1, 4, h, w)) in frame order, the landmark features of one
    clip at a time. ``expressiveness``: per driving frame (``landmarks.expressiveness``), for
    ``keyframes="expression"``."""
    window = min(options.context_frames, noise.shape[2])
    check_window(window, models.unet.max_frames)
    if options.keyframes == "expression" and expressiveness is None:
        raise FYEInputError("keyframes='expression' needs the driving blendshapes (a motion from align_motion)")

    def choose(frames: list[int], count: int) -> list[int]:
        if options.keyframes == "expression":
            return expression_keyframes(frames, count, window, expressiveness)
        return even_keyframes(frames, count)

    def conditioning(frames: list[int]) -> Conditioning:
        return replace(cond, landmarks=landmark_features(models, reference, render(frames)))

    speed = options.speed
    progressive = Progressive(models.unet, options.solver_factory, window,
                              options.guidance_plan, conditioning, lambda frames: noise[:, :, frames], choose, store,
                              callback, speed.cache)
    log.info("FYE sampling %d frames progressively: %s, cfg %g, clips of at most %d", noise.shape[2],
             describe_speed(options.preset, speed), options.guidance, window)
    with torch.no_grad():
        yield from progressive.sample(noise.shape[2])


def decode_frames(codec: LatentCodec, latents: torch.Tensor, chunk: int = 8) -> Iterator[torch.Tensor]:
    """Frames (n, H, W, 3) in [0, 1], ``chunk`` latent frames per VAE call (the official decodes one at a time)."""
    yield from decode_stream(codec, ((f, latents[:, :, f]) for f in range(latents.shape[2])), chunk)


def decode_stream(codec: LatentCodec, latents: Iterable[tuple[int, torch.Tensor]],
                  chunk: int = 8) -> Iterator[torch.Tensor]:
    """``decode_frames`` for (frame, latent (1, 4, h, w)) that arrive one at a time (progressive sampling)."""
    pending = []
    for _, latent in latents:
        pending.append(latent)
        if len(pending) == chunk:
            yield codec.decode(torch.cat(pending))
            pending = []
    if pending:
        yield codec.decode(torch.cat(pending))


def animate_frames(models: FYEModels, codec: LatentCodec, clip_tokens: torch.Tensor, reference: np.ndarray,
                   render: RenderMotion, num_frames: int, options: AnimationOptions | None = None,
                   callback: Callback | None = None, expressiveness: np.ndarray | None = None,
                   store: ClipStore | None = None) -> Iterator[torch.Tensor]:
    """The whole job as a stream: frames (n, H, W, 3) in [0, 1], a decode chunk at a time, for the uint8
    reference (H, W, 3) and ``render(indices)`` -> the landmark frames (n, H, W, 3) of those motion frames.
    The progressive mode holds one clip's landmark frames and features at a time; the others all."""
    options = options or AnimationOptions()
    height, width = reference.shape[:2]
    try:
        with attention_chunks(models.networks(), models.unet, options.memory.attention_chunk):
            noise = initial_noise(num_frames, height, width, options.seed, models.device, models.unet.dtype)
            cond = reference_conditioning(models, codec, clip_tokens, reference, options.guidance)
            if options.long_video == "progressive":
                latents = sample_progressive(models, cond, reference, render, noise, options, expressiveness, store,
                                             callback)
                yield from decode_stream(codec, latents, options.decode_chunk)
                return
            cond = replace(cond, landmarks=landmark_features(models, reference, render(list(range(num_frames)))))
            yield from decode_frames(codec, sample(models, cond, noise, options, callback), options.decode_chunk)
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        raise out_of_memory_error(f"the animation of {num_frames} frames of {width}x{height} in windows of "
                                  f"{options.context_frames}", options.memory) from error


def animate_motion(models: FYEModels, codec: LatentCodec, clip_tokens: torch.Tensor, reference: np.ndarray,
                   motion: Motion, options: AnimationOptions | None = None, callback: Callback | None = None,
                   store: ClipStore | None = None) -> Iterator[torch.Tensor]:
    """``animate_frames`` for an aligned ``Motion``: its landmark frames rendered as the sampler asks for
    them, expression keyframes from its blendshapes."""
    scores = None if motion.blendshapes is None else expressiveness(motion.blendshapes)

    def render(indices: list[int]) -> np.ndarray:
        return render_expression_landmarks(motion.points[indices], motion.width, motion.height)

    return animate_frames(models, codec, clip_tokens, reference, render, len(motion), options, callback, scores,
                          store)


def animate(models: FYEModels, codec: LatentCodec, clip_tokens: torch.Tensor, reference: np.ndarray,
            motion_frames: np.ndarray, options: AnimationOptions | None = None,
            callback: Callback | None = None) -> np.ndarray:
    """The whole job: uint8 reference (H, W, 3) and landmark frames (N, H, W, 3) -> uint8 frames (N, H, W, 3)."""
    frames = animate_frames(models, codec, clip_tokens, reference, lambda indices: motion_frames[indices],
                            len(motion_frames), options, callback)
    return images_to_uint8(torch.cat(list(frames)))
