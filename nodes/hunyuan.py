"""The HunyuanPortrait backend as ComfyUI nodes: the same IMAGE inputs and face tracks as the FYE nodes, the same
face crop and paste-back nodes around it."""
import logging
import os
from dataclasses import replace

import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.utils
import latent_preview
import torch
from comfy_api.v0_0_2 import io

from ..fye_core.errors import FYEInputError
from ..fye_core.hunyuan.config import INFERENCE
from ..fye_core.hunyuan.face import MediaPipeFaces, faces_from_track, track_face
from ..fye_core.hunyuan.loader import locate_files
from ..fye_core.hunyuan.models import CFG_BRANCHES
from ..fye_core.hunyuan.pipeline import (
    HunyuanOptions,
    HunyuanPortrait,
    animate_frames,
    check_reference,
    encode_driving,
    load_hunyuan_portrait,
    reference_tokens,
)
from ..fye_core.image import images_to_uint8
from ..fye_core.memory import MEMORY_MODES, hunyuan_low_memory, hunyuan_step_bytes
from ..fye_core.sampling.cache import CachePlan
from .animate import free_memory
from .convert import FrameProgress
from .landmarks import FaceTrackType, face_detector
from .models import DTYPES, hunyuan_dirs, loader_placement

CATEGORY = "FollowYourEmoji/HunyuanPortrait"
HunyuanPortraitType = io.Custom("FYE_HUNYUAN_PORTRAIT")
OFF = CachePlan()  # the feature cache's defaults: off (interval 1)

log = logging.getLogger(__name__)


class HunyuanNetworks(torch.nn.Module):
    """The HunyuanPortrait networks in one module, so that one ModelPatcher loads and offloads them together."""

    def __init__(self, backend: HunyuanPortrait):
        super().__init__()
        self.networks = torch.nn.ModuleDict(backend.models.networks())
        self.backend = backend


def weight_folders() -> dict[str, str]:
    """Subfolders of models/hunyuan_portrait that hold the released files: name -> path."""
    folders = {}
    for root in hunyuan_dirs():
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            try:
                locate_files(os.path.join(root, name))
            except FYEInputError:
                continue
            folders.setdefault(name, os.path.join(root, name))
    return folders


class LoadHunyuanPortrait(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_LoadHunyuanPortrait",
            display_name="FYE Load HunyuanPortrait",
            category=CATEGORY,
            description="Loads HunyuanPortrait (implicit-motion portrait animation on Stable Video Diffusion) from "
                        "a folder in models/hunyuan_portrait holding the released files: hyportrait/*.pth, "
                        "stable-video-diffusion-img2vid-xt/vae/ and, for the identity conditioning, arcface.onnx.",
            inputs=[
                io.Combo.Input("weights", options=list(weight_folders()),
                               tooltip="A folder in models/hunyuan_portrait with the released files (the official "
                                       "pretrained_weights layout, or every file side by side)."),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto",
                               tooltip="Weights and compute dtype of the UNet, DINO and VAE decoder; auto picks what "
                                       "ComfyUI uses for UNets on this device. The motion encoders stay fp32."),
            ],
            outputs=[HunyuanPortraitType.Output(display_name="hunyuan_portrait")],
        )

    @classmethod
    def execute(cls, weights, dtype) -> io.NodeOutput:
        folders = weight_folders()
        if weights not in folders:
            raise FYEInputError(f"no HunyuanPortrait weights folder {weights!r} in {', '.join(hunyuan_dirs())}")
        load_device, offload_device, dtype = loader_placement(dtype)
        backend = load_hunyuan_portrait(folders[weights], dtype, offload_device)
        return io.NodeOutput(comfy.model_patcher.ModelPatcher(HunyuanNetworks(backend), load_device, offload_device))


