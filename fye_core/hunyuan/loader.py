"""Loading the released HunyuanPortrait checkpoints and SVD-xt's VAE into our networks.

The networks are built on the meta device and the file's tensors assigned in place (strict: every key, every
shape), so a 6 GB ``unet.pth`` is read through mmap once and never doubled by random initial weights. ``.pth``
files load with ``torch.load(weights_only=True)``; ``.safetensors`` files with the same keys are accepted too.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from torch import nn

from ..errors import FYEInputError
from ..models.checkpoints import assign_weights, read_tensors
from .config import SVD_SCHEDULER, default_config
from .models import (
    AppearanceEncoder,
    HeadExpression,
    HeadPose,
    HunyuanUNet,
    ImageProjector,
    IntensityAwareMotionRefiner,
    PoseGuider,
)
from .models.appearance import ID_DIM

HUNYUAN_REPO = "https://huggingface.co/tencent/HunyuanPortrait"
SVD_REPO = "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt"
RELEASED_NAMES = ("unet", "dino", "image_proj", "pose_guider", "expression", "headpose", "motion_proj")
HUNYUAN_FOLDERS = (".", "hyportrait")
VAE_FILES = tuple(f"{folder}/diffusion_pytorch_model{variant}.safetensors"
                  for folder in ("stable-video-diffusion-img2vid-xt/vae", "vae")
                  for variant in (".fp16", ""))
DESCRIPTIONS = {
    "unet": "the HunyuanPortrait UNet with its motion weights (hyportrait/unet.pth)",
    "dino": "the HunyuanPortrait DINOv2 appearance encoder with ID adapters (hyportrait/dino.pth)",
    "image_proj": "the HunyuanPortrait image projector (hyportrait/image_proj.pth)",
    "pose_guider": "the HunyuanPortrait pose guider (hyportrait/pose_guider.pth)",
    "expression": "the HunyuanPortrait expression encoder (hyportrait/expression.pth)",
    "headpose": "the HunyuanPortrait head-pose encoder (hyportrait/headpose.pth)",
    "motion_proj": "the HunyuanPortrait motion refiner (hyportrait/motion_proj.pth)",
    "vae": "the SVD-xt VAE in diffusers format (stable-video-diffusion-img2vid-xt/vae/"
           "diffusion_pytorch_model.fp16.safetensors)",
}
# one key only each network's checkpoint holds: names the file a user put in the wrong place
_SIGNATURE_KEYS = {
    "unet": "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight",
    "dino": "register_tokens",
    "pose_guider": "blocks.5.weight",
    "expression": "resnet50.fc.weight",
    "headpose": "head_pose_net.fc.weight",
    "motion_proj": "connector.latents",
    "vae": "decoder.time_conv_out.weight",
}
_SVD_UNET_KEY = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
MOTION_NETWORKS = ("expression", "headpose", "motion_proj")  # kept fp32, as the official code runs them
ARCHITECTURE_FILE = "architecture.json"


@dataclass
class HunyuanModels:
    """Every network of a HunyuanPortrait run. The UNet's three-branch call is ``unet.predict_branches``.

    The VAE encoder runs in fp32 and its decoder in the models' dtype: decode with ``vae.decoder``'s dtype
    (``vae.dtype`` names the encoder's).
    """

    unet: HunyuanUNet
    vae: AutoencoderKLTemporalDecoder
    dino: AppearanceEncoder
    image_proj: ImageProjector
    pose_guider: PoseGuider
    expression: HeadExpression
    headpose: HeadPose
    motion_proj: IntensityAwareMotionRefiner
    config: dict

    def networks(self) -> dict[str, nn.Module]:
        return {"unet": self.unet, "dino": self.dino, "image_proj": self.image_proj, "pose_guider": self.pose_guider,
                "expression": self.expression, "headpose": self.headpose, "motion_proj": self.motion_proj,
                "vae": self.vae}

    def to(self, device=None, dtype: torch.dtype | None = None) -> HunyuanModels:
        """Moves every network; ``dtype`` applies to all but the motion networks, which stay fp32, and the VAE
        encoder, which stays fp32 (SVD's ``force_upcast``: the reference is encoded in fp32)."""
        for name, network in self.networks().items():
            # nn.Module.to: diffusers' ModelMixin.to warns about fp32-only modules these networks do not have
            nn.Module.to(network, device=device, dtype=torch.float32 if name in MOTION_NETWORKS else dtype)
        nn.Module.to(self.vae.encoder, dtype=torch.float32)
        nn.Module.to(self.vae.quant_conv, dtype=torch.float32)
        return self

    def encode_appearance(self, image: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        """Image tokens (1, 64, C) of the reference, shared by every frame.

        ``image``: (1, 3, 224, 224), the source crop resized and ImageNet-normalised; ``identity``: the
        L2-normalised ArcFace embedding (1, 512), None for none (the official ``use_arcface=False``: zeros).
        """
        weight = self.dino.cls_token
        if identity is None:
            identity = image.new_zeros(len(image), ID_DIM)
        tokens = self.dino(image.to(weight), identity.reshape(len(image), 1, -1).to(weight))
        return self.image_proj(tokens.to(self.image_proj.weight))

    def encode_motion(self, faces: torch.Tensor, poses: torch.Tensor, head_id: int, exp_id: int) -> torch.Tensor:
        """Motion tokens (T, 64, C) of one chunk of driving frames (25 frames in the official code).

        ``faces``: motion-face crops (T, 3, 256, 256) and ``poses``: head-pose crops (T, 3, 256, 256), RGB in
        [0, 1]; ``head_id``, ``exp_id``: the chunk's intensity buckets. A token is the refined expression
        (C - 6 channels) followed by the head rotation in degrees and a zeroed translation.
        """
        weight = self.expression.resnet50.conv1.weight
        # the official pose input is x * 2 + 1, in [1, 3]; channels-last input changes GroupNorm's rounding
        rotation, _ = self.headpose((poses.to(weight) * 2 + 1).contiguous())
        refined = self.motion_proj(self.expression(faces.to(weight).contiguous()), head_id, exp_id)
        head = torch.cat([rotation, torch.zeros_like(rotation)], dim=-1)
        return torch.cat([refined, head[:, None].expand(-1, refined.shape[1], -1)], dim=-1)

    def pose_feature(self, height: int, width: int) -> torch.Tensor:
        """The constant pose feature (1, 320, height/8, width/8) for ``height`` x ``width`` frames."""
        return self.pose_guider.constant_feature(height, width)

    def encode_reference(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference (1, 3, H, W) in [-1, 1] -> (start latents: the VAE mean times the scaling factor,
        condition latents: the VAE mode, unscaled), each (1, 4, H/8, W/8) fp32; no noise augmentation, as the
        official default."""
        posterior = self.vae.encode(image.to(self.vae.encoder.conv_in.weight)).latent_dist
        return posterior.mean * self.vae.config.scaling_factor, posterior.mode()

    @staticmethod
    def new_scheduler() -> EulerDiscreteScheduler:
        """SVD-xt's Karras-sigma Euler scheduler (v-prediction, continuous timesteps 0.25 ln sigma)."""
        return EulerDiscreteScheduler.from_config(SVD_SCHEDULER)


def build_hunyuan_models(config: dict | None = None, device: str | torch.device = "meta") -> HunyuanModels:
    """Constructs the networks (``config`` as ``default_config()``, the full size by default); on ``meta`` no
    memory is allocated for their weights."""
    config = config or default_config()
    with torch.device(device):
        return HunyuanModels(unet=HunyuanUNet(**config["unet"]), vae=AutoencoderKLTemporalDecoder(**config["vae"]),
                             dino=AppearanceEncoder(**config["dino"]),
                             image_proj=ImageProjector(**config["image_proj"]),
                             pose_guider=PoseGuider(**config["pose_guider"]),
                             expression=HeadExpression(**config["expression"]),
                             headpose=HeadPose(**config["headpose"]),
                             motion_proj=IntensityAwareMotionRefiner(**config["motion_proj"]), config=config)


def _check_checkpoint(name: str, state: dict[str, torch.Tensor], path: Path) -> None:
    """A wrong file gets named for what it holds; keys and shapes are checked in full by ``assign_weights``."""
    held = next((other for other, key in _SIGNATURE_KEYS.items() if key in state), None)
    if held is None and set(state) == {"weight", "bias"}:
        held = "image_proj"
    if name == "unet" and held is None and _SVD_UNET_KEY in state:
        raise FYEInputError(f"{path} is a UNet without HunyuanPortrait's motion weights (attn2.processor.to_k_ip/"
                            f"to_v_ip), probably SVD's own: use hyportrait/unet.pth from {HUNYUAN_REPO}")
    if held is not None and held != name:
        raise FYEInputError(f"{path} holds {len(state)} tensors of {DESCRIPTIONS[held]}, not {DESCRIPTIONS[name]}: "
                            "put each file under its own name")


def load_hunyuan_models(files: dict[str, str | os.PathLike], config: dict | None = None,
                        dtype: torch.dtype = torch.float16, device: str | torch.device = "cpu") -> HunyuanModels:
    """One file per network (``RELEASED_NAMES`` and ``"vae"``); ``config`` overrides the architecture (e.g. smaller
    test networks). The motion networks stay fp32; the others take ``dtype`` (fp16, as the official code)."""
    models = build_hunyuan_models(config)
    for name, network in models.networks().items():
        path = Path(files[name])
        state = read_tensors(path)
        _check_checkpoint(name, state, path)
        assign_weights(network, state, str(path), DESCRIPTIONS[name])
        network.eval()
    return models.to(device, dtype)


def locate_files(folder: str | os.PathLike) -> dict[str, Path]:
    """The released files in ``folder``: the official ``pretrained_weights`` layout (``hyportrait/*.pth`` and
    ``stable-video-diffusion-img2vid-xt/vae/``) or every file side by side (``.pth`` or ``.safetensors``)."""
    folder = Path(folder)
    files, missing = {}, []
    for name in RELEASED_NAMES:
        candidates = [folder / sub / f"{name}{suffix}" for sub in HUNYUAN_FOLDERS
                      for suffix in (".pth", ".safetensors")]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            missing.append(f"{name}.pth (hyportrait/{name}.pth of {HUNYUAN_REPO})")
        files[name] = found
    files["vae"] = next((folder / name for name in VAE_FILES if (folder / name).is_file()), None)
    if files["vae"] is None:
        missing.append(f"{VAE_FILES[0]} (vae/diffusion_pytorch_model.fp16.safetensors of {SVD_REPO})")
    if missing:
        raise FYEInputError(f"{folder} lacks " + "; ".join(missing))
    return files


def folder_config(folder: str | os.PathLike) -> dict | None:
    """The architecture of networks of other sizes than the released ones (smaller re-trained or test networks):
    ``architecture.json`` in the folder, ``default_config()``'s layout, the networks it names replaced."""
    path = Path(folder) / ARCHITECTURE_FILE
    if not path.is_file():
        return None
    try:
        return {**default_config(), **json.loads(path.read_text())}
    except (ValueError, TypeError) as err:
        raise FYEInputError(f"{path} is not an architecture file ({err}); remove it to load the released "
                            "networks") from None


def load_hunyuan_dir(folder: str | os.PathLike, config: dict | None = None, dtype: torch.dtype = torch.float16,
                     device: str | torch.device = "cpu") -> HunyuanModels:
    """``load_hunyuan_models`` of the files in ``folder`` (``locate_files``); ``config`` defaults to the folder's
    ``architecture.json``, else the released sizes."""
    return load_hunyuan_models(locate_files(folder), config or folder_config(folder), dtype, device)
