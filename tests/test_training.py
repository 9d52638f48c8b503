"""The FFG loss's masks and terms (paper 3.2) on the official golden landmark tracks."""
import numpy as np
import pytest
import torch
from conftest import golden_track

from fye_core.landmarks import align_motion
from fye_core.landmarks.render import FACE_OVAL, PUPIL_CENTRES
from fye_core.sampling import OFFICIAL_SCHEDULER, Schedule
from fye_core.training import EXPRESSION_POINTS, expression_mask, face_contour, facial_mask, ffg_loss, fye_loss
from fye_core.training.loss import v_target


@pytest.fixture(scope="module")
def motion():
    return align_motion(golden_track("portrait_cartoon_s7"), golden_track("driving_lp_d0"))


def cells(points):
    """Latent cell (row, column) of the pixels of points (..., 2)."""
    return (np.round(points[..., ::-1]) // 8).astype(int)


def test_the_expression_mask_holds_pupils_eyes_brows_and_inner_lips(motion):
    masks = expression_mask(motion.points, motion.width, motion.height)
    assert masks.shape == (len(motion), 64, 64) and set(np.unique(masks)) == {0.0, 1.0}
    assert set(PUPIL_CENTRES) <= set(EXPRESSION_POINTS.tolist()) and len(EXPRESSION_POINTS) == 2 + 2 * 16 + 2 * 10 + 20
    rows, cols = cells(motion.points[:, EXPRESSION_POINTS]).transpose(2, 0, 1)
    frames = np.arange(len(motion))[:, None]
    assert (masks[frames, rows, cols] == 1).all()
    assert masks.mean() < 0.15  # dilated points, not the face
    oval = cells(motion.points[:, [a for a, _ in FACE_OVAL]])
    assert (masks[frames, oval[..., 0], oval[..., 1]] == 0).mean() > 0.5  # the contour is not expression


def test_the_facial_mask_covers_the_face_contour_and_not_the_corners(motion):
    masks = facial_mask(motion.points, motion.width, motion.height)
    contour = face_contour()
    assert sorted(contour.tolist()) == sorted({p for edge in FACE_OVAL for p in edge})
    rows, cols = cells(motion.points[:, contour]).transpose(2, 0, 1)
    frames = np.arange(len(motion))[:, None]
    assert (masks[frames, rows, cols] == 1).all()
    centre = cells(motion.points[:, EXPRESSION_POINTS].mean(axis=1))
    assert (masks[np.arange(len(motion)), centre[:, 0], centre[:, 1]] == 1).all()
    assert (masks[:, [0, 0, -1, -1], [0, -1, 0, -1]] == 0).all()
    assert 0.1 < masks.mean() < 0.6
    assert (expression_mask(motion.points, motion.width, motion.height) <= masks).mean() > 0.99  # inside the face


def test_the_ffg_term_equals_its_hand_computed_value():
    latents = torch.zeros(1, 4, 1, 2, 2)
    predicted = torch.zeros_like(latents)
    predicted[0, :, 0, 0, 0] = 1.0  # error 1 in the top-left cell of every channel
    predicted[0, :, 0, 1, 1] = 2.0  # error 2 in the bottom-right cell
    expression = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 1, 2, 2)
    facial = torch.tensor([[1.0, 1.0], [0.0, 1.0]]).view(1, 1, 1, 2, 2)
    # top-left: (1 + 1) * 1 -> 4; bottom-right: (0 + 1) * 2 -> 4; per channel 8 over 4 cells; 16 elements
    assert ffg_loss(latents, predicted, expression, facial).item() == pytest.approx(4 * 8 / 16)