class HunyuanPortraitAnimate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_HunyuanPortraitAnimate",
            display_name="FYE HunyuanPortrait Animate",
            category=CATEGORY,
            description="Animates the reference face crop with the driving frames' expressions and head motion "
                        "(HunyuanPortrait): one output frame per driving frame, at the reference's size. The "
                        "defaults are the released settings.",
            inputs=[
                HunyuanPortraitType.Input("hunyuan_portrait", tooltip="From FYE Load HunyuanPortrait."),
                io.Image.Input("reference", tooltip="The face crop to animate, sides multiples of 64 (FYE Face Crop "
                                                    "with margin 1.0 and size 512 frames it as the released code); "
                                                    "the first image of a batch is used."),
                io.Image.Input("driving", tooltip="The driving video's frames."),
                FaceTrackType.Input("driving_track", tooltip="Face track of the driving frames (FYE Face "
                                                             "Landmarks); frames without a face hold a neighbour's."),
                io.Int.Input("steps", default=INFERENCE.num_inference_steps, min=1, max=1000,
                             tooltip=f"Euler steps (released {INFERENCE.num_inference_steps})."),
                io.Float.Input("appearance_cfg", default=INFERENCE.appearance_guidance, min=0.0, max=20.0, step=0.1,
                               tooltip="Guidance towards the reference's appearance (released 2.0)."),
                io.Float.Input("motion_cfg", default=INFERENCE.motion_guidance, min=0.0, max=20.0, step=0.1,
                               tooltip="Guidance towards the driving motion (released 2.0)."),
                io.Int.Input("seed", default=INFERENCE.seed, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; the same seed gives the same video on every device."),
                io.Int.Input("context_frames", default=INFERENCE.frames_per_window, min=1, max=256,
                             tooltip="Frames per window (released 25), also the chunk of driving frames whose "
                                     "motion intensity is measured together."),
                io.Int.Input("context_overlap", default=INFERENCE.overlap, min=0, max=255,
                             tooltip="Frames shared by neighbouring windows (released 3)."),
                io.Int.Input("shift_offset", default=INFERENCE.shift_offset, min=0, max=255,
                             tooltip="How much further back the windows start at every step, so that their seams "
                                     "move (released 3)."),
                io.Int.Input("pad_frames", default=INFERENCE.pad_frames, min=0, max=256,
                             tooltip="Frames faded in from and out to a still face at both ends of the clip, "
                                     "dropped after decoding (released 15)."),
                FaceTrackType.Input("reference_track", optional=True,
                                    tooltip="Face track of the reference (FYE Face Crop's face_track), for the "
                                            "ArcFace identity embedding; found on the reference when not "
                                            "connected. Unused without arcface.onnx."),
                io.Float.Input("cfg_start", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="Savings: the three guidance branches run only on the steps from this part "
                                       "of the run (fraction; released 0)..."),
                io.Float.Input("cfg_end", default=1.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="... up to this part (fraction; released 1: every step). On the other steps "
                                       "the conditional branch alone runs, a third of the UNet work."),
                io.Boolean.Input("cfg_reuse", default=False, optional=True,
                                 tooltip="Outside cfg_start-cfg_end, keep guiding with each frame's last guidance "
                                         "difference instead of dropping guidance (released: off)."),
                io.Int.Input("cache_interval", default=OFF.interval, min=1, max=100, optional=True,
                             tooltip="Feature cache: the whole UNet every N steps, the deep features forecast "
                                     "between (1 = off, released). It forecasts a window only from its own earlier "
                                     "steps, so it saves time only with shift_offset 0 (fixed windows)."),
                io.Int.Input("cache_order", default=OFF.order, min=0, max=3, optional=True,
                             tooltip="Feature cache: order of the Taylor forecast (0 reuses the last value)."),
                io.Int.Input("cache_depth", default=OFF.depth, min=1, max=3, optional=True,
                             tooltip="Feature cache: UNet level where the cached branch starts (1 caches the most)."),
                io.Int.Input("cache_warmup", default=OFF.warmup, min=0, max=100, optional=True,
                             tooltip="Feature cache: first steps always computed whole."),
                io.Combo.Input("memory", options=list(MEMORY_MODES), default="auto", optional=True,
                               tooltip="auto: the three guidance branches one after the other when the device's "
                                       "free memory is short of them in one batch; low: always (same output, a "
                                       "little slower); default: never. ComfyUI also streams the weights that do "
                                       "not fit."),
            ],
            outputs=[io.Image.Output(display_name="images"),
                     io.String.Output(display_name="report",
                                      tooltip="Driving frames without a face, and whether ArcFace was used.")],
        )

    @classmethod
    def execute(cls, hunyuan_portrait, reference, driving, driving_track, steps, appearance_cfg, motion_cfg, seed,
                context_frames, context_overlap, shift_offset, pad_frames, reference_track=None, cfg_start=0.0,
                cfg_end=1.0, cfg_reuse=False, cache_interval=OFF.interval, cache_order=OFF.order,
                cache_depth=OFF.depth, cache_warmup=OFF.warmup, memory="auto") -> io.NodeOutput:
        reference_u8 = images_to_uint8(reference[:1])[0]
        check_reference(reference_u8)
        if (len(driving_track), driving_track.height, driving_track.width) != tuple(driving.shape[:3]):
            raise FYEInputError(f"the driving track has {len(driving_track)} frames of {driving_track.width}x"
                                f"{driving_track.height}, the driving images {len(driving)} of {driving.shape[2]}x"
                                f"{driving.shape[1]}; connect the track made from these frames")
        options = HunyuanOptions(steps=steps, appearance_guidance=(appearance_cfg,) * 2,
                                 motion_guidance=(motion_cfg,) * 2, seed=seed, window=context_frames,
                                 overlap=context_overlap, shift_offset=shift_offset, pad_frames=pad_frames,
                                 cfg_interval=(cfg_start, cfg_end), cfg_reuse=cfg_reuse,
                                 cache=CachePlan(cache_interval, cache_order, cache_depth, cache_warmup))
        faces = faces_from_track(driving_track)
        backend = hunyuan_portrait.model.backend
        models = backend.models
        height, width = reference_u8.shape[:2]
        dtype, branches = models.unet.dtype, len(CFG_BRANCHES)
        # what a step needs besides the weights, all branches batched and one at a time: ComfyUI offloads other
        # models (and streams ours) to leave that much free
        comfy.model_management.load_models_gpu(
            [hunyuan_portrait], memory_required=hunyuan_step_bytes(height, width, context_frames, branches, dtype),
            minimum_memory_required=hunyuan_step_bytes(height, width, context_frames, 1, dtype))
        low_memory = hunyuan_low_memory(memory, free_memory(hunyuan_portrait.load_device), height, width,
                                        context_frames, branches, dtype)
        options = replace(options, low_memory=low_memory)
        log.info("HunyuanPortrait memory: %s", "low (guidance branches one after the other)" if low_memory
                 else "default (guidance branches batched)")
        tokens, identity = reference_tokens(backend, reference_u8, lambda: reference_points(reference_u8,
                                                                                            reference_track))
        if backend.arcface is None:
            log.warning(identity)
        report = [f"driving: {faces.report()}", identity]
        encoding = FrameProgress(len(driving))
        frames = (images_to_uint8(driving[index:index + 1])[0] for index in range(len(driving)))
        motion = encode_driving(models, frames, faces, options.window,
                                lambda event: encoding(event["done"], event["total"]))
        chunks = animate_frames(models, reference_u8, tokens, motion, options,
                                sampling_progress(hunyuan_portrait.load_device))
        decoding = comfy.utils.ProgressBar(len(driving))
        out = []
        for chunk in chunks:
            comfy.model_management.throw_exception_if_processing_interrupted()
            out.append(chunk.to(comfy.model_management.intermediate_device()))
            decoding.update(len(chunk))
        return io.NodeOutput(torch.cat(out), "\n".join(report))


