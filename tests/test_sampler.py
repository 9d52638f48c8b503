"""The sampler against the official loops (tiny seeded models), its speed-ups against the plain computation."""
import json

import numpy as np
import pytest
import torch
from models_fixtures import golden_models_path, landmark_input, tiny_vae, tolerance

from fye_core.animate import AnimationOptions, DiffusersVAE, initial_noise, prepare_conditioning, sample
from fye_core.errors import FYEInputError
from fye_core.sampling import (
    OFFICIAL_SCHEDULER,
    Conditioning,
    Schedule,
    gaussian_tile_offsets,
    gaussian_tile_weights,
    guided_v,
    official_windows,
    overlapping_windows,
    sample_gaussian_tiles,
    sample_windows,
)
from fye_core.sampling.schedule import ddim_step

OFFICIAL_30 = [999, 966, 932, 899, 866, 832, 799, 766, 732, 699, 666, 632, 599, 566, 532, 499, 466, 432, 399, 366,
               332, 299, 266, 232, 199, 166, 132, 99, 66, 32]


@pytest.fixture(scope="module")
def vae():
    return DiffusersVAE(tiny_vae())


@pytest.fixture(scope="module")
def conditioning(tiny, golden_tensors):
    tokens = golden_tensors["clip_tokens"]
    with torch.no_grad():
        reference_context, context = tiny.encode_context(torch.cat([torch.zeros_like(tokens), tokens]))
        features = tiny.referencenet.reference_features(golden_tensors["ref_latents"], reference_context[1:], 0)
        landmarks = tiny.guider(landmark_input())
    return Conditioning(context=context, reference=features, landmarks=landmarks)


def test_schedule_and_windows_are_the_official_ones():
    official = json.loads(golden_models_path("scheduler_config.json").read_text())
    assert {k: official[k] for k in OFFICIAL_SCHEDULER} == OFFICIAL_SCHEDULER
    assert Schedule(30).timesteps == OFFICIAL_30 and Schedule(3).timesteps == [999, 666, 332]
    assert Schedule(3).alpha(999) == 0.0  # zero terminal SNR
    calls = json.loads(golden_models_path("calls.json").read_text())["calls"]
    assert official_windows(12, 8) == calls["d_call"]["context_windows_official"]
    assert official_windows(25, 24) == [list(range(24)), [24, *range(23)]]
    assert official_windows(60, 24)[-1] == [*range(48, 60), *range(12)]
    assert gaussian_tile_offsets(16, 8, 3) == calls["e_forward_long"]["tile_offsets_official"]
    assert overlapping_windows(40, 24, 4) == [list(range(24)), list(range(16, 40))]


def test_official_context_window_loop_matches(tiny, golden_tensors, conditioning):
    cond = Conditioning(conditioning.context, conditioning.reference, conditioning.landmarks[:, :, :12])
    steps = []
    with torch.no_grad():
        final = sample_windows(tiny.unet, golden_tensors["d_init_latents"], cond, Schedule(3), official_windows(12, 8),
                               callback=lambda e: steps.append(e["x"]) if e["event"] == "step" else None)
    for got, expected in zip(steps, golden_tensors["d_latents_per_step"], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=tolerance("d_latents_per_step"))
    torch.testing.assert_close(final, golden_tensors["d_final_latents"], rtol=0, atol=tolerance("d_final_latents"))


def test_gaussian_tiling_matches_forward_long(tiny, golden_tensors, conditioning):
    torch.testing.assert_close(gaussian_tile_weights(8), golden_tensors["e_tile_weights"], rtol=0, atol=1e-6)
    x, schedule = golden_tensors["e_init_latents"], Schedule(3)
    with torch.no_grad():
        for tile, offset in enumerate((0, 5, 8)):
            frames = list(range(offset, offset + 8))
            v = guided_v(tiny.unet, x[:, :, frames], 999, conditioning, frames, 3.5)
            torch.testing.assert_close(v, golden_tensors["e_guided_v"][tile], rtol=0, atol=tolerance("e_guided_v"))
            stepped = ddim_step(x[:, :, frames], v, 999, schedule)
            torch.testing.assert_close(stepped, golden_tensors["e_tile_step_out"][tile], rtol=0,
                                       atol=tolerance("e_latents_per_step"))
        final = sample_gaussian_tiles(tiny.unet, x, conditioning, schedule, 8, 3)
    torch.testing.assert_close(final, golden_tensors["e_final_latents"], rtol=0, atol=tolerance("e_final_latents"))


