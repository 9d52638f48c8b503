"""The model folders: ``fye`` (models/fye) and ``hunyuan_portrait`` (models/hunyuan_portrait, one subfolder per
set of HunyuanPortrait weights), plus any such entries of extra_model_paths.yaml."""
import os

import comfy.model_management
import comfy.ops
import folder_paths
import torch

FOLDER = "fye"
HUNYUAN_FOLDER = "hunyuan_portrait"
EXTENSIONS = {*folder_paths.supported_pt_extensions, ".task"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FP8 = "fp8_e4m3fn"  # a storage dtype: computed in ComfyUI's manual-cast dtype for it (fp16 on most GPUs)


def register_model_folder() -> None:
    # extra_model_paths.yaml is applied before custom nodes load: add our defaults, never replace theirs.
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
    paths, extensions = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(extensions) | EXTENSIONS)
    folder_paths.add_model_folder_path(HUNYUAN_FOLDER, os.path.join(folder_paths.models_dir, HUNYUAN_FOLDER))


def model_dirs() -> list[str]:
    return folder_paths.get_folder_paths(FOLDER)


def hunyuan_dirs() -> list[str]:
    return folder_paths.get_folder_paths(HUNYUAN_FOLDER)


def loader_placement(dtype: str) -> tuple[torch.device, torch.device, torch.dtype]:
    """A loader's load and offload devices (ComfyUI's, for UNets) and its dtype: one of ``DTYPES``, or ``auto``
    for what ComfyUI uses for UNets on the load device."""
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    return load_device, offload_device, comfy.model_management.unet_dtype(load_device) if dtype == "auto" \
        else DTYPES[dtype]


# ComfyUI's layers that its ModelPatcher can leave in CPU memory and cast onto the device per forward
_COMFY_LAYERS = {torch.nn.Linear: comfy.ops.disable_weight_init.Linear,
                 torch.nn.Conv2d: comfy.ops.disable_weight_init.Conv2d,
                 torch.nn.Conv3d: comfy.ops.disable_weight_init.Conv3d,
                 torch.nn.GroupNorm: comfy.ops.disable_weight_init.GroupNorm,
                 torch.nn.LayerNorm: comfy.ops.disable_weight_init.LayerNorm}
_twins: dict[type, type] = {}


def comfy_layers(network: torch.nn.Module) -> torch.nn.Module:
    """``network`` with every weighted layer turned into its ``comfy.ops`` twin (same parameters and output), so
    that ComfyUI's partial loading can stream it: the ModelPatcher loads the layers that fit and casts the others
    onto the device for their forward. ComfyUI then owns the placement of these weights; nothing else moves them.
    Subclasses (the motion modules' per-frame GroupNorm) keep their forward around ComfyUI's."""
    for module in network.modules():
        base = next((base for base in _COMFY_LAYERS if isinstance(module, base)), None)
        if base is None or isinstance(module, comfy.ops.CastWeightBiasOp):
            continue
        cls = type(module)
        if cls is base:
            module.__class__ = _COMFY_LAYERS[base]
        else:
            if cls not in _twins:
                _twins[cls] = type(cls.__name__, (cls, _COMFY_LAYERS[base]), {})
            module.__class__ = _twins[cls]
    return network


def store_blocks_fp8(network: torch.nn.Module) -> None:
    """The weights of the linear and convolution layers inside the UNet's blocks (the bulk of them) kept in fp8
    (e4m3), each cast to the compute dtype for its forward by its ``comfy.ops`` layer, as ComfyUI's fp8 UNets do;
    the input and output convolutions, embeddings and norms stay in the compute dtype (and so name it). Run
    after ``comfy_layers``."""
    for blocks in (*network.down_blocks, network.mid_block, *network.up_blocks):
        for module in blocks.modules():
            if isinstance(module, (comfy.ops.CastWeightBiasOp)) and isinstance(
                    module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)):
                module.weight.data = module.weight.data.to(torch.float8_e4m3fn)
                module.comfy_cast_weights = True


def buffers_to(network: torch.nn.Module, device: torch.device) -> None:
    """Moves the buffers (positional encodings) that a partial load leaves behind onto the compute device."""
    for module in network.modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)
