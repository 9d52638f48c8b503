"""What a run needs in memory, and the low-memory mode that makes it fit a small card.

The default mode is the official computation: both classifier-free guidance passes in one batch of two,
attention over whole frames, the VAE decoding ``decode_chunk`` frames per call. The low-memory mode gives the same
output (within fp32 tolerance) with less at once: the unconditional and conditional passes one after the other
(half the activations of a step), attention (spatial, reference and motion-module) in chunks of query tokens
where the whole attention matrix would not fit, and the VAE decoding as many frames per call as the free memory
holds. The weights themselves are placed by their owner: ComfyUI's ModelPatcher and ``comfy.ops`` inside ComfyUI
(partial loading, fp8 storage), diffusers' hooks headless (``offload_weights``, ``store_weights_fp8``), never both
on the same weights.

The estimates come from ``bench/memory.py``'s measurements (activations per latent token of one UNet pass, VAE
memory per decoded pixel); the automatic choice compares them with the free memory the host reports.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import Attention, SlicedAttnProcessor

from .errors import FYEInputError

MEMORY_MODES = ("auto", "default", "low")
MEMORY_HELP = ("auto: the low-memory mode when the free memory of the device is short of what the default needs; "
               "low: always (CFG passes one after the other, attention and VAE decode in chunks; same output, "
               "a little slower); default: never")
# measured by bench/memory.py (CPU, 256x256, 8 frames, bf16; README): the activation peak of one UNet pass per
# latent token of one batch item (frames x h x w), in elements of the compute dtype
ACTIVATION_ELEMENTS_PER_TOKEN = 11000
# HunyuanPortrait's UNet, the same measurement for one of its guidance branches (256x256, 8 frames, bf16)
HUNYUAN_ACTIVATION_ELEMENTS_PER_TOKEN = 9000
# the SD VAE decoder's peak per decoded pixel, in elements of the compute dtype (the same run)
DECODE_ELEMENTS_PER_PIXEL = 800
LOW_MEMORY_OPTION = "fye animate --low-memory; the FYE Animate node: memory = low"
ATTENTION_HEADS = 8
# the share of the free memory one attention call or one decode call may take in the low-memory mode
CHUNK_SHARE = 0.25
DEFAULT_DECODE_CHUNK = 8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryPlan:
    """How a run spends memory: ``low`` (the CFG passes one after the other), ``attention_chunk`` query tokens per
    attention call (0: all), ``decode_chunk`` latent frames per VAE call."""

    low: bool = False
    attention_chunk: int = 0
    decode_chunk: int = DEFAULT_DECODE_CHUNK

    def describe(self) -> str:
        if not self.low:
            return f"memory: default (CFG passes batched, VAE decode {self.decode_chunk} frames a call)"
        attention = f"attention {self.attention_chunk} query tokens a call" if self.attention_chunk else \
            "attention whole"
        return (f"memory: low (CFG passes one after the other, {attention}, VAE decode {self.decode_chunk} "
                "frames a call)")


def step_bytes(height: int, width: int, frames: int, items: int, dtype: torch.dtype,
               per_token: int = ACTIVATION_ELEMENTS_PER_TOKEN) -> int:
    """The activation peak of one UNet pass over ``items`` batch items of ``frames`` frames of ``height`` x
    ``width`` pixels, weights not included (``per_token``: the measured elements per latent token, FYE's by
    default)."""
    tokens = items * frames * (height // 8) * (width // 8)
    return tokens * per_token * torch.finfo(dtype).bits // 8


def hunyuan_step_bytes(height: int, width: int, frames: int, branches: int, dtype: torch.dtype) -> int:
    """The activation peak of one HunyuanPortrait UNet call over ``branches`` guidance branches."""
    return step_bytes(height, width, frames, branches, dtype, HUNYUAN_ACTIVATION_ELEMENTS_PER_TOKEN)


def hunyuan_low_memory(mode: str, free_bytes: int | None, height: int, width: int, frames: int, branches: int,
                       dtype: torch.dtype) -> bool:
    """Whether a HunyuanPortrait run of ``frames``-frame windows runs its ``branches`` guidance branches one after
    the other: ``mode`` ``low``, or ``auto`` with ``free_bytes`` (free memory after the weights are loaded) short
    of all of them in one batch."""
    if mode not in MEMORY_MODES:
        raise FYEInputError(f"memory must be one of {MEMORY_MODES}, got {mode!r}")
    needed = hunyuan_step_bytes(height, width, frames, branches, dtype)
    return mode == "low" or (mode == "auto" and free_bytes is not None and needed > free_bytes)


def attention_matrix_bytes(height: int, width: int, frames: int, items: int, dtype: torch.dtype) -> int:
    """The largest attention matrix of a UNet pass if written out whole: the first level's self-attention of
    every frame, whose keys are the frame's tokens and the reference's."""
    tokens = (height // 8) * (width // 8)
    return items * frames * ATTENTION_HEADS * tokens * 2 * tokens * torch.finfo(dtype).bits // 8


def decode_bytes(height: int, width: int, frames: int, dtype: torch.dtype) -> int:
    """The VAE decoder's peak for ``frames`` frames of ``height`` x ``width`` pixels."""
    return frames * height * width * DECODE_ELEMENTS_PER_PIXEL * torch.finfo(dtype).bits // 8


