"""Reading and writing FYE weights without materialising random ones first.

Formats: the official ``lmk_guider.pth`` / ``referencenet.pth`` / ``unet.pth`` (torch.load with
weights_only), kijai's per-network fp16 safetensors (official key names), AnimateDiff motion-module
checkpoints, and our own single safetensors file holding every network with its config in the metadata.
Models are built on the meta device and the loaded tensors assigned in place.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import FYEInputError
from ..files import atomic_output
from . import configs
from .guider import LandmarkGuider
from .qformer import QFormer
from .referencenet import ReferenceNet
from .unet3d import MotionUNet

FORMAT = "fye-models/1"
OFFICIAL_FILES = {"guider": "lmk_guider.pth", "referencenet": "referencenet.pth", "unet": "unet.pth"}
DESCRIPTIONS = {"guider": "the FYE landmark guider (lmk_guider.pth)",
                "referencenet": "the FYE ReferenceNet (referencenet.pth)",
                "unet": "the FYE denoising UNet with motion modules (unet.pth)"}
# AnimateDiff's motion-module names -> pip UNetMotionModel's (diffusers' convert_animatediff_checkpoint_to_diffusers)
_ANIMATEDIFF_RENAMES = ((".temporal_transformer", ""), (".attention_blocks.0", ".attn1"),
                        (".attention_blocks.1", ".attn2"), (".norms.0", ".norm1"), (".norms.1", ".norm2"),
                        (".ff_norm", ".norm3"))


@dataclass
class FYEModels:
    guider: LandmarkGuider
    referencenet: ReferenceNet
    unet: MotionUNet
    config: dict
    qformer: QFormer | None = None
    execution_device: torch.device | None = None  # set where the weights may live elsewhere (partial loading)

    @property
    def device(self) -> torch.device:
        """Where the networks compute: their inputs go there."""
        return self.execution_device or self.unet.device

    def networks(self) -> dict[str, nn.Module]:
        networks = {"guider": self.guider, "referencenet": self.referencenet, "unet": self.unet}
        return networks if self.qformer is None else {**networks, "qformer": self.qformer}

    def encode_context(self, clip_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention contexts of the ReferenceNet and the UNet from CLIP tokens (B, 257, 1024).

        Zero tokens give the official unconditional context (``clip_fc`` bias). With a Q-Former its
        query tokens follow the ``clip_fc`` tokens.
        """
        contexts = self.referencenet.encode_context(clip_tokens), self.unet.encode_context(clip_tokens)
        if self.qformer is None:
            return contexts
        queries = self.qformer(clip_tokens.to(next(self.qformer.parameters()).dtype))
        return tuple(torch.cat([context, queries.to(context.dtype)], dim=1) for context in contexts)

    def to(self, device=None, dtype=None) -> FYEModels:
        for network in self.networks().values():
            # nn.Module.to: diffusers' ModelMixin.to warns about fp32-only modules these networks do not have
            nn.Module.to(network, device=device, dtype=dtype)
        return self


def default_config() -> dict:
    """The full-size official architecture."""
    return {"unet2d": dict(configs.SD15_UNET), "motion": dict(configs.MOTION), "guider": dict(configs.GUIDER)}


def build_models(config: dict | None = None, device: str | torch.device = "meta") -> FYEModels:
    """Constructs the networks; on ``meta`` (the default) no memory is allocated for their weights.

    ``config["qformer"]`` (QFormer kwargs, may be empty) adds the optional Q-Former;
    ``config["unet_in_channels"]`` = 9 makes a denoising UNet that takes the paper's masked latents.
    """
    config = config or default_config()
    unet = configs.unet3d_config(config["unet2d"], config["motion"])
    unet["in_channels"] = config.get("unet_in_channels", configs.LATENT_CHANNELS)
    with torch.device(device):
        qformer = QFormer(**config["qformer"]) if config.get("qformer") is not None else None
        return FYEModels(guider=LandmarkGuider(**config["guider"]),
                         referencenet=ReferenceNet(**config["unet2d"]),
                         unet=MotionUNet(**unet),
                         config=config, qformer=qformer)


