"""The model folders: ``fye`` (models/fye) and ``hunyuan_portrait`` (models/hunyuan_portrait, one subfolder per
set of HunyuanPortrait weights), plus any such entries of extra_model_paths.yaml."""
import os

import comfy.model_management
import folder_paths
import torch

FOLDER = "fye"
HUNYUAN_FOLDER = "hunyuan_portrait"
EXTENSIONS = {*folder_paths.supported_pt_extensions, ".task"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
