"""The progressive long-video strategy on the tiny seeded networks: keyframes, fixed ends, streaming."""
import numpy as np
import pytest
import torch
from models_fixtures import golden_models_path, tiny_config, tiny_vae

from fye_core.animate import (
    AnimationOptions,
    DiffusersVAE,
    animate_frames,
    initial_noise,
    reference_conditioning,
    sample_progressive,
)
from fye_core.errors import FYEInputError
from fye_core.models import build_models
from fye_core.sampling import even_keyframes, expression_keyframes, keyframe_count


@pytest.fixture(scope="module")
def inputs():
    with np.load(golden_models_path("inputs_u8.npz"), allow_pickle=False) as data:
        return data["ref_u8"], data["lmk_u8"]


@pytest.fixture(scope="module")
def vae():
    return DiffusersVAE(tiny_vae())


class RecordingStore:
    """A ClipStore in memory that remembers the order clips were finished in."""

    def __init__(self):
        self.clips = {}

    def get(self, frames):
        return self.clips.get(tuple(frames))

    def put(self, frames, latents):
        self.clips[tuple(frames)] = latents.clone()


def run_progressive(models, vae, inputs, golden_tensors, num_frames, options, store=None, expression=None):
    reference, landmarks = inputs

    def render(indices):
        return landmarks[np.asarray(indices) % len(landmarks)]

    cond = reference_conditioning(models, vae, golden_tensors["clip_tokens"], reference, options.guidance)
    noise = initial_noise(num_frames, *reference.shape[:2], options.seed, "cpu", torch.float32)
    return list(sample_progressive(models, cond, reference, render, noise, options, expression, store))


def test_keyframe_choices_keep_every_gap_within_one_pass():
    frames = list(range(100))
    assert keyframe_count(100, 24) == 6 and keyframe_count(24, 24) == 2
    assert even_keyframes(frames, 5) == [0, 25, 50, 74, 99]  # numpy rounds half to even
    intensity = np.zeros(100)
    intensity[[21, 58]] = 1.0  # next to the even keyframes 20 and 59 (a keyframe moves at most (23 - 20) // 2)
    chosen = expression_keyframes(frames, 6, 24, intensity)
    assert chosen == [0, 21, 40, 58, 79, 99]
    assert max(b - a for a, b in zip(chosen, chosen[1:], strict=False)) <= 23


def test_segments_end_on_the_keyframes_exactly(tiny, vae, inputs, golden_tensors):
    options = AnimationOptions(steps=2, long_video="progressive", context_frames=6)
    store = RecordingStore()
    latents = run_progressive(tiny, vae, inputs, golden_tensors, 40, options, store)
    assert [frame for frame, _ in latents] == list(range(40))
    clips = list(store.clips.items())
    keyframes = clips[0][0]
    assert len(keyframes) == 6 and keyframes[0] == 0 and keyframes[-1] == 39  # the first pass: keyframes only
    assert any(len(frames) > 2 and frames[-1] - frames[0] >= len(frames) for frames, _ in clips[1:])  # nested keys
    produced = {frame: clips[0][1][:, :, i] for i, frame in enumerate(keyframes)}
    for frames, clip in clips[1:]:
        for end in (0, len(frames) - 1):  # both ends fixed to a keyframe made earlier
            assert torch.equal(clip[:, :, end], produced[frames[end]])
        for i, frame in enumerate(frames):
            produced.setdefault(frame, clip[:, :, i])
    for frame, latent in latents:
        assert torch.equal(latent, produced[frame])
    leaves = [frames for frames, _ in clips if frames == tuple(range(frames[0], frames[-1] + 1))]
    assert all(len(frames) <= 6 for frames, _ in clips) and len(leaves) >= 5


def test_a_stored_run_resumes_to_the_same_latents(tiny, vae, inputs, golden_tensors):
    options = AnimationOptions(steps=2, long_video="progressive", context_frames=6)
    store = RecordingStore()
    first = run_progressive(tiny, vae, inputs, golden_tensors, 20, options, store)
    partial = RecordingStore()
    partial.clips = dict(list(store.clips.items())[:3])  # as if stopped after three clips
    resumed = run_progressive(tiny, vae, inputs, golden_tensors, 20, options, partial)
    for (frame, a), (same, b) in zip(first, resumed, strict=True):
        assert frame == same and torch.equal(a, b)


def test_masked_latent_models_get_the_keyframes_as_conditioning(vae, inputs, golden_tensors):
    torch.manual_seed(3)
    models = build_models({**tiny_config(), "unet_in_channels": 9}, device="cpu").to(dtype=torch.float32)
    for network in models.networks().values():
        network.eval()
    seen = []
    models.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("masked_latents")),
                                          with_kwargs=True)
    store = RecordingStore()
    options = AnimationOptions(steps=1, long_video="progressive", context_frames=6)
    run_progressive(models, vae, inputs, golden_tensors, 12, options, store)
    (keyframes, key_latents), (segment, _) = list(store.clips.items())[:2]
    assert seen[0] is None  # the keyframe pass: nothing known, the UNet takes zero masked latents
    masked = seen[1][1:]  # the first segment, conditional half
    assert segment[0] == keyframes[0] and segment[-1] == keyframes[1]
    assert masked[0, 4, :, 0, 0].tolist() == [1.0] + [0.0] * (len(segment) - 2) + [1.0]
    assert torch.equal(masked[0, 4], masked[0, 4, :, :1, :1].expand_as(masked[0, 4]))
    torch.testing.assert_close(masked[:, :4, 0], key_latents[:, :, 0], rtol=0, atol=0)
    torch.testing.assert_close(masked[:, :4, -1], key_latents[:, :, 1], rtol=0, atol=0)
    assert not masked[:, :4, 1:-1].any()


def test_animate_frames_streams_one_frame_per_motion_frame(tiny, vae, inputs, golden_tensors):
    reference, landmarks = inputs
    expressiveness = np.linspace(0, 1, 30)
    options = AnimationOptions(steps=1, long_video="progressive", context_frames=8, keyframes="expression")
    chunks = list(animate_frames(tiny, vae, golden_tensors["clip_tokens"], reference,
                                 lambda indices: landmarks[np.asarray(indices) % 16], 30, options,
                                 expressiveness=expressiveness))
    frames = torch.cat(chunks)
    assert frames.shape == (30, *reference.shape) and all(len(chunk) <= 8 for chunk in chunks)
    with pytest.raises(FYEInputError, match="needs the driving blendshapes"):
        list(animate_frames(tiny, vae, golden_tensors["clip_tokens"], reference,
                            lambda indices: landmarks[np.asarray(indices) % 16], 30, options))
    with pytest.raises(FYEInputError, match="long_video must be one of"):
        AnimationOptions(long_video="cyclic")