def official_to_ours(network: str, key: str) -> str | None:
    """Our parameter name of an official key; None for the derivable positional encodings."""
    if network == "unet" and "motion_modules" in key:
        if "pos_encoder" in key:
            return None
        for old, new in _ANIMATEDIFF_RENAMES:
            key = key.replace(old, new)
    return key


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, or of a ``.pth``/``.ckpt`` loaded without running code."""
    path = Path(path)
    if not path.is_file():
        raise FYEInputError(f"checkpoint not found: {path}")
    if path.suffix in (".safetensors", ".sft"):
        try:
            with safe_open(str(path), framework="pt") as f:
                return {key: f.get_tensor(key) for key in f.keys()}
        except (SafetensorError, OSError) as err:
            raise FYEInputError(f"{path} is not a readable safetensors file ({err}); it may be truncated: "
                                "download it again") from None
    try:
        # mmap keeps the file out of RAM until used; only torch's zip format supports it
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        raise FYEInputError(f"refused to load {path}: it is a pickle that needs to run code to load "
                            f"({str(err).splitlines()[0]}); only plain tensor checkpoints are accepted") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise FYEInputError(f"cannot read the checkpoint {path} ({err}); it may be truncated: download it again") \
            from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FYEInputError(f"{path} does not hold a plain dict of tensors")
    return state


def assign_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str, description: str,
            part=lambda key: True) -> None:
    """Loads ``state`` into a meta-built module by assignment; every parameter of ``part`` must be there,
    with its shape. Anything else is an error naming ``source`` and the first offending keys."""
    expected = {key: tensor for key, tensor in module.state_dict().items() if part(key)}
    derivable = {k for k in expected if k.endswith("pos_embed.pe")}
    missing = [k for k in expected if k not in state and k not in derivable]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
                  for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or mis_shaped:
        problems = []
        for label, keys in (("missing", missing), ("mis-shaped", mis_shaped), ("unexpected", unexpected)):
            if keys:
                problems.append(f"{len(keys)} {label}: {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}")
        raise FYEInputError(f"{source} does not hold {description}: " + "; ".join(problems))
    # a meta-built module takes the tensors themselves; a loaded one copies them into its own dtype and device
    module.load_state_dict(state, strict=False, assign=any(p.is_meta for p in module.parameters()))
    _materialise_positional_encodings(module)


def _materialise_positional_encodings(module: nn.Module) -> None:
    """The motion modules' sinusoidal tables are not stored; compute the ones still on the meta device."""
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    for sub in module.modules():
        if isinstance(sub, SinusoidalPositionalEmbedding) and sub.pe.is_meta:
            fresh = SinusoidalPositionalEmbedding(sub.pe.shape[-1], sub.pe.shape[1])
            sub.register_buffer("pe", fresh.pe.to(device=_device_of(module)))


def _device_of(module: nn.Module) -> torch.device:
    return next(p.device for p in module.parameters() if not p.is_meta)


