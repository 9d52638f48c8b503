"""HunyuanPortrait's savings, the guidance interval and the feature cache, on the tiny seeded networks: the defaults
are the released loop bit for bit, and each saving does what it says (which UNet calls run, with which branches,
forecast or computed). Mechanics only: on random tiny weights the output's quality means nothing."""
import logging

import pytest
import torch
from hunyuan_models_fixtures import fixtures, load_tiny_hunyuan

from fye_core.cli import _check_backend_options, build_parser, hunyuan_options
from fye_core.errors import FYEInputError
from fye_core.hunyuan.models import CFG_BRANCHES, time_ids
from fye_core.hunyuan.pipeline import HunyuanOptions, sample
from fye_core.hunyuan.sampler import (
    HunyuanConditioning,
    euler_step,
    guidance_scales,
    guided_v,
    karras_schedule,
    model_input,
    sample_windows,
)
from fye_core.hunyuan.windows import step_windows
from fye_core.sampling import CachePlan

FRAMES, WINDOW, OVERLAP, STEPS, SIDE = 6, 4, 1, 4, 64  # 8x8 latents
W = 2  # windows a step
CACHE = CachePlan(interval=2, order=1, depth=1, warmup=1)  # whole on steps 0, 1 and 3; step 2 forecast


@pytest.fixture(scope="module")
def tiny():
    return load_tiny_hunyuan()


@pytest.fixture(scope="module")
def setup(tiny):
    golden = fixtures()
    latent = SIDE // 8
    with torch.no_grad():
        pose = tiny.pose_feature(SIDE, SIDE)
    cond = HunyuanConditioning(image_tokens=golden["b_image_tokens"],
                               motion_tokens=golden["a_motion_tokens_padded"][:, :FRAMES],
                               cond_latent=golden["vae_ref_mode"][..., :latent, :latent], pose_feature=pose,
                               time_ids=time_ids(12.5, 0, 0))
    sigmas, timesteps = karras_schedule(STEPS)
    x = golden["d1_noise"][:, :FRAMES, :, :latent, :latent] * sigmas[0]
    return cond, x, sigmas, timesteps


class Recorder:
    """The UNet's calls of a run (batch items, output) and how often its mid block really ran."""

    def __init__(self, unet):
        self.batches, self.outputs, self.mid_runs = [], [], 0
        self.handles = [unet.register_forward_hook(self._unet),
                        unet.mid_block.resnets[0].register_forward_hook(self._mid)]

    def _unet(self, module, args, output):
        self.batches.append(args[0].shape[0])
        self.outputs.append(output)

    def _mid(self, *_):
        self.mid_runs += 1

    def remove(self):
        for handle in self.handles:
            handle.remove()


def run(tiny, setup, shift_offset=0, **savings):
    """(final latents, window events, UNet recorder) of a run of the tiny UNet."""
    cond, x, sigmas, timesteps = setup
    scales = guidance_scales(1.5, 2.5, STEPS)
    events = []
    recorder = Recorder(tiny.unet)
    try:
        with torch.no_grad():
            final = sample_windows(tiny.unet, x, cond, sigmas, timesteps, scales, scales, WINDOW, OVERLAP,
                                   shift_offset, events.append, **savings)
    finally:
        recorder.remove()
    return final, [e for e in events if e["event"] == "window"], recorder


def released_loop(unet, x, cond, sigmas, timesteps, appearance, motion, window, overlap, shift_offset):
    """The released loop as it was before the savings."""
    num_frames = x.shape[1]
    for step in range(len(timesteps)):
        sigma, sigma_next = sigmas[step].to(x), sigmas[step + 1].to(x)
        windows = torch.from_numpy(step_windows(num_frames, step, window, overlap, shift_offset) % num_frames)
        stepped_sum, count = torch.zeros_like(x), torch.zeros(num_frames, dtype=x.dtype)
        for frames in windows:
            latents = x[:, frames]
            v = guided_v(unet, latents, sigma, timesteps[step], cond, frames, float(appearance[step]),
                         float(motion[step]))
            stepped_sum.index_add_(1, frames, euler_step(latents, v, sigma, sigma_next))
            count.index_add_(0, frames, torch.ones_like(frames, dtype=x.dtype))
        x = stepped_sum / count[:, None, None, None]
    return x


