"""``fye animate --backend hunyuan-portrait`` as a user runs it: the installed console script, the tiny networks
as .pth files in the released folder layout."""
import numpy as np
import pytest
from conftest import golden_track
from hunyuan_models_fixtures import calls, write_tiny_hunyuan_dir
from shared_data import shared_path
from test_cli import run_fye

from fye_core.image import load_image
from fye_core.landmarks import save_template
from fye_core.video import read_video, write_video

PORTRAIT = "portrait_painting_s9.jpg"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The tiny models folder and the first 12 frames of the driving video (25 fps, with its sound if any)."""
    folder = tmp_path_factory.mktemp("hunyuan-cli")
    frames, fps = read_video(shared_path("data", "lp_d0_driving.mp4"))
    write_video(folder / "driving12.mp4", iter(frames[:12]), fps)
    return write_tiny_hunyuan_dir(folder / "models"), folder / "driving12.mp4"


def test_animate_pastes_one_frame_per_driving_frame_into_the_portrait(tmp_path, inputs):
    models, driving = inputs
    out = tmp_path / "animated.mp4"
    # a 64 px crop, 2 steps and 8-frame windows over the 12 frames and 2 fade pads at each end keep it fast
    done = run_fye("animate", "--backend", "hunyuan-portrait", "--portrait", shared_path("data", PORTRAIT),
                   "--driving", driving, "--models", models, "--out", out, "--paste-back", "--size", "64",
                   "--steps", "2", "--context-frames", "8", "--context-overlap", "2", "--pad-frames", "2")
    assert done.returncode == 0, done.stderr
    assert "driving: face found in all 12 frames" in done.stderr
    assert "no arcface.onnx beside the HunyuanPortrait weights" in done.stderr
    frames, fps = read_video(out)
    portrait = load_image(shared_path("data", PORTRAIT))
    assert frames.shape == (12, *portrait.shape) and fps == 25.0
    x1, y1, x2, y2 = calls()["preprocess"]["crop_bbox_xyxy"]  # the official crop box of this portrait
    error = np.abs(frames.astype(int) - portrait).mean(axis=-1)
    outside = np.ones(portrait.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert error[:, outside].mean() < 2  # the static portrait (H.264 noise)
    assert error[:, y1 + 100:y2 - 100, x1 + 100:x2 - 100].mean() > 10  # the tiny networks' output


@pytest.mark.parametrize("case", ["fye_option", "hunyuan_option", "template", "no_models", "size"])
def test_wrong_options_fail_at_once_with_one_line(tmp_path, inputs, case):
    models, driving = inputs
    args = ["--backend", "hunyuan-portrait", "--models", models, "--driving", driving]
    if case == "fye_option":
        args += ["--long-video", "tiles", "--cfg", "2"]
        expected = "--cfg, --long-video: not an option of --backend hunyuan-portrait"
    elif case == "hunyuan_option":
        args = ["--models", models, "--driving", driving, "--motion-cfg", "1.5", "2.5"]
        expected = "--motion-cfg: not an option of --backend fye"
    elif case == "template":
        args[-1] = save_template(golden_track("driving_lp_d0").select(np.arange(3)), tmp_path / "driving.npz")
        expected = "needs the driving video itself"
    elif case == "no_models":
        args[3] = tmp_path / "empty"
        expected = "lacks unet.pth (hyportrait/unet.pth of https://huggingface.co/tencent/HunyuanPortrait)"
    else:
        args += ["--size", "100"]
        expected = "--size must be a multiple of 64, got 100"
    out = tmp_path / "x.mp4"
    done = run_fye("animate", "--portrait", shared_path("data", PORTRAIT), "--out", out, *args)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("fye animate: error:") and expected in last, done.stderr
    assert not out.exists()
