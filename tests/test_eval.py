"""``fye eval``: metrics against independent references, motion intensities by hand, and rankings of real
videos (a driving video against itself, a frame-shuffled copy and, for portraits, cheap stand-in animations)."""
import functools
import json
import sys

import cv2
import numpy as np
import pytest
import scipy.linalg
import torch
from models_fixtures import write_arcface_stand_in
from shared_data import VIDEOS, shared_path
from skimage.transform import SimilarityTransform
from test_cli import run_fye

from fye_core.cli import main as cli_main
from fye_core.errors import FYEInputError
from fye_core.eval import (
    EvalOptions,
    EvalPair,
    MetricUnavailable,
    expression_intensity,
    find_pairs,
    head_intensity,
    landmark_accuracy,
    motion_intensities,
    psnr,
    score_pairs,
    ssim_frame,
    video_metrics,
)
from fye_core.eval.fvd import InceptionI3d, frechet_distance, i3d_features, load_i3d
from fye_core.eval.identity import (
    ARCFACE_TEMPLATE,
    aligned_face,
    identity_similarity,
    load_arcface,
)
from fye_core.eval.landmarks import track_pixels
from fye_core.eval.perceptual import load_lpips, lpips_distances
from fye_core.image import load_image, prepare_reference
from fye_core.landmarks import align_motion, detect_face_track, detect_reference, five_points, similarity_transform
from fye_core.video import read_video, write_video

CLIP = 20  # frames per test clip, taken evenly over the shared video so that it holds real motion
NEED_USER_NETWORKS = ("lpips", "fvd", "identity_similarity")


@functools.cache
def clip_frames(video: str) -> tuple[np.ndarray, float]:
    frames, fps = read_video(shared_path("data", VIDEOS[video]))
    return frames[:: len(frames) // CLIP][:CLIP], fps


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Per shared video: a 20-frame clip of it and a frame-shuffled copy (mp4s at crf 0)."""
    folder = tmp_path_factory.mktemp("eval-clips")
    made = {}
    for video in VIDEOS:
        frames, fps = clip_frames(video)
        driving, shuffled = folder / f"{video}.mp4", folder / f"{video}_shuffled.mp4"
        write_video(driving, frames, fps, crf=0)
        write_video(shuffled, frames[np.random.default_rng(0).permutation(len(frames))], fps, crf=0)
        made[video] = (driving, shuffled)
    return made


# --- image metrics against an independent reference ----------------------------------------------------------

def reference_ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Wang et al. 2004 written out: an 11-tap Gaussian window (sigma 1.5) applied separably with OpenCV, edges
    mirrored (dcba|abcd), population covariances, K1 0.01, K2 0.03, L 255; the mean over the image less the
    window's 5-pixel radius at each edge, then over channels."""
    x, y = pred.astype(np.float64), gt.astype(np.float64)
    taps = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    taps /= taps.sum()

    def mean(image):
        return cv2.sepFilter2D(image, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT)

    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim_map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map[5:-5, 5:-5].mean(axis=(0, 1)).mean())


def reference_psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    return 10 * np.log10(255.0 ** 2 / np.mean((pred.astype(np.float64) - gt.astype(np.float64)) ** 2))


def test_ssim_and_psnr_match_an_independent_reference():
    frames, _ = clip_frames("fye_temple")
    noisy = np.clip(frames[3].astype(int) + np.random.default_rng(1).integers(-20, 21, frames[3].shape), 0, 255)
    small = (frames[2][:37, 101:154], frames[9][:37, :53])  # odd sizes: the border the window leaves out
    pairs = [(frames[0], frames[10]), (frames[5], noisy.astype(np.uint8)), small]
    for pred, gt in pairs:
        assert abs(ssim_frame(pred, gt) - reference_ssim(pred, gt)) < 1e-4
        assert abs(psnr(pred, gt) - reference_psnr(pred, gt)) < 1e-4
    assert 0.3 < ssim_frame(*pairs[0]) < 0.99  # different frames of one video: neither trivially 0 nor 1
    offset = np.minimum(frames[0], 250)
    assert psnr(offset + 5, offset) == pytest.approx(20 * np.log10(255 / 5))  # a uniform error of 5 levels
    pred, gt = frames[:6], frames[[0, 7, 2, 9, 4, 11]]  # half the frames match: a per-frame PSNR mean is infinite
    scores = video_metrics(pred, gt)
    assert scores["psnr"] == pytest.approx(reference_psnr(pred, gt), abs=1e-4)
    assert scores["ssim"] == pytest.approx(np.mean([reference_ssim(p, g) for p, g in zip(pred, gt, strict=True)]),
                                           abs=1e-4)