def reference_points(reference, reference_track):
    """The five points of the reference face, from its track or found on it, for the ArcFace alignment."""
    if reference_track is not None:
        if (reference_track.height, reference_track.width) != reference.shape[:2]:
            raise FYEInputError(f"the reference track is of a {reference_track.width}x{reference_track.height} "
                                f"image, the reference {reference.shape[1]}x{reference.shape[0]}; connect the "
                                "face track of this reference (FYE Face Crop's face_track)")
        return track_face(reference_track).points
    with face_detector("image") as detector:
        face, _ = MediaPipeFaces(detector).find_reference(reference, "the reference image")
    return face.points


def sampling_progress(device):
    """A sampler callback: interrupt checks between windows, a progress bar over every window of every step with a
    latent preview of the middle frame after each step."""
    bar = comfy.utils.ProgressBar(1)
    previewer = latent_preview.get_previewer(device, comfy.latent_formats.SD15())  # SVD's VAE: SD's latent space
    preview = None

    def callback(event: dict) -> None:
        nonlocal preview
        comfy.model_management.throw_exception_if_processing_interrupted()
        if event["event"] == "step" and previewer is not None:
            denoised = event["denoised"][:, event["denoised"].shape[1] // 2].float()
            preview = previewer.decode_latent_to_preview_image("JPEG", denoised)
        if event["event"] == "window":
            done = event["step"] * event["windows"] + event["window"] + 1
            bar.update_absolute(done, event["steps"] * event["windows"], preview)

    return callback


HUNYUAN_NODES = (LoadHunyuanPortrait, HunyuanPortraitAnimate)