def test_the_total_is_the_ldm_term_without_masks_and_the_ffg_term_sees_x0():
    generator = torch.Generator().manual_seed(0)
    latents, noise, v = (torch.randn(2, 4, 3, 8, 8, generator=generator) for _ in range(3))
    alphas = Schedule(30, OFFICIAL_SCHEDULER).alphas_cumprod.float()
    alpha = alphas[torch.tensor([999, 400])].view(2, 1, 1, 1, 1)
    noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
    empty = torch.zeros(2, 1, 3, 8, 8)
    losses = fye_loss(v, latents, noise, noisy, alpha, empty, empty)
    assert losses["ffg"].item() == 0.0 and losses["total"].item() == losses["ldm"].item()
    assert losses["ldm"].item() == pytest.approx(((v - v_target(latents, noise, alpha)) ** 2).mean().item())
    exact = fye_loss(v_target(latents, noise, alpha), latents, noise, noisy, alpha, empty + 1, empty)
    assert exact["ldm"].item() == 0.0 and exact["ffg"].item() < 1e-10  # the true v recovers the latents


def test_training_samples_come_from_frames_with_faces(tmp_path, capsys):
    from shared_data import shared_path

    from fye_core.crop import crop_face
    from fye_core.training.data import (
        FaceClipDataset,
        cached_track_path,
        centre_crop,
        clip_starts,
        load_training_videos,
    )
    from fye_core.video import read_video, write_video

    frames, fps = read_video(shared_path("data", "lp_d0_driving.mp4"))
    clip = frames[:12].copy()
    clip[5] = 0  # a frame without a face in the middle
    write_video(tmp_path / "videos" / "talking.mp4", iter(clip), fps, crf=0)
    write_video(tmp_path / "videos" / "blank.mp4", iter(np.zeros((4, 64, 64, 3), np.uint8)), fps)
    videos = load_training_videos(tmp_path / "videos", tmp_path / "cache", frames=4)
    assert [v.path.name for v in videos] == ["talking.mp4"] and "skipping" in capsys.readouterr().err
    track = videos[0].track
    assert not track.detected[5] and track.detected[:5].all() and track.detected[6:].all()
    cache = cached_track_path(videos[0].path, tmp_path / "cache")
    stamp = cache.stat().st_mtime_ns
    again = load_training_videos(tmp_path / "videos", tmp_path / "cache", frames=4)
    assert cache.stat().st_mtime_ns == stamp  # read from the cache, not detected again
    np.testing.assert_array_equal(again[0].track.landmarks, track.landmarks)
    assert len(videos[0].timestamps) == 12  # kept beside the track: samples seek to their frames
    np.testing.assert_array_equal(again[0].timestamps, videos[0].timestamps)
    assert clip_starts(track.detected, 4).tolist() == [0, 1, 6, 7, 8]
    assert clip_starts(track.detected, 2, stride=3).tolist() == [0, 1, 3, 4, 6, 7, 8]

    dataset = FaceClipDataset(videos, frames=4, size=256, length=3, seed=1)
    sample = dataset[0]
    assert sample["reference"].shape == (256, 256, 3) and sample["target"].shape == (4, 256, 256, 3)
    assert sample["landmarks"].shape == (4, 256, 256, 3) and sample["landmarks"].max() > 0
    assert sample["expression_mask"].shape == sample["facial_mask"].shape == (4, 32, 32)
    drawn = np.argwhere(sample["landmarks"].max(axis=-1) > 0)
    assert (sample["facial_mask"][drawn[:, 0], drawn[:, 1] // 8, drawn[:, 2] // 8] == 1).mean() > 0.95
    for key, value in dataset[0].items():
        np.testing.assert_array_equal(value, sample[key])  # reproducible by seed and index

    crop = centre_crop(track.width, track.height, 128)
    crops = [crop_face(frame, crop) for frame in read_video(videos[0].path)[0]]
    for item in range(4):
        first, second = FaceClipDataset(videos, frames=2, size=128, length=4, seed=2, stride=3)[item]["target"]
        start = next(i for i, frame in enumerate(crops) if np.array_equal(frame, first))
        assert np.array_equal(second, crops[start + 3]) and start in clip_starts(track.detected, 2, stride=3)
