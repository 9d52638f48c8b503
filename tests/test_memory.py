"""The low-memory mode: each of its paths gives the default's output on the tiny networks, the automatic choice
follows the free memory, and running out of memory mid-run says what to do and writes nothing."""
import copy

import numpy as np
import pytest
import torch
from models_fixtures import golden_models_path, tiny_vae
from PIL import Image
from shared_data import shared_path

from fye_core import cli
from fye_core.animate import AnimationOptions, DiffusersVAE, animate_frames, memory_options
from fye_core.errors import FYEInputError
from fye_core.memory import (
    MemoryPlan,
    attention_matrix_bytes,
    decode_bytes,
    hunyuan_low_memory,
    hunyuan_step_bytes,
    offload_weights,
    plan_memory,
    step_bytes,
    store_weights_fp8,
)
from fye_core.models.unet3d import MotionUNet

FRAMES = 6


@pytest.fixture(scope="module")
def inputs(golden_tensors):
    with np.load(golden_models_path("inputs_u8.npz"), allow_pickle=False) as data:
        reference, motion = data["ref_u8"], data["lmk_u8"][:FRAMES]
    return DiffusersVAE(tiny_vae()), golden_tensors["clip_tokens"], reference, motion


def run(models, inputs, **options) -> torch.Tensor:
    codec, tokens, reference, motion = inputs
    options = AnimationOptions(steps=3, context_frames=4, **options)  # two cyclic windows
    return torch.cat(list(animate_frames(models, codec, tokens, reference, lambda i: motion[i], FRAMES, options)))


@pytest.fixture(scope="module")
def default(tiny, inputs):
    return run(tiny, inputs)


@pytest.mark.parametrize("plan", [MemoryPlan(low=True), MemoryPlan(low=True, attention_chunk=40),
                                  MemoryPlan(decode_chunk=1), MemoryPlan(low=True, attention_chunk=64, decode_chunk=2)],
                         ids=["sequential-cfg", "attention-chunks", "decode-chunks", "all"])
def test_each_low_memory_path_gives_the_default_output(tiny, inputs, default, plan):
    frames = run(tiny, inputs, memory=plan, decode_chunk=plan.decode_chunk)
    torch.testing.assert_close(frames, default, atol=2e-5, rtol=0)
    assert tiny.unet.reference_processors[0].chunk == 0  # the chunks are undone after the run


def test_the_progressive_and_tiled_modes_run_low_memory_too(tiny, inputs):
    for long_video in ("progressive", "tiles"):
        default = run(tiny, inputs, long_video=long_video)
        low = run(tiny, inputs, long_video=long_video, memory=MemoryPlan(low=True, attention_chunk=40))
        torch.testing.assert_close(low, default, atol=2e-5, rtol=0)


def test_streamed_weights_give_the_default_output(inputs, default):
    from models_fixtures import load_tiny_models

    models = load_tiny_models()
    offload_weights(models, "cpu", unet=True)  # the hooks as on a GPU, onto the CPU
    torch.testing.assert_close(run(models, inputs), default, atol=2e-5, rtol=0)


def test_fp8_storage_computes_with_the_fp8_rounded_weights(inputs):
    from models_fixtures import load_tiny_models

    stored = load_tiny_models()
    store_weights_fp8(stored, torch.float32)
    rounded = copy.deepcopy(load_tiny_models())
    cast = 0
    for network in ("unet", "referencenet"):
        kept = dict(getattr(stored, network).named_parameters())
        for name, parameter in getattr(rounded, network).named_parameters():
            if kept[name].dtype == torch.float8_e4m3fn:
                parameter.data = kept[name].data.float()
                cast += 1
    assert cast > 50  # the layers are stored in fp8, not only a few
    assert stored.unet.dtype == torch.float32  # diffusers reports the compute dtype
    torch.testing.assert_close(run(stored, inputs), run(rounded, inputs), atol=2e-5, rtol=0)