def no_hooks_left(unet) -> bool:
    return all(not getattr(module, "_diffusers_hook", None) or not module._diffusers_hook.hooks
               for module in unet.modules())


@pytest.mark.parametrize("shift_offset", [0, 1])
def test_defaults_are_the_released_loop_bit_for_bit(tiny, setup, shift_offset):
    cond, x, sigmas, timesteps = setup
    scales = guidance_scales(1.5, 2.5, STEPS)
    with torch.no_grad():
        before = released_loop(tiny.unet, x, cond, sigmas, timesteps, scales, scales, WINDOW, OVERLAP, shift_offset)
    default, events, recorder = run(tiny, setup, shift_offset)
    explicit, *_ = run(tiny, setup, shift_offset, cfg_interval=(0.0, 1.0), cfg_reuse=False, cache=CachePlan())
    assert torch.equal(default, before) and torch.equal(explicit, before)
    assert recorder.batches == [3] * W * STEPS and recorder.mid_runs == W * STEPS
    assert all(e["branches"] == CFG_BRANCHES and not e["partial"] for e in events)
    options = HunyuanOptions()
    assert (options.cfg_interval, options.cfg_reuse, options.cache.enabled) == ((0.0, 1.0), False, False)


def test_a_subset_of_branches_is_those_rows_of_the_three_branch_call(tiny, setup):
    cond, x, sigmas, timesteps = setup
    frames = torch.arange(WINDOW)
    args = (model_input(x[:, frames], sigmas[1]), timesteps[1], cond.cond_latent, cond.image_tokens,
            cond.motion_tokens[:, frames], cond.time_ids, cond.pose_feature)
    with torch.no_grad():
        full = tiny.unet.predict_branches(*args)
        conditional = tiny.unet.predict_branches(*args, branches=("cond",))
        outer = tiny.unet.predict_branches(*args, branches=("uncond", "cond"))
    assert conditional.shape == (1, *full.shape[1:]) and outer.shape == (2, *full.shape[1:])
    torch.testing.assert_close(conditional[0], full[2], rtol=0, atol=1e-5)
    torch.testing.assert_close(outer, full[[0, 2]], rtol=0, atol=1e-5)
    for wrong in [(), ("cond", "drop"), ("cond", "cond"), ("neg",)]:
        with pytest.raises(ValueError, match="branches must be some of"):
            tiny.unet.predict_branches(*args, branches=wrong)


def test_outside_the_guidance_interval_the_cond_branch_alone_gives_v(tiny, setup):
    _, events, recorder = run(tiny, setup, shift_offset=1, cfg_interval=(0.0, 0.5))
    assert recorder.batches == [3] * 2 * W + [1] * 2 * W  # steps 0, 1 guided (positions 0, 0.25); 2, 3 not
    assert [e["branches"] for e in events] == [CFG_BRANCHES] * 2 * W + [("cond",)] * 2 * W
    for event, output in zip(events[2 * W:], recorder.outputs[2 * W:], strict=True):
        assert torch.equal(event["v"], output)


def test_reuse_adds_each_frames_last_guidance_difference(tiny, setup):
    """With shifting windows: the difference of step 1 (guided v - cond, averaged over the windows of each
    frame) is added to the cond branch's v of every window of steps 2 and 3, whatever its frames."""
    _, events, recorder = run(tiny, setup, shift_offset=1, cfg_interval=(0.0, 0.5), cfg_reuse=True)
    assert recorder.batches == [3] * 2 * W + [1] * 2 * W
    difference, count = torch.zeros_like(setup[1]), torch.zeros(FRAMES)
    for event, output in zip(events[W:2 * W], recorder.outputs[W:2 * W], strict=True):
        difference.index_add_(1, event["frames"], event["v"] - output[2:3])
        count.index_add_(0, event["frames"], torch.ones(WINDOW))
    difference /= count[:, None, None, None]
    assert difference.abs().max() > 0
    for event, output in zip(events[2 * W:], recorder.outputs[2 * W:], strict=True):
        torch.testing.assert_close(event["v"], output + difference[:, event["frames"]])
    # an interval that starts later: nothing to reuse before it
    _, events, recorder = run(tiny, setup, shift_offset=1, cfg_interval=(0.5, 1.0), cfg_reuse=True)
    assert recorder.batches == [1] * 2 * W + [3] * 2 * W
    for event, output in zip(events[:2 * W], recorder.outputs[:2 * W], strict=True):
        assert torch.equal(event["v"], output)