def plan_memory(mode: str, free_bytes: int | None, height: int, width: int, frames: int, guided: bool,
                dtype: torch.dtype, decode_chunk: int = DEFAULT_DECODE_CHUNK) -> MemoryPlan:
    """The plan for a run of ``frames``-frame windows at ``height`` x ``width``: ``mode`` ``default``, ``low``, or
    ``auto`` (low when ``free_bytes``, the device's free memory after the weights are loaded, is short of the
    default's step and decode; default when it is unknown)."""
    if mode not in MEMORY_MODES:
        raise FYEInputError(f"memory must be one of {MEMORY_MODES}, got {mode!r}")
    default = MemoryPlan(decode_chunk=decode_chunk)
    if mode == "default":
        return default
    needed = max(step_bytes(height, width, frames, 2 if guided else 1, dtype),
                 decode_bytes(height, width, decode_chunk, dtype))
    if mode == "auto" and (free_bytes is None or needed <= free_bytes):
        return default
    budget = CHUNK_SHARE * free_bytes if free_bytes else None
    attention_chunk = 0
    matrix = attention_matrix_bytes(height, width, frames, 1, dtype)
    if budget is not None and matrix > budget:
        tokens = (height // 8) * (width // 8)
        attention_chunk = max(64, int(tokens * budget / matrix) // 64 * 64)
    if budget is not None:
        decode_chunk = int(max(1, min(decode_chunk, budget // decode_bytes(height, width, 1, dtype))))
    return MemoryPlan(low=True, attention_chunk=attention_chunk, decode_chunk=decode_chunk)


def device_free_bytes(device: torch.device | str) -> int | None:
    """The free memory of a CUDA device as its driver reports it (None elsewhere: no reliable figure)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free


def offload_weights(models, device: torch.device | str, unet: bool = False) -> None:
    """Headless weight streaming (diffusers' group offloading): the ReferenceNet's weights, used once per video,
    stay in CPU memory and move to ``device`` a layer at a time (it stops half-way, so layers, not blocks), and
    with ``unet`` the UNet's too, a block at a time, prefetched on a CUDA stream (that one costs time every step);
    the rest lives on ``device``. Inside ComfyUI the ModelPatcher's partial loading does this instead
    (``nodes``)."""
    device, cpu = torch.device(device), torch.device("cpu")
    stream = device.type == "cuda"
    for network in (models.guider, models.qformer, None if unet else models.unet):
        if network is not None:
            network.to(device)
    if unet:
        models.unet.enable_group_offload(device, cpu, offload_type="block_level", num_blocks_per_group=1,
                                         use_stream=stream)
    models.referencenet.enable_group_offload(device, cpu, offload_type="leaf_level", use_stream=stream)


def store_weights_fp8(models, compute_dtype: torch.dtype) -> None:
    """Headless fp8 storage (diffusers' layerwise casting): the UNet's and the ReferenceNet's weights are kept in
    float8 (e4m3) and each layer is cast to ``compute_dtype`` for its forward only; norms, embeddings and the
    input and output convolutions stay as they are (diffusers' default skips)."""
    for network in (models.unet, models.referencenet):
        network.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)


def _module_attentions(network: torch.nn.Module) -> dict[str, Attention]:
    return {name: module for name, module in network.named_modules() if isinstance(module, Attention)}


@contextlib.contextmanager
def attention_chunks(networks: dict[str, torch.nn.Module], unet, tokens: int) -> Iterator[None]:
    """Attention in chunks while the block runs: ``tokens`` query tokens a call in the UNet's own processors
    (spatial with the reference, context), diffusers' sliced attention (``tokens`` rows of batch x heads a
    slice) everywhere else (motion modules, ReferenceNet); as it was after. 0: nothing changes."""
    if not tokens:
        yield
        return
    ours = [*unet.reference_processors, *unet.context_processors]
    kept = {}
    for network in networks.values():
        for attention in _module_attentions(network).values():
            if attention.processor not in ours:
                kept[attention] = attention.processor
                attention.set_processor(SlicedAttnProcessor(tokens))
    for processor in ours:
        processor.chunk = tokens
    try:
        yield
    finally:
        for processor in ours:
            processor.chunk = 0
        for attention, processor in kept.items():
            attention.set_processor(processor)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is the device (or the host) running out of memory."""
    message = str(error).lower()
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message))


def out_of_memory_error(what: str, plan: MemoryPlan) -> FYEInputError:
    """The message for an out-of-memory during ``what``: what to change."""
    if plan.low:
        advice = "use shorter windows (context_frames), a smaller reference, or free the device of other work"
    else:
        advice = f"use the low-memory mode ({LOW_MEMORY_OPTION}) or shorter windows (context_frames)"
    return FYEInputError(f"out of memory during {what}; {advice}. Nothing was written.")