def test_ssim_and_psnr_without_scikit_image_say_how_to_install_it(monkeypatch, clips):
    frames, _ = clip_frames("lp_d0")
    monkeypatch.setitem(sys.modules, "skimage.metrics", None)  # import skimage.metrics: ImportError
    for metric, pred in ((ssim_frame, frames[0]), (psnr, frames[0]), (video_metrics, frames[:2])):
        with pytest.raises(MetricUnavailable, match=r"follow-your-emoji\[eval\].*pip install scikit-image"):
            metric(pred, pred)
    driving, _ = clips["lp_d0"]
    (score,) = score_pairs([EvalPair(pred=driving, driving=driving, gt=driving)], EvalOptions(max_frames=2))
    assert score.metrics["l1"] == 0.0 and score.metrics["ssim"] is None and score.metrics["psnr"] is None
    assert "pip install scikit-image" in score.unavailable["ssim"]


def test_identical_videos_give_l1_0_ssim_1_psnr_inf_and_mismatches_are_errors():
    frames, _ = clip_frames("lp_d0")
    assert video_metrics(frames[:4], frames[:4]) == {"l1": 0.0, "ssim": 1.0, "psnr": float("inf")}
    darker = (frames[:4] // 2).astype(np.uint8)
    assert video_metrics(darker, frames[:4])["l1"] == pytest.approx(np.mean(frames[:4] - darker) / 255)
    with pytest.raises(FYEInputError, match="has 3 frames but .* has 4"):
        video_metrics(frames[:3], frames[:4])
    with pytest.raises(FYEInputError, match="256x512 frames"):
        video_metrics(frames[:4, :, :256], frames[:4])


# --- landmark metrics by hand -----------------------------------------------------------------------------------

# a 30 x 40 face (box diagonal s = 50) with its centre, point 0, in the middle
FACE = np.array([[15.0, 20.0], [0.0, 0.0], [30.0, 0.0], [30.0, 40.0], [0.0, 40.0]])


def test_pure_translation_has_no_expression_and_the_expected_head_intensity():
    shifts = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 0.0], [10.0, 0.0]])  # the centre moves 5 px either side
    points = FACE[None] + shifts[:, None]
    assert expression_intensity(points, centre=0) == pytest.approx(0.0, abs=1e-12)
    assert head_intensity(points, centre=0) == pytest.approx(5.0 / 50.0)
    # I_h (eq. 3) is an RMS: diagonal moves of (3, 4) px and none alternate: RMS of 2.5 px over s = 50
    diagonal = FACE[None] + np.array([[0.0, 0.0], [3.0, 4.0]] * 2)[:, None]
    assert head_intensity(diagonal, centre=0) == pytest.approx(2.5 / 50.0)


def test_pure_expression_with_a_fixed_centre_has_no_head_intensity():
    points = np.repeat(FACE[None], 4, axis=0)
    points[[1, 3], 3, 1] -= 4.0  # one of the five points moves 4 px in every other frame: 2 px from its mean
    assert head_intensity(points, centre=0) == 0.0
    # every frame: sqrt(1/5 * 2^2) from the mean shape, over s = 50 (eq. 3)
    assert expression_intensity(points, centre=0) == pytest.approx(np.sqrt(4.0 / 5.0) / 50.0)
    # both are in face sizes: the same motion on a face twice as large gives the same intensities
    assert expression_intensity(points * 2, centre=0) == pytest.approx(np.sqrt(4.0 / 5.0) / 50.0)


