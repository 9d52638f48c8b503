"""Node behaviour that HTTP cannot show: cancellation between frames, previews, the models folder.

ComfyUI's modules rewrite sys.path on import, so they run in a child process with the pack loaded the
way ComfyUI loads custom nodes (a package named after its folder).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from comfy_host import COMFYUI_DIR, REPO_ROOT
from shared_data import shared_path

pytestmark = pytest.mark.comfyui

# a child process's start: ComfyUI on the CPU, and this pack (argv[1]) loaded as ComfyUI loads custom nodes
PACK_LOADED = r"""
import importlib.util, json, os, sys
repo, *args = sys.argv[1:]
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, os.getcwd())
import comfy.options
comfy.options.enable_args_parsing()
import utils.extra_config  # before `nodes`/comfy.utils shadow the `utils` package
import numpy as np
import torch

spec = importlib.util.spec_from_file_location("fye_pack", os.path.join(repo, "__init__.py"),
                                              submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec)
sys.modules["fye_pack"] = pack
spec.loader.exec_module(pack)
"""

SCRIPT = PACK_LOADED + r"""
extra_dir, frames_path = args
import folder_paths
import comfy.model_management as mm
import comfy.utils
from fye_pack.nodes.landmarks import FaceLandmarks
from fye_pack.nodes.models import register_model_folder

folder_paths.add_model_folder_path("fye", extra_dir)  # as extra_model_paths.yaml would, before us
register_model_folder()
paths, extensions = folder_paths.folder_names_and_paths["fye"]

calls = []
def hook(value, total, preview, node_id=None):
    calls.append([value, total, preview[0] if preview else None])
    if value == 2:
        mm.interrupt_current_processing(True)
comfy.utils.set_progress_bar_global_hook(hook)

frames = torch.from_numpy(np.load(frames_path)).float() / 255.0
result = {"paths": paths, "task_listed": ".task" in extensions}
try:
    FaceLandmarks.execute(images=frames, detection="image", fill="hold", fps=25.0)
    result["interrupted"] = False
except mm.InterruptProcessingException:
    result["interrupted"] = True
result["calls"] = calls
comfy.utils.set_progress_bar_global_hook(None)
mm.interrupt_current_processing(False)
output = FaceLandmarks.execute(images=frames[:2], detection="image", fill="hold", fps=25.0)
track, preview, mask, report = output.result
result["device"] = str(preview.device)
result["mask_shape"] = list(mask.shape)
result["report"] = report
print("RESULT " + json.dumps(result))
"""


def test_face_landmarks_node_cancels_between_frames_and_previews(tmp_path):
    frames = np.load(shared_path("golden", "landmarks", "driving_lp_d0.npz"))["frames_sample"]
    frames_path = tmp_path / "frames.npy"
    np.save(frames_path, frames)
    extra = tmp_path / "extra_models" / "fye"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO_ROOT), str(extra), str(frames_path)],
                          cwd=COMFYUI_DIR, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result["interrupted"], result
    # the interrupt raised at the next frame: frames 1 and 2 reported, frame 3 never reached
    assert [c[0] for c in result["calls"]] == [1, 2] and result["calls"][0][1] == len(frames)
    assert result["calls"][0][2] == "JPEG"  # a live preview with the first frame
    # a path from extra_model_paths.yaml stays, ours is added after it
    assert result["paths"][0] == str(extra) and result["paths"][1].endswith(os.path.join("models", "fye"))
    assert result["task_listed"]
    assert result["device"] == "cpu" and result["mask_shape"] == [2, 512, 512]
    assert result["report"] == "face found in all 2 frames"


PARTIAL_LOAD_SCRIPT = PACK_LOADED + r"""
sys.path.insert(0, args[0])  # the tests folder
import comfy.model_patcher
from fye_pack.fye_core.animate import AnimationOptions, DiffusersVAE, animate_frames
from fye_pack.nodes.animate import FYENetworks
from models_fixtures import golden_models_path, load_tiny_models, tiny_vae
from safetensors.torch import load_file