def test_vae_round_matches(vae, golden_tensors):
    with np.load(golden_models_path("inputs_u8.npz"), allow_pickle=False) as data:
        reference = data["ref_u8"]
    latents = vae.encode(torch.from_numpy(reference)[None].float().div(255))
    torch.testing.assert_close(latents, golden_tensors["ref_latents"], rtol=0, atol=tolerance("ref_latents"))
    frames = golden_tensors["d_final_latents"][:, :, [0, 7]]
    decoded = vae.decode(frames[0].transpose(0, 1))
    expected = (golden_tensors["d_vae_decode_raw_f0_f7"] / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(decoded, expected, rtol=0, atol=tolerance("d_vae_decode_raw_f0_f7"))


def test_speedups_keep_the_plain_results(tiny, golden_tensors, conditioning, vae):
    """Each speed-up against the plain computation, on the sampler's output (within 1e-5 in fp32)."""
    x, windows = golden_tensors["d_init_latents"], official_windows(12, 8)

    def run(cond):
        with torch.no_grad():
            return sample_windows(tiny.unet, x, cond, Schedule(3), windows)

    cond = Conditioning(conditioning.context, conditioning.reference, conditioning.landmarks[:, :, :12])
    fast = run(cond)
    tiny.unet.set_conditioning_cache(False)  # projections of the reference and context every call
    try:
        torch.testing.assert_close(run(cond), fast, rtol=0, atol=1e-5)
    finally:
        tiny.unet.set_conditioning_cache(True)
    tokens = golden_tensors["clip_tokens"]
    with torch.no_grad():  # the official ReferenceNet pass on [uncond, cond], of which only cond is used
        both, _ = tiny.encode_context(torch.cat([torch.zeros_like(tokens), tokens]))
        pair = tiny.referencenet.reference_features(golden_tensors["ref_latents"].repeat(2, 1, 1, 1), both, 0)
    official_reference = Conditioning(cond.context, [f[1:] for f in pair], cond.landmarks)
    torch.testing.assert_close(run(official_reference), fast, rtol=0, atol=1e-5)
    one_by_one = torch.cat([vae.decode(frame[None]) for frame in fast[0].transpose(0, 1)])
    chunked = vae.decode(fast[0].transpose(0, 1))
    torch.testing.assert_close(chunked, one_by_one, rtol=0, atol=1e-5)


def end_to_end(tiny, vae, golden_tensors, options, frames=10, callback=None):
    with np.load(golden_models_path("inputs_u8.npz"), allow_pickle=False) as data:
        reference, motion = data["ref_u8"], data["lmk_u8"][:frames]
    cond = prepare_conditioning(tiny, vae, golden_tensors["clip_tokens"], reference, motion, options.guidance)
    noise = initial_noise(frames, *reference.shape[:2], options.seed, "cpu", torch.float32)
    return sample(tiny, cond, noise, options, callback)


@pytest.mark.parametrize("mode", ["official", "overlap", "tiles"])
def test_every_long_video_mode_runs_seeded_and_reproducible(tiny, vae, golden_tensors, mode):
    options = AnimationOptions(steps=2, long_video=mode, context_frames=6, context_overlap=2, fuse="pyramid")
    first = end_to_end(tiny, vae, golden_tensors, options)
    assert first.shape == (1, 4, 10, 16, 24) and torch.isfinite(first).all()
    torch.testing.assert_close(end_to_end(tiny, vae, golden_tensors, options), first, rtol=0, atol=0)
    other_seed = end_to_end(tiny, vae, golden_tensors, AnimationOptions(**{**options.__dict__, "seed": 1}))
    assert (other_seed - first).abs().max() > 1e-2


def test_callbacks_report_and_cancel(tiny, vae, golden_tensors):
    events = []

    class Cancelled(Exception):
        pass

    def callback(event):
        events.append((event["event"], event["step"]))
        if event["event"] == "step" and event["step"] == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        end_to_end(tiny, vae, golden_tensors, AnimationOptions(steps=4, context_frames=4), callback=callback)
    assert events == [("window", 0)] * 3 + [("step", 0)] + [("window", 1)] * 3 + [("step", 1)]


def test_bad_settings_are_clear_errors(tiny, vae, golden_tensors):
    with pytest.raises(FYEInputError, match="window of 40 frames is longer than the motion modules allow .32."):
        end_to_end(tiny, vae, golden_tensors, AnimationOptions(steps=1, context_frames=40), frames=40)
    with pytest.raises(FYEInputError, match="steps must be between 1 and 1000"):
        end_to_end(tiny, vae, golden_tensors, AnimationOptions(steps=1001), frames=2)
    with np.load(golden_models_path("inputs_u8.npz"), allow_pickle=False) as data:
        reference, motion = data["ref_u8"], data["lmk_u8"][:4]
    with pytest.raises(FYEInputError, match="motion frames are 192x128 but the reference is 96x64"):
        prepare_conditioning(tiny, vae, golden_tensors["clip_tokens"], reference[::2, ::2], motion, 3.5)