def test_intensities_use_only_frames_with_a_face_and_the_nose_tip_as_centre():
    points = np.zeros((3, 478, 2))
    points[:] = np.random.default_rng(2).uniform(100, 300, (478, 2))
    points[1] += 40.0  # a filled-in frame: held values elsewhere, but here made different to show it is left out
    detected = np.array([True, False, True])
    assert motion_intensities(points, detected) == (0.0, 0.0)
    assert motion_intensities(points, np.ones(3, bool))[1] > 0.05


def test_landmark_accuracy_counts_frames_without_a_face_as_misses():
    target = np.zeros((3, 4, 2))
    found = target.copy()
    found[0, :, 0] = [1.0, 2.0, 6.0, 3.0]  # 3 of 4 points within 5 px
    found[2, :, 1] = 4.0
    distance, within = landmark_accuracy(found, np.array([True, False, True]), target, threshold_px=5.0)
    assert distance == pytest.approx((1 + 2 + 6 + 3 + 4 * 4) / 8)
    assert within == pytest.approx((3 + 0 + 4) / 12)


# --- real videos: a driving video against itself and a shuffled copy -------------------------------------------

@pytest.mark.parametrize("video", list(VIDEOS))
def test_self_beats_a_shuffled_copy_on_every_metric(clips, video):
    driving, shuffled = clips[video]
    self_score, shuffled_score = score_pairs([EvalPair(driving, driving, gt=driving),
                                              EvalPair(shuffled, driving, gt=driving)], EvalOptions())
    same, other = self_score.metrics, shuffled_score.metrics
    assert (same["l1"], same["ssim"], same["psnr"]) == (0.0, 1.0, float("inf"))
    assert same["landmark_distance_px"] < 0.5 and same["landmark_within_threshold"] == 1.0
    assert other["l1"] > 0.005 and other["ssim"] < 0.95 and other["psnr"] < 40.0
    assert other["landmark_distance_px"] > same["landmark_distance_px"] + 1.0
    assert other["landmark_within_threshold"] < 0.9
    # the intensities describe the motion's amount, which a shuffle keeps (eq. 3 averages over frames; only s,
    # taken from the first frame, changes)
    for kind in ("expression", "head"):
        assert same[f"{kind}_intensity_pred"] == same[f"{kind}_intensity_driving"] > 0.003
        assert other[f"{kind}_intensity_pred"] == pytest.approx(same[f"{kind}_intensity_pred"], rel=0.05)
    for score in (self_score, shuffled_score):
        assert score.pred_frames_without_face == 0
        assert all(score.metrics[name] is None for name in NEED_USER_NETWORKS)
        assert "--lpips-weights" in score.unavailable["lpips"] and "--i3d-weights" in score.unavailable["fvd"]
        assert "--arcface-onnx" in score.unavailable["identity_similarity"]


def _warped_and_still(portrait: str, driving: np.ndarray, detector) -> tuple[np.ndarray, np.ndarray]:
    """Stand-ins for an animation of the prepared portrait: warped rigidly onto the aligned driving landmarks of
    each frame (follows the head, not the expression), and not moving at all."""
    reference = prepare_reference(load_image(shared_path("data", portrait)))
    reference_track = detect_reference(reference, detector=detector)
    motion = align_motion(reference_track, detect_face_track(driving, detector=detector))
    points = track_pixels(reference_track)[0]
    warped = np.stack([cv2.warpAffine(reference, similarity_transform(points, target), reference.shape[1::-1],
                                      flags=cv2.INTER_LINEAR) for target in motion.points])
    return warped, np.repeat(reference[None], len(driving), axis=0)


@pytest.mark.parametrize(("portrait", "video"), [("portrait_painting_s9.jpg", "fye_temple"),
                                                 ("portrait_cartoon_s7.jpg", "lp_d0"),
                                                 ("portrait_sculpture_s6.jpg", "fye_temple")])