def test_the_networks_report_the_dtype_diffusers_does():
    from diffusers.models.modeling_utils import get_parameter_dtype
    from models_fixtures import load_tiny_models

    models = load_tiny_models()
    for network in (models.unet, models.referencenet):
        assert network.dtype == get_parameter_dtype(network) == torch.float32
        network.to(torch.bfloat16)
        assert network.dtype == get_parameter_dtype(network) == torch.bfloat16
        network.enable_layerwise_casting(compute_dtype=torch.float32)  # fp8 storage, fp32 compute
        assert network.dtype == get_parameter_dtype(network) == torch.float32


def test_the_automatic_choice_follows_the_free_memory():
    size, frames, half = 512, 24, torch.float16
    needed = step_bytes(size, size, frames, 2, half)
    assert plan_memory("auto", needed * 2, size, size, frames, True, half) == MemoryPlan()
    short = plan_memory("auto", needed // 2, size, size, frames, True, half)
    assert short.low and 0 < short.attention_chunk < (size // 8) ** 2 and short.decode_chunk < 8
    assert plan_memory("auto", None, size, size, frames, True, half) == MemoryPlan()  # unknown: as the official
    unknown = plan_memory("low", None, size, size, frames, True, half)  # forced without a figure: no chunks
    assert unknown == MemoryPlan(low=True)
    assert plan_memory("default", 1, size, size, frames, True, half) == MemoryPlan()
    # without CFG a step needs half: the same free memory may then be enough
    unguided = max(step_bytes(size, size, frames, 1, half), decode_bytes(size, size, 8, half))
    assert not plan_memory("auto", unguided, size, size, frames, False, half).low
    assert plan_memory("auto", unguided, size, size, frames, True, half).low
    # the attention is chunked only where its whole matrix would not fit a quarter of the free memory
    roomy = plan_memory("low", 8 * attention_matrix_bytes(size, size, frames, 1, half), size, size, frames, True,
                        half)
    assert roomy.low and roomy.attention_chunk == 0
    with pytest.raises(FYEInputError, match="memory must be one of"):
        plan_memory("small", None, size, size, frames, True, half)
    options = memory_options(AnimationOptions(), "auto", needed // 2, size, size, half)
    assert options.memory == short and options.decode_chunk == short.decode_chunk
    assert options.guidance_plan.batched is False and AnimationOptions().guidance_plan.batched


def test_hunyuan_portrait_runs_its_branches_one_at_a_time_when_they_do_not_fit():
    size, frames, half = 512, 25, torch.float16
    batched = hunyuan_step_bytes(size, size, frames, 3, half)
    assert batched == 3 * hunyuan_step_bytes(size, size, frames, 1, half)
    assert not hunyuan_low_memory("auto", batched, size, size, frames, 3, half)
    assert hunyuan_low_memory("auto", batched - 1, size, size, frames, 3, half)
    assert not hunyuan_low_memory("auto", None, size, size, frames, 3, half)  # unknown (a CPU): as released
    assert hunyuan_low_memory("low", None, size, size, frames, 3, half)
    assert not hunyuan_low_memory("default", 1, size, size, frames, 3, half)
    with pytest.raises(FYEInputError, match="memory must be one of"):
        hunyuan_low_memory("small", None, size, size, frames, 3, half)


def test_running_out_of_memory_in_a_window_names_the_option_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from models_fixtures import write_tiny_models_dir

    models = write_tiny_models_dir(tmp_path / "models")
    portrait = tmp_path / "portrait.png"
    Image.open(shared_path("data", "portrait_painting_s9.jpg")).resize((72, 128)).save(portrait)
    forward, calls = MotionUNet.forward, []

    def short_of_memory(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the second window of the first step
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(MotionUNet, "forward", short_of_memory)
    out = tmp_path / "animated.mp4"
    code = cli.main(["animate", "--portrait", str(portrait), "--driving", str(shared_path("data", "lp_d0_driving.mp4")),
                     "--models", str(models), "--out", str(out), "--reference-mode", "keep", "--steps", "2",
                     "--context-frames", "8"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "out of memory during the animation" in error and "--low-memory" in error, error
    assert "Nothing was written" in error
    assert not out.exists() and not list(tmp_path.glob(".animated*"))