def test_the_cache_forecasts_fixed_windows_and_is_removed_after(tiny, setup):
    plain, *_ = run(tiny, setup)
    cached, events, recorder = run(tiny, setup, cache=CACHE)
    assert [e["partial"] for e in events] == [False] * 2 * W + [True] * W + [False] * W
    assert recorder.mid_runs == 3 * W  # the deep branch skipped on the calls of step 2
    assert not torch.equal(cached, plain)  # step 2 used the forecast
    assert no_hooks_left(tiny.unet)
    again, *_ = run(tiny, setup)
    assert torch.equal(again, plain)


def test_the_cache_forecasts_the_cond_branch_from_the_guided_calls(tiny, setup):
    _, events, recorder = run(tiny, setup, cfg_interval=(0.0, 0.5), cfg_reuse=True, cache=CACHE)
    assert recorder.batches == [3] * 2 * W + [1] * 2 * W
    assert [e["partial"] for e in events] == [False] * 2 * W + [True] * W + [False] * W
    assert no_hooks_left(tiny.unet)


def test_with_shifting_windows_the_cache_computes_everything(tiny, setup, caplog):
    plain, *_ = run(tiny, setup, shift_offset=1)
    with caplog.at_level(logging.WARNING, logger="fye_core.hunyuan.sampler"):
        cached, events, recorder = run(tiny, setup, shift_offset=1, cache=CACHE)
    assert not any(e["partial"] for e in events) and recorder.mid_runs == W * STEPS
    assert torch.equal(cached, plain)
    warnings = [r.message for r in caplog.records if "feature cache" in r.message]
    assert len(warnings) == 1 and "windows shift every step (shift offset 1)" in warnings[0]
    assert no_hooks_left(tiny.unet)


def test_the_options_reach_the_sampler(tiny, setup):
    cond, x, *_ = setup
    options = HunyuanOptions(steps=STEPS, window=WINDOW, overlap=OVERLAP, shift_offset=0, cfg_interval=(0.0, 0.5),
                             cache=CACHE)
    recorder = Recorder(tiny.unet)
    try:
        sample(tiny, cond, cond.cond_latent, torch.zeros_like(x), options)
    finally:
        recorder.remove()
    assert recorder.batches == [3] * 2 * W + [1] * 2 * W and recorder.mid_runs == 3 * W


def test_options_are_checked():
    with pytest.raises(FYEInputError, match="cfg_interval must be two fractions"):
        HunyuanOptions(cfg_interval=(0.6, 0.2))
    with pytest.raises(FYEInputError, match="depth"):
        HunyuanOptions(cache=CachePlan(interval=2, depth=4))
    assert HunyuanOptions(cfg_interval=[0, 0.5]).cfg_interval == (0, 0.5)


def animate_args(*flags):
    args = build_parser().parse_args(["animate", "--backend", "hunyuan-portrait", "--portrait", "p.png",
                                      "--driving", "d.mp4", "--models", "m", "--out", "o.mp4", *flags])
    _check_backend_options(args)
    return args


def test_the_cli_takes_the_savings_flags_but_not_the_fye_presets():
    assert hunyuan_options(animate_args()) == HunyuanOptions()
    options = hunyuan_options(animate_args("--cfg-interval", "0", "0.5", "--cfg-reuse", "--cache-interval", "2",
                                           "--cache-order", "0", "--cache-depth", "2", "--cache-warmup", "3",
                                           "--shift-offset", "0"))
    assert options.cfg_interval == (0.0, 0.5) and options.cfg_reuse and options.shift_offset == 0
    assert options.cache == CachePlan(interval=2, order=0, depth=2, warmup=3)
    assert hunyuan_options(animate_args("--low-memory")).low_memory
    for flags in (["--preset", "fast"], ["--fp8-weights"], ["--solver", "euler"], ["--mouth", "2"],
                  ["--relative", "first"], ["--filter", "one-euro"]):
        with pytest.raises(FYEInputError, match=f"{flags[0]}: not an option of --backend hunyuan-portrait"):
            animate_args(*flags)