def test_cross_reenactment_ranks_following_the_motion_over_a_shuffle_and_a_still(clips, tmp_path, portrait, video,
                                                                                  detector):
    driving = clips[video][0]
    frames, fps = read_video(driving)
    warped, still = _warped_and_still(portrait, frames, detector)
    paths = {name: tmp_path / f"{name}.mp4" for name in ("warped", "shuffled", "still")}
    write_video(paths["warped"], warped, fps, crf=0)
    write_video(paths["shuffled"], warped[np.random.default_rng(0).permutation(len(warped))], fps, crf=0)
    write_video(paths["still"], still, fps, crf=0)
    reference = shared_path("data", portrait)
    scores = score_pairs([EvalPair(path, driving, reference) for path in paths.values()], EvalOptions())
    follows, shuffled, still_score = (score.metrics for score in scores)
    assert follows["landmark_distance_px"] < shuffled["landmark_distance_px"] < still_score["landmark_distance_px"]
    assert follows["landmark_within_threshold"] > shuffled["landmark_within_threshold"] \
        > still_score["landmark_within_threshold"]
    assert still_score["expression_intensity_pred"] == still_score["head_intensity_pred"] == 0.0
    assert follows["head_intensity_pred"] > 0.5 * follows["head_intensity_driving"]
    assert all(score.metrics["l1"] is None and "--gt" in score.unavailable["l1"] for score in scores)


# --- the command line -------------------------------------------------------------------------------------------

def test_cli_scores_one_pair_writes_json_and_prints_a_table(clips, tmp_path):
    driving, shuffled = clips["fye_temple"]
    out = tmp_path / "score.json"
    done = run_fye("eval", "--pred", shuffled, "--driving", driving, "--gt", driving, "--out", out)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["frames"] == CLIP and report["reference"] is None and report["gt"] == str(driving)
    assert report["metrics"]["psnr"] < 40 and report["metrics"]["landmark_distance_px"] > 1.0
    assert set(report["unavailable"]) == set(NEED_USER_NETWORKS)
    lines = done.stdout.splitlines()
    assert any(line.split()[:1] == ["SSIM"] and float(line.split()[1]) < 0.95 for line in lines)
    assert any(line.split()[:1] == ["LPIPS"] and "unavailable (no LPIPS weights" in line for line in lines)


def test_cli_scores_a_benchmark_folder_one_row_per_pair_and_the_means(clips, tmp_path):
    driving, shuffled = clips["lp_d0"]
    pairs = [{"name": "itself", "pred": str(driving), "driving": str(driving), "gt": str(driving)},
             {"name": "shuffled", "pred": str(shuffled), "driving": str(driving), "gt": str(driving),
              "reference": str(shared_path("data", "portrait_painting_s9.jpg"))}]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    done = run_fye("eval", "--bench", tmp_path, "--max-frames", 10)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert [pair["name"] for pair in report["pairs"]] == ["itself", "shuffled"]
    assert report["pairs"][0]["frames"] == 10 and report["pairs"][0]["metrics"]["psnr"] == "inf"
    l1 = [pair["metrics"]["l1"] for pair in report["pairs"]]
    assert report["mean"]["l1"] == pytest.approx(np.mean(l1)) and l1[0] == 0.0 < l1[1]
    assert report["pairs_with_value"]["l1"] == 2 and "lpips" in report["unavailable"]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line}
    assert {"pair", "itself", "shuffled", "mean"} <= set(rows) and rows["itself"][1] == "0.0000"
    assert any(line.startswith("LPIPS: unavailable (") for line in done.stdout.splitlines())


