"""Model loading and the FYE sampler as ComfyUI nodes, with ComfyUI's own VAE and CLIP vision."""
import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import latent_preview
import torch
from comfy_api.v0_0_2 import io

from ..fye_core.animate import (
    LATENT_SCALE,
    LONG_VIDEO_MODES,
    OFFICIAL_SEED,
    AnimationOptions,
    animate_motion,
    memory_options,
    student_options,
)
from ..fye_core.image import images_to_uint8
from ..fye_core.memory import MEMORY_HELP, MEMORY_MODES, step_bytes
from ..fye_core.models import FYEModels
from ..fye_core.models.bundle import load_fye_models, locate_fye_weights
from ..fye_core.models.student import StudentSettings
from ..fye_core.sampling import FUSE_METHODS, KEYFRAME_CHOICES, PRESETS, SOLVERS, CachePlan, describe_presets
from .clip_vision import clip_tokens_from_comfy
from .landmarks import MotionType
from .models import DTYPES, FOLDER, FP8, buffers_to, comfy_layers, loader_placement, store_blocks_fp8

CATEGORY = "FollowYourEmoji"
ModelsType = io.Custom("FYE_MODELS")
SpeedType = io.Custom("FYE_SPEED")
NO_STUDENT = "none"
PRESET_HELP = (f"{describe_presets()}; guidance on every step. official is the official sampler; README and "
               "bench/speed.py give the time saved and the fidelity to official.")


class FYENetworks(torch.nn.Module):
    """The FYE networks in one module, so that one ModelPatcher loads and offloads them together."""

    def __init__(self, models: FYEModels):
        super().__init__()
        self.networks = comfy_layers(torch.nn.ModuleDict(models.networks()))
        self.fye = models


class ComfyVAE:
    """ComfyUI's VAE as the sampler's ``LatentCodec`` (ComfyUI encodes to the posterior mean, unscaled)."""

    def __init__(self, vae, device, dtype):
        self.vae, self.device, self.dtype = vae, device, dtype

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (self.vae.encode(images[..., :3]) * LATENT_SCALE).to(self.device, self.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.float() / LATENT_SCALE)


def weight_files() -> list[str]:
    return [name for name in folder_paths.get_filename_list(FOLDER) if not name.endswith(".task")]


class LoadModels(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_LoadModels",
            display_name="FYE Load Models",
            category=CATEGORY,
            description="Loads the Follow-Your-Emoji guider, ReferenceNet and motion UNet from models/fye: our "
                        "fye.safetensors (fye convert), or the official .pth / kijai safetensors set.",
            inputs=[
                io.Combo.Input("model", options=weight_files(),
                               tooltip="fye.safetensors, or any file of the official (lmk_guider.pth, "
                                       "referencenet.pth, unet.pth) or kijai (FYE_*.safetensors) set."),
                io.Combo.Input("dtype", options=["auto", *DTYPES, FP8], default="auto",
                               tooltip="Weights and compute dtype; auto picks what ComfyUI uses for UNets on "
                                       "this device (fp16 on most GPUs, fp32 on CPU). fp8_e4m3fn keeps the UNet's "
                                       "and ReferenceNet's block weights in fp8 (about half their memory, a small "
                                       "change of the output), computed in fp16 where the GPU has it."),
                io.Combo.Input("student_lora", options=[NO_STUDENT, *weight_files()], default=NO_STUDENT,
                               optional=True,
                               tooltip="Optional: a distilled student's LoRA (fye train's distill stage, "
                                       "student_lora.safetensors in models/fye) merged into these weights; FYE "
                                       "Animate then samples with the student's own steps and guidance."),
            ],
            outputs=[ModelsType.Output(display_name="fye_models")],
        )

    @classmethod
    def execute(cls, model, dtype, student_lora=NO_STUDENT) -> io.NodeOutput:
        fp8 = dtype == FP8
        load_device, offload_device, compute = loader_placement("auto" if fp8 else dtype)
        if fp8:
            compute = comfy.model_management.unet_manual_cast(torch.float8_e4m3fn, load_device)
        weights = locate_fye_weights(folder_paths.get_full_path_or_raise(FOLDER, model))
        lora = None if student_lora == NO_STUDENT else folder_paths.get_full_path_or_raise(FOLDER, student_lora)
        networks = FYENetworks(load_fye_models(weights, compute, offload_device, lora))
        if fp8:
            for network in (networks.fye.unet, networks.fye.referencenet):
                store_blocks_fp8(network)
        return io.NodeOutput(comfy.model_patcher.ModelPatcher(networks, load_device, offload_device))