with np.load(golden_models_path("inputs_u8.npz"), allow_pickle=False) as data:
    reference, motion = data["ref_u8"], data["lmk_u8"][:6]
tokens = load_file(str(golden_models_path("fixtures.safetensors")))["clip_tokens"]
codec = DiffusersVAE(tiny_vae())

def run(models):
    options = AnimationOptions(steps=2, context_frames=4)
    return torch.cat(list(animate_frames(models, codec, tokens, reference, lambda i: motion[i], 6, options)))

expected = run(load_tiny_models())
patcher = comfy.model_patcher.ModelPatcher(FYENetworks(load_tiny_models()), torch.device("cpu"), torch.device("cpu"))
patcher.load(torch.device("cpu"), lowvram_model_memory=patcher.model_size() // 3)
modules = [m for m in patcher.model.modules() if hasattr(m, "comfy_cast_weights")]
streamed = [m for m in modules if m.comfy_cast_weights]
weighted = [m for m in patcher.model.modules() if list(m.parameters(recurse=False))]
got = run(patcher.model.fye)
print("RESULT " + json.dumps({"castable": len(modules), "weighted": len(weighted), "streamed": len(streamed),
                              "lowvram": bool(getattr(patcher.model, "model_lowvram", False)),
                              "max_diff": float((got - expected).abs().max())}))
"""


def test_comfyui_partial_loading_streams_our_layers_with_the_same_output():
    done = subprocess.run([sys.executable, "-c", PARTIAL_LOAD_SCRIPT, str(REPO_ROOT), str(REPO_ROOT / "tests")],
                          cwd=COMFYUI_DIR, capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    # every layer with weights can be left in CPU memory; a third of the weights fit, so many are
    assert result["castable"] == result["weighted"] and result["lowvram"], result
    assert 0 < result["streamed"] < result["castable"], result
    assert result["max_diff"] < 2e-5, result


FP8_SCRIPT = PARTIAL_LOAD_SCRIPT.split("expected = ")[0] + r"""
from fye_pack.nodes.models import store_blocks_fp8

def fp8_networks():
    networks = FYENetworks(load_tiny_models())
    for network in (networks.fye.unet, networks.fye.referencenet):
        store_blocks_fp8(network)
    return networks

def rounded_models():
    models = load_tiny_models()
    reference = fp8_networks()
    stored = dict(reference.named_parameters())
    with torch.no_grad():
        for name, parameter in FYENetworks(models).named_parameters():
            parameter.copy_(stored[name].float())
    return models

full = FYENetworks(load_tiny_models())
networks = fp8_networks()
patcher = comfy.model_patcher.ModelPatcher(networks, torch.device("cpu"), torch.device("cpu"))
patcher.load(torch.device("cpu"), lowvram_model_memory=patcher.model_size() // 3)  # streamed as well
fp8 = [p for p in networks.parameters() if p.dtype == torch.float8_e4m3fn]
got, expected = run(networks.fye), run(rounded_models())
print("RESULT " + json.dumps({"fp8_tensors": len(fp8), "size": patcher.model_size(),
                              "full_size": comfy.model_management.module_size(full),
                              "unet_dtype": str(networks.fye.unet.dtype),
                              "max_diff": float((got - expected).abs().max())}))
"""


def test_comfyui_fp8_storage_computes_with_the_fp8_rounded_weights():
    """FYE Load Models' fp8_e4m3fn: the blocks' weights stored in fp8, cast per forward by comfy.ops (also while
    partially loaded), give the output of the same weights rounded to fp8 and computed in fp32."""
    done = subprocess.run([sys.executable, "-c", FP8_SCRIPT, str(REPO_ROOT), str(REPO_ROOT / "tests")],
                          cwd=COMFYUI_DIR, capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result["fp8_tensors"] > 0 and result["unet_dtype"] == "torch.float32", result
    assert result["size"] < 0.6 * result["full_size"], result
    assert result["max_diff"] < 2e-5, result