def _official_state(network: str, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in read_tensors(path).items():
        ours = official_to_ours(network, key)
        if ours is not None:
            state[ours] = tensor
    return state


def infer_config(guider: dict[str, tuple], referencenet: dict[str, tuple]) -> dict:
    """The architecture of official-format weights from their key shapes (``{key: shape}``)."""
    levels = sorted({int(key.split(".")[1]) for key in referencenet if key.startswith("down_blocks.")})

    def has_attention(kind: str, level: int) -> bool:
        return any(key.startswith(f"{kind}_blocks.{level}.attentions.") for key in referencenet)

    cross_attention = next(shape for key, shape in referencenet.items() if key.endswith("attn2.to_k.weight"))
    unet2d = {
        **configs.SD15_UNET,
        "in_channels": referencenet["conv_in.weight"][1],
        "block_out_channels": [referencenet[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in levels],
        "layers_per_block": len({key.split(".")[3] for key in referencenet
                                 if key.startswith("down_blocks.0.resnets.")}),
        "down_block_types": ["CrossAttnDownBlock2D" if has_attention("down", i) else "DownBlock2D" for i in levels],
        "up_block_types": ["CrossAttnUpBlock2D" if has_attention("up", i) else "UpBlock2D" for i in levels],
        "cross_attention_dim": cross_attention[1],
    }
    downsamplers = range(1, len([key for key in guider if key.startswith("blocks.") and key.endswith(".weight")]), 2)
    guider_config = {
        "conditioning_embedding_channels": guider["conv_out.weight"][0],
        "conditioning_channels": guider["conv_in.weight"][1],
        "block_out_channels": [guider["conv_in.weight"][0]] + [guider[f"blocks.{i}.weight"][0] for i in downsamplers],
    }
    return {"unet2d": unet2d, "motion": dict(configs.MOTION), "guider": guider_config}


def load_official(files: dict[str, str | os.PathLike], config: dict | None = None) -> FYEModels:
    """Official or kijai files, one per network: ``{"guider": ..., "referencenet": ..., "unet": ...}``.

    Without ``config`` the architecture is read off the weights' shapes.
    """
    states = {network: _official_state(network, files[network]) for network in ("guider", "referencenet", "unet")}
    if config is None:
        shapes = {network: {key: tuple(t.shape) for key, t in state.items()} for network, state in states.items()}
        try:
            config = infer_config(shapes["guider"], shapes["referencenet"])
        except (KeyError, StopIteration, IndexError) as err:
            raise FYEInputError(f"cannot tell the architecture of {files['guider']} and {files['referencenet']} "
                                f"(no {err}); are they the FYE lmk_guider and referencenet weights?") from None
    models = build_models(config)
    for network, state in states.items():
        assign_weights(models.networks()[network], state, str(files[network]), DESCRIPTIONS[network])
    return models


def load_official_dir(folder: str | os.PathLike, config: dict | None = None) -> FYEModels:
    folder = Path(folder)
    missing = [name for name in OFFICIAL_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FYEInputError(f"{folder} lacks {', '.join(missing)}: put the official Follow-Your-Emoji files "
                            "there (https://huggingface.co/YueMafighting/FollowYourEmoji)")
    return load_official({network: folder / name for network, name in OFFICIAL_FILES.items()}, config)


def load_motion_modules(models: FYEModels, path: str | os.PathLike) -> None:
    """Replaces the UNet's motion modules with an AnimateDiff checkpoint (e.g. ``mm_sd_v15_v2.ckpt``)."""
    assign_weights(models.unet, _official_state("unet", path), str(path), "AnimateDiff v2 motion modules for this UNet",
            part=lambda key: "motion_modules" in key)


def save_fye(models: FYEModels, path: str | os.PathLike, dtype: torch.dtype | None = torch.float16) -> Path:
    """Writes every network into one safetensors file (``guider.``, ``referencenet.``, ``unet.`` keys)."""
    tensors = {}
    for network, module in models.networks().items():
        for key, tensor in module.state_dict().items():
            if key.endswith("pos_embed.pe"):
                continue
            tensor = tensor.detach()
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            tensors[f"{network}.{key}"] = tensor.contiguous()
    metadata = {"format": FORMAT, "config": json.dumps(models.config)}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """A safetensors file's metadata (empty when it has none), or a clear error for an unreadable file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise FYEInputError(f"{path} is not a readable safetensors file ({err}); it may be truncated") from None


def load_fye(path: str | os.PathLike) -> FYEModels:
    """Loads our single-file format."""
    path = Path(path)
    metadata = safetensors_metadata(path)
    if metadata.get("format") != FORMAT:
        raise FYEInputError(f"{path} is not an FYE model file (no '{FORMAT}' format tag); for the official files "
                            "use load_official_dir or `fye convert`")
    models = build_models(json.loads(metadata["config"]))
    grouped: dict[str, dict[str, torch.Tensor]] = {name: {} for name in models.networks()}
    for key, tensor in read_tensors(path).items():
        network, _, rest = key.partition(".")
        if network not in grouped:
            raise FYEInputError(f"{path} holds an unknown network '{network}'")
        grouped[network][rest] = tensor
    for network, module in models.networks().items():
        assign_weights(module, grouped[network], str(path), f"the {network} of an FYE model file")
    return models
