"""The HunyuanPortrait sampling loop against the official pipeline's runs d1 and d2 (golden/hunyuanportrait §9):
the tiny seeded networks loaded by our loader, the golden reference latents, appearance and motion tokens."""
import pytest
import torch
from hunyuan_models_fixtures import calls, fixtures, load_tiny_hunyuan, tolerance

from fye_core.hunyuan.models import time_ids
from fye_core.hunyuan.sampler import (
    HunyuanConditioning,
    guidance_scales,
    karras_schedule,
    noisy_start,
    sample_windows,
)

RUNS = {"d1": "a_motion_tokens_padded", "d2": "a_motion_tokens"}


@pytest.fixture(scope="module")
def tiny():
    return load_tiny_hunyuan()


@pytest.fixture(scope="module")
def golden():
    return fixtures()


def latents_atol(start: torch.Tensor) -> float:
    """tolerances.json's rule for the intermediate latents of a run: 2e-7 * max|ref| + 2e-5, ``ref`` the step-0
    input (|x| ~ 2.7e3 in d1): the first Euler steps cancel most of it and every later latent keeps its rounding."""
    return 2e-7 * start.abs().max().item() + 2e-5


def close(ours, expected, atol, name):
    torch.testing.assert_close(ours.double(), expected.double(), rtol=0, atol=atol, msg=lambda m: f"{name}: {m}")
    return (ours.double() - expected.double()).abs().max().item()


def run_official(tiny, golden, tag, callback=None, fold=True, batched=True, **changes):
    """The run ``tag`` of calls.json (with ``changes`` to its settings) through our loop: its settings, start and
    final latents and the UNet's calls (arguments, output)."""
    settings = {**calls()[tag], **changes}
    num_frames, steps = settings["num_frames"], settings["num_inference_steps"]
    motion = golden[RUNS[tag]][:, :num_frames]
    with torch.no_grad():
        pose = tiny.pose_feature(settings["height"], settings["width"])
    cond = HunyuanConditioning(image_tokens=golden["b_image_tokens"], motion_tokens=motion,
                               cond_latent=golden["vae_ref_mode"], pose_feature=pose,
                               time_ids=time_ids(settings["fps"], settings["motion_bucket_id"],
                                                 settings["noise_aug_strength"]))
    sigmas, timesteps = karras_schedule(steps, settings["i2i_noise_strength"])
    appearance = guidance_scales(settings["min_guidance_scale1"], settings["max_guidance_scale1"], len(timesteps))
    motion_scale = guidance_scales(settings["min_guidance_scale2"], settings["max_guidance_scale2"], len(timesteps))
    start = noisy_start(golden["vae_ref_latents_scaled"], golden[f"{tag}_noise"], sigmas[0])
    unet_calls = []
    hooks = [tiny.unet.register_forward_hook(lambda module, args, out: unet_calls.append((args, out)))]
    tiny.unet.set_temporal_context_folding(fold)
    try:
        with torch.no_grad():
            final = sample_windows(tiny.unet, start, cond, sigmas, timesteps, appearance, motion_scale,
                                   settings["frames_per_batch"], settings["overlap"], settings["shift_offset"],
                                   callback, batched=batched)
    finally:
        tiny.unet.set_temporal_context_folding(True)
        for hook in hooks:
            hook.remove()
    return settings, start, final, unet_calls


@pytest.fixture(scope="module")
def folded_runs(tiny, golden):
    """Each run with the folded temporal context (the default): (events, settings, start, final, UNet calls)."""
    runs = {}
    for tag in RUNS:
        events = []
        runs[tag] = (events, *run_official(tiny, golden, tag, events.append))
    return runs


@pytest.mark.parametrize("tag", list(RUNS))
def test_sampling_loop_matches_the_official_runs(golden, folded_runs, tag):
    events, settings, start, final, unet_calls = folded_runs[tag]
    windows = [e for e in events if e["event"] == "window"]
    steps = [e for e in events if e["event"] == "step"]
    assert len(unet_calls) == len(windows) == settings["unet_calls"]

    # the first UNet call is the official one, input for input
    (sample, timestep, image, motion, added_time_ids, _), out = unet_calls[0]
    for ours, name in ((sample, "sample"), (timestep, "timestep"), (image, "image_hidden"),
                       (motion, "motion_hidden"), (added_time_ids, "added_time_ids")):
        close(ours, golden[f"{tag}_call0_{name}"], tolerance(f"{tag}_call0_{name}"), f"{tag}_call0_{name}")
    close(out, golden[f"{tag}_call0_out"], tolerance(f"{tag}_call0_out"), f"{tag}_call0_out")

    # every step's latents, every window's frames, guided v and Euler result
    schedule = settings["schedule"]
    assert len(steps) == len(schedule)
    latents_in = [start] + [e["x"] for e in steps[:-1]]
    atol = latents_atol(golden[f"{tag}_step0_latents_in"])
    for step, expected in enumerate(schedule):
        name = f"{tag}_step{step}_latents_in"
        close(latents_in[step], golden[name], atol, name)
        of_step = [e for e in windows if e["step"] == step]
        assert [e["frames"].tolist() for e in of_step] == [[f % settings["num_frames"] for f in window]
                                                          for window in expected["windows"]]
        for e in of_step:
            name = f"{tag}_step{step}_win{e['window']}"
            close(e["v"], golden[f"{name}_guided_v"], tolerance(f"{tag}_per_window_guided_v"), f"{name}_guided_v")
            close(e["stepped"], golden[f"{name}_x_next"], atol, f"{name}_x_next")
    close(final, golden[f"{tag}_final_latents"], tolerance(f"{tag}_final_latents(folded)"), f"{tag}_final_latents")


@pytest.mark.parametrize("tag", list(RUNS))
def test_repeated_temporal_context_gives_the_same_run(tiny, golden, folded_runs, tag):
    folded = folded_runs[tag][3]
    *_, repeated, _ = run_official(tiny, golden, tag, fold=False)
    close(repeated, golden[f"{tag}_final_latents"], tolerance(f"{tag}_final_latents"), tag)
    assert torch.equal(folded, repeated)


def test_the_branches_one_after_the_other_give_the_same_run(tiny, golden, folded_runs):
    folded = folded_runs["d2"][3]
    *_, sequential, unet_calls = run_official(tiny, golden, "d2", batched=False)
    assert len(unet_calls) == 3 * len(folded_runs["d2"][4])  # the low-memory mode: one branch a call
    close(sequential, golden["d2_final_latents"], tolerance("d2_final_latents(folded)"), "d2")
    torch.testing.assert_close(sequential, folded, rtol=0, atol=latents_atol(folded_runs["d2"][2]))


def test_swapped_guidance_scales_miss_the_fixture(tiny, golden):
    """The fixture tells the appearance scale from the motion scale (d1 ramps them over different ranges)."""
    settings = calls()["d1"]
    *_, final, _ = run_official(tiny, golden, "d1", min_guidance_scale1=settings["min_guidance_scale2"],
                                max_guidance_scale1=settings["max_guidance_scale2"],
                                min_guidance_scale2=settings["min_guidance_scale1"],
                                max_guidance_scale2=settings["max_guidance_scale1"])
    assert (final - golden["d1_final_latents"]).abs().max() > 0.1


def test_a_callback_that_raises_stops_the_loop(tiny, golden):
    class Cancelled(Exception):
        pass

    seen = []

    def cancel_after_two_windows(event):
        seen.append(event["event"])
        if len(seen) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        run_official(tiny, golden, "d1", cancel_after_two_windows)
    assert seen == ["window", "window"]