def test_cli_frame_count_mismatch_is_one_line_and_drop_first_frame_fixes_it(clips, tmp_path, capsys):
    driving, _ = clips["lp_d0"]
    frames, fps = read_video(driving)
    pred = tmp_path / "official.mp4"
    write_video(pred, frames[1:], fps, crf=0)  # as the official code makes it: N - 1 frames
    out = tmp_path / "score.json"
    assert cli_main(["eval", "--pred", str(pred), "--driving", str(driving), "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"fye eval: error: the predicted video {pred} has {CLIP - 1} frames") and not out.exists()
    assert "--drop-first-frame" in error
    assert cli_main(["eval", "--pred", str(pred), "--driving", str(driving), "--drop-first-frame", "--out",
                     str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == CLIP - 1 and report["metrics"]["landmark_distance_px"] < 0.5


def test_benchmark_folder_layouts(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for file in ("pred.mp4", "driving.mp4", "reference.jpg"):
            (tmp_path / name / file).touch()
    (tmp_path / "b" / "gt.mp4").touch()
    pairs = find_pairs(tmp_path)
    assert [(p.name, p.reference.name, p.gt) for p in pairs] == [("a", "reference.jpg", None),
                                                                  ("b", "reference.jpg", tmp_path / "b" / "gt.mp4")]
    (tmp_path / "pairs.json").write_text(json.dumps([{"pred": "a/pred.mp4", "driving": "b/driving.mp4"}]))
    assert find_pairs(tmp_path) == [EvalPair(tmp_path / "a" / "pred.mp4", tmp_path / "b" / "driving.mp4",
                                             name="pred")]
    (tmp_path / "pairs.json").write_text(json.dumps([{"driving": "b/driving.mp4"}]))
    with pytest.raises(FYEInputError, match="pred and driving required"):
        find_pairs(tmp_path)


# --- networks the user supplies ---------------------------------------------------------------------------------

def _lpips_files(folder):
    """LPIPS weights as users have them: linear layers as the lpips package stores them, and torchvision's AlexNet."""
    import torchvision

    torch.manual_seed(0)
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    alexnet = torchvision.models.alexnet(weights=None).eval()
    torch.save(lin, folder / "alex.pth")
    torch.save(alexnet.state_dict(), folder / "alexnet-owt-7be5be79.pth")
    return lin, alexnet


def test_lpips_from_user_files_matches_a_direct_computation_on_torchvision_alexnet(tmp_path, monkeypatch):
    lin, alexnet = _lpips_files(tmp_path)
    frames, _ = clip_frames("lp_d0")
    pred, gt = frames[:3], frames[[9, 1, 17]]
    model = load_lpips(tmp_path / "alex.pth", tmp_path / "alexnet-owt-7be5be79.pth")
    got = lpips_distances(model, pred, gt)

    def taps(x):  # LPIPS v0.1 by its definition, on torchvision's own module
        x = (x - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(
            1, 3, 1, 1)
        out = []
        for index, layer in enumerate(alexnet.features[:12]):
            x = layer(x)
            if index in (1, 4, 7, 9, 11):
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def as_input(images):
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1

    with torch.no_grad():
        expected = sum((w * (a - b) ** 2).sum(1).mean((1, 2)) for w, a, b in
                       zip(lin.values(), taps(as_input(pred)), taps(as_input(gt)), strict=True)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert got[1] == pytest.approx(0.0, abs=1e-6) and got[0] > 1e-3  # frame 1 against itself, frame 0 against 9

    # the AlexNet file is found in torch's hub cache, as torchvision leaves it there
    hub = tmp_path / "torch-home"
    (hub / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "alexnet-owt-7be5be79.pth").rename(hub / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(hub))
    np.testing.assert_allclose(lpips_distances(load_lpips(tmp_path / "alex.pth"), pred, gt), got, rtol=1e-6)
    with pytest.raises(MetricUnavailable, match="--lpips-weights"):
        load_lpips()
    with pytest.raises(FYEInputError, match=r"not found at .*missing.pth \(from --lpips-weights\)"):
        load_lpips(tmp_path / "missing.pth")


def test_frechet_distance_matches_the_usual_scipy_formula():
    rng = np.random.default_rng(3)
    real = rng.normal(0, 1, (40, 6))
    fake = rng.normal(0.3, 1.5, (30, 6)) @ rng.normal(0, 1, (6, 6))
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    expected = (np.sum((real.mean(0) - fake.mean(0)) ** 2) + np.trace(cov_r) + np.trace(cov_f)
                - 2 * np.trace(scipy.linalg.sqrtm(cov_r @ cov_f).real))
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-9)


def test_i3d_loads_pytorch_i3d_weights_and_gives_kinetics_logits(tmp_path):
    torch.manual_seed(0)
    state = {key: value for key, value in InceptionI3d().state_dict().items()
             if not key.endswith("num_batches_tracked")}  # rgb_imagenet.pt predates that buffer
    # shapes of pytorch-i3d's InceptionI3d (pytorch_i3d.py), the layout rgb_imagenet.pt has
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Mixed_4b.b1b.conv3d.weight"].shape == (208, 96, 3, 3, 3)
    assert state["Mixed_5c.b3b.conv3d.weight"].shape == (128, 832, 1, 1, 1)
    assert state["logits.conv3d.bias"].shape == (400,) and "logits.bn.weight" not in state
    assert sum(v.numel() for k, v in state.items() if "running" not in k) == 12_697_264
    torch.save(state, tmp_path / "rgb_imagenet.pt")
    model = load_i3d(tmp_path / "rgb_imagenet.pt")
    frames, _ = clip_frames("lp_d0")
    features = i3d_features(model, frames[:16])
    assert features.shape == (1, 400) and np.isfinite(features).all()
    with pytest.raises(MetricUnavailable, match="--i3d-weights"):
        load_i3d()


def test_arcface_alignment_and_identity_similarity(tmp_path, monkeypatch, detector):
    rng = np.random.default_rng(4)
    source = rng.uniform(0, 500, (5, 2))
    for target in (source * 0.3 + [10, 20], rng.uniform(0, 112, (5, 2))):
        expected = SimilarityTransform.from_estimate(source, target).params[:2]
        np.testing.assert_allclose(similarity_transform(source, target), expected, atol=1e-9)

    # MediaPipe's five points, in our order, fit ArcFace's template (a left/right swap could not be fitted)
    portrait = prepare_reference(load_image(shared_path("data", "portrait_painting_s9.jpg")))
    points = track_pixels(detect_reference(portrait, detector=detector))[0]
    matrix = similarity_transform(five_points(points), ARCFACE_TEMPLATE)
    fitted = five_points(points) @ matrix[:, :2].T + matrix[:, 2]
    assert np.linalg.norm(fitted - ARCFACE_TEMPLATE, axis=1).mean() < 5.0  # about 20 px with the eyes swapped
    face = aligned_face(portrait, points)
    assert face.shape == (112, 112, 3) and face[40:100, 30:80].mean() > 20  # the face, not the black border

    def pixels(faces):  # a stand-in embedding: the centred pixels
        flat = faces.reshape(len(faces), -1).astype(np.float64)
        return flat - flat.mean(axis=1, keepdims=True)

    frames, _ = clip_frames("lp_d0")
    other = aligned_face(frames[0], track_pixels(detect_reference(frames[0], detector=detector))[0])
    assert identity_similarity(pixels, face, np.stack([face, face])) == pytest.approx(1.0)
    assert identity_similarity(pixels, face, other[None]) < 0.9

    (tmp_path / "arcface.onnx").write_bytes(b"onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as where it is not installed
    with pytest.raises(MetricUnavailable, match="onnxruntime is not installed"):
        load_arcface(tmp_path / "arcface.onnx")
    with pytest.raises(MetricUnavailable, match="--arcface-onnx"):
        load_arcface()


def test_an_arcface_onnx_model_runs_in_onnxruntime(tmp_path):
    """The insightface input convention through a real ONNX session, on a tiny seeded stand-in network."""
    network = write_arcface_stand_in(tmp_path / "arcface.onnx", features=16, input_name="input.1")
    embed = load_arcface(tmp_path / "arcface.onnx")
    faces = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = network((torch.from_numpy(faces).float().permute(0, 3, 1, 2) - 127.5) / 127.5).numpy()
    np.testing.assert_allclose(embed(faces), expected, rtol=1e-4, atol=1e-5)
    similarity = identity_similarity(embed, faces[0], faces[1:])
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert similarity == pytest.approx(float(np.mean(unit[1:] @ unit[0])), abs=1e-5)