class Animate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_Animate",
            display_name="FYE Animate",
            category=CATEGORY,
            description="Animates the reference portrait with the aligned motion: one output frame per motion "
                        "frame, at the reference's size. The defaults are the official settings.",
            inputs=[
                ModelsType.Input("fye_models", tooltip="From FYE Load Models."),
                io.Image.Input("reference", tooltip="The prepared reference image (FYE Prepare Reference); the "
                                                    "first image of a batch is used."),
                MotionType.Input("motion", tooltip="From FYE Align Motion, aligned to this reference."),
                io.Vae.Input("vae", tooltip="The SD-1.5 VAE (sd-vae-ft-mse), loaded with Load VAE."),
                io.ClipVision.Input("clip_vision", tooltip="The sd-image-variations CLIP image encoder "
                                                           "(ViT-L/14), loaded with Load CLIP Vision."),
                io.Int.Input("steps", default=0, min=0, max=1000,
                             tooltip="Solver steps; 0 = the preset's (official 30 DDIM steps), or a distilled "
                                     "student's own."),
                io.Float.Input("cfg", default=3.5, min=1.0, max=20.0, step=0.1,
                               tooltip="Classifier-free guidance scale (official 3.5; 1 turns CFG off). A distilled "
                                       "student has its guidance folded in and ignores this."),
                io.Int.Input("seed", default=OFFICIAL_SEED, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; the same seed gives the same video on every device."),
                io.Combo.Input("long_video", options=list(LONG_VIDEO_MODES), default="official",
                               tooltip="official: cyclic non-overlapping windows (parity); overlap: overlapping "
                                       "windows averaged; tiles: the official Gaussian temporal tiling; "
                                       "progressive: keyframes first, then the frames between them with both "
                                       "ends fixed (the paper's strategy for long videos)."),
                io.Int.Input("context_frames", default=24, min=1, max=32,
                             tooltip="Frames per window (the motion modules take at most 32)."),
                io.Int.Input("context_overlap", default=4, min=0, max=31,
                             tooltip="Frames shared by neighbouring windows or tiles (not used by 'official')."),
                io.Combo.Input("fuse", options=list(FUSE_METHODS), default="flat",
                               tooltip="How overlapping windows are weighted ('overlap' mode)."),
                io.Combo.Input("keyframes", options=list(KEYFRAME_CHOICES), default="even",
                               tooltip="'progressive' mode: keyframes evenly spaced, or moved to the most "
                                       "expressive driving frames near them."),
                # optional: workflows and API prompts saved before it existed run the official sampler
                io.Combo.Input("preset", options=list(PRESETS), default="official", optional=True,
                               tooltip=PRESET_HELP),
                SpeedType.Input("speed_options", optional=True,
                                tooltip="From FYE Speed Options: single settings that override the preset's."),
                io.Combo.Input("memory", options=list(MEMORY_MODES), default="auto", optional=True,
                               tooltip=f"{MEMORY_HELP}. ComfyUI also streams the weights that do not fit."),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, fye_models, reference, motion, vae, clip_vision, steps, cfg, seed, long_video,
                context_frames, context_overlap, fuse, keyframes, preset="official",
                speed_options=None, memory="auto") -> io.NodeOutput:
        reference_u8 = images_to_uint8(reference[:1])[0]
        tokens = clip_tokens_from_comfy(clip_vision, reference_u8)
        models = fye_models.model.fye
        device, dtype = fye_models.load_device, models.unet.dtype
        options = AnimationOptions(steps=steps or None, guidance=cfg, seed=seed, long_video=long_video,
                                   context_frames=context_frames, context_overlap=context_overlap, fuse=fuse,
                                   keyframes=keyframes, preset=preset, **(speed_options or {}))
        options = student_options(options, StudentSettings.from_config(models.config))
        height, width = reference_u8.shape[:2]
        window = min(context_frames, len(motion))
        # what a step needs besides the weights, batched and one pass at a time: ComfyUI offloads other models
        # (and streams ours) to leave that much free
        comfy.model_management.load_models_gpu(
            [fye_models], memory_required=step_bytes(height, width, window, 2 if options.guidance > 1 else 1, dtype),
            minimum_memory_required=step_bytes(height, width, window, 1, dtype))
        buffers_to(fye_models.model, device)
        models.execution_device = device
        options = memory_options(options, memory, free_memory(device), height, width, dtype)
        chunks = animate_motion(models, ComfyVAE(vae, device, dtype), tokens, reference_u8, motion, options,
                                sampling_progress(device, options.speed.steps))
        decoding = comfy.utils.ProgressBar(len(motion))
        frames = []
        for chunk in chunks:
            comfy.model_management.throw_exception_if_processing_interrupted()
            frames.append(chunk.to(comfy.model_management.intermediate_device()))
            decoding.update(len(chunk))
        return io.NodeOutput(torch.cat(frames).clamp(0, 1))


class SpeedOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        cache = CachePlan()
        return io.Schema(
            node_id="FYE_SpeedOptions",
            display_name="FYE Speed Options",
            category=CATEGORY,
            description="Expert overrides of the speed preset chosen in FYE Animate; 'preset' (or -1) keeps the "
                        "preset's value of a setting.",
            inputs=[
                io.Combo.Input("solver", options=["preset", *SOLVERS], default="preset",
                               tooltip="ddim (official), dpmpp_2m (DPM-Solver++ 2M), unipc, euler, or lcm (a "
                                       "distilled student's consistency sampler)."),
                io.Float.Input("cfg_start", default=-1.0, min=-1.0, max=1.0, step=0.01,
                               tooltip="The unconditional pass runs on steps from this part of the run (fraction; "
                                       "-1: the preset's)."),
                io.Float.Input("cfg_end", default=-1.0, min=-1.0, max=1.0, step=0.01,
                               tooltip="... up to this part of the run (fraction; -1: the preset's; official 0-1)."),
                io.Combo.Input("cfg_reuse", options=["preset", "on", "off"], default="preset",
                               tooltip="Outside that part, keep guiding with the last guidance difference."),
                io.Int.Input("cache_interval", default=-1, min=-1, max=100,
                             tooltip="Feature cache: the whole UNet every N steps, the deep features forecast "
                                     "between (1 = off; -1: the preset's)."),
                io.Int.Input("cache_order", default=-1, min=-1, max=3,
                             tooltip=f"Order of the Taylor forecast (0 reuses the last value; -1: the preset's, "
                                     f"default {cache.order})."),
                io.Int.Input("cache_depth", default=-1, min=-1, max=3,
                             tooltip="UNet level where the cached branch starts (1 caches the most; -1: the "
                                     "preset's)."),
                io.Int.Input("cache_warmup", default=-1, min=-1, max=100,
                             tooltip="First steps always computed whole (-1: the preset's)."),
            ],
            outputs=[SpeedType.Output(display_name="speed_options")],
        )

    @classmethod
    def execute(cls, solver, cfg_start, cfg_end, cfg_reuse, cache_interval, cache_order, cache_depth,
                cache_warmup) -> io.NodeOutput:
        overrides = {"solver": None if solver == "preset" else solver,
                     "cfg_reuse": None if cfg_reuse == "preset" else cfg_reuse == "on",
                     "cfg_interval": None if min(cfg_start, cfg_end) < 0 else (cfg_start, cfg_end)}
        for name, value in (("interval", cache_interval), ("order", cache_order), ("depth", cache_depth),
                            ("warmup", cache_warmup)):
            overrides[f"cache_{name}"] = None if value < 0 else value
        return io.NodeOutput(overrides)


def free_memory(device: torch.device) -> int | None:
    """The device's free memory as ComfyUI counts it (its cache included); None on a CPU, whose figure says
    nothing about what a run may take."""
    return None if device.type == "cpu" else comfy.model_management.get_free_memory(device)


def sampling_progress(device, steps: int):
    """A sampler callback: interrupt checks between windows and steps, a progress bar with latent previews."""
    bar = comfy.utils.ProgressBar(steps)
    previewer = latent_preview.get_previewer(device, comfy.latent_formats.SD15())

    def callback(event: dict) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if event["event"] == "step":
            # the clean-latent estimate of the middle frame
            denoised = event["denoised"][:, :, event["denoised"].shape[2] // 2].float()
            preview = previewer.decode_latent_to_preview_image("JPEG", denoised) if previewer else None
            bar.update_absolute(event["step"] + 1, event["steps"], preview)

    return callback


ANIMATE_NODES = (LoadModels, Animate, SpeedOptions)
