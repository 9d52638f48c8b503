"""``fye landmarks`` as a user runs it: a subprocess of the installed console script."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import golden_track
from PIL import Image
from shared_data import shared_path

from fye_core.image import load_image, prepare_reference
from fye_core.landmarks import (
    MotionControls,
    align_motion,
    detect_reference,
    load_motion,
    load_template,
    save_template,
)
from fye_core.video import probe_video, read_video

FYE = str(Path(sys.executable).with_name("fye"))


def run_fye(*args):
    return subprocess.run([FYE, *map(str, args)], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def test_landmarks_writes_video_and_template(tmp_path):
    out = tmp_path / "result" / "painting.mp4"
    done = run_fye("landmarks", "--portrait", shared_path("data", "portrait_painting_s9.jpg"),
                   "--driving", shared_path("data", "lp_d0_driving.mp4"), "--out", out)
    assert done.returncode == 0, done.stderr
    info = probe_video(out)
    frames, fps = read_video(out)
    assert (info.width, info.height, len(frames), fps) == (512, 512, 78, 25.0)
    assert frames[:, :, :100].max() < 20  # the letterbox bars hold no landmarks
    template = load_template(out.with_suffix(".template.npz"))
    assert len(template) == 78 and template.detected.all() and template.fps == 25.0
    assert "face found in all 78 frames" in done.stderr

    # the saved template drives a second portrait without detecting the video again
    again = tmp_path / "again.mp4"
    done = run_fye("landmarks", "--portrait", shared_path("data", "portrait_cartoon_s7.jpg"),
                   "--driving", out.with_suffix(".template.npz"), "--out", again, "--no-template")
    assert done.returncode == 0, done.stderr
    assert probe_video(again).frame_count == 78 and not again.with_suffix(".template.npz").exists()


def test_landmarks_takes_the_motion_controls_and_saves_the_motion(tmp_path):
    """The controls reach the landmarks exactly as in the core; OUT.motion.npz holds them and the portrait's own
    landmarks (plain arrays); and MediaPipe's native start-up log stays out of the console."""
    portrait = shared_path("data", "portrait_painting_s9.jpg")
    first = tmp_path / "official.mp4"
    done = run_fye("landmarks", "--portrait", portrait, "--driving", shared_path("data", "lp_d0_driving.mp4"),
                   "--out", first)
    assert done.returncode == 0, done.stderr
    assert "W0000" not in done.stderr and "XNNPACK" not in done.stderr and "InitGoogle" not in done.stderr
    template = first.with_suffix(".template.npz")

    out = tmp_path / "controlled.mp4"
    flags = ["--expression-strength", "1.5", "--mouth", "0", "--rotation-strength", "0", "--relative", "first",
             "--filter", "one-euro", "--min-cutoff", "0.8", "--beta", "3"]
    done = run_fye("landmarks", "--portrait", portrait, "--driving", template, "--out", out, "--no-template", *flags)
    assert done.returncode == 0, done.stderr
    assert "motion controls: expression=1.5, mouth=0.0, rotation=0.0, relative=first, filter=one-euro" in done.stderr
    with np.load(out.with_suffix(".motion.npz"), allow_pickle=False) as saved:
        landmarks, reference = saved["landmarks"], saved["reference"]
    assert landmarks.shape == (78, 478, 2) and reference.shape == (478, 2)
    expected = align_motion(detect_reference(prepare_reference(load_image(portrait))), load_template(template),
                            MotionControls(expression=1.5, mouth=0.0, rotation=0.0, relative="first",
                                           filter="one-euro", min_cutoff=0.8, beta=3.0))
    np.testing.assert_allclose(landmarks, expected.points, rtol=0, atol=1e-9)
    np.testing.assert_allclose(reference, expected.reference, rtol=0, atol=1e-9)
    official = load_motion(first.with_suffix(".motion.npz"))
    assert np.abs(official.points - landmarks).max() > 5.0  # the controls did change the motion

    refused = run_fye("landmarks", "--portrait", portrait, "--driving", template, "--out", tmp_path / "no.mp4",
                      "--relative", "last")
    assert refused.returncode == 1 and "--relative must be one of off, first, neutral" in refused.stderr
    assert not (tmp_path / "no.mp4").exists()


@pytest.mark.parametrize("case", ["no_face", "bad_video", "pickled_template"])
def test_failures_are_one_line_and_leave_nothing(tmp_path, case):
    portrait, driving = shared_path("data", "portrait_cartoon_s7.jpg"), shared_path("data", "lp_d0_driving.mp4")
    if case == "no_face":
        portrait = tmp_path / "blank.png"
        Image.fromarray(np.full((300, 200, 3), 128, np.uint8)).save(portrait)
        expected = f"no face was found in the portrait {portrait}"
    elif case == "bad_video":
        driving = tmp_path / "broken.mp4"
        driving.write_bytes(b"\x00" * 1000)
        expected = f"cannot read the driving video {driving}"
    else:
        driving = tmp_path / "t.npy"
        np.save(driving, np.array([{"lmks": 0}], dtype=object), allow_pickle=True)
        expected = "--allow-pickle"
    out = tmp_path / "out" / "x.mp4"
    done = run_fye("landmarks", "--portrait", portrait, "--driving", driving, "--out", out)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fye landmarks: error:") and expected in last
    assert "Traceback" not in done.stderr
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_convert_writes_our_single_file(tmp_path):
    import torch
    from models_fixtures import TINY_FILES, golden_models_path, load_tiny_models
    from safetensors.torch import load_file

    from fye_core.models import load_fye
    from fye_core.models.checkpoints import OFFICIAL_FILES

    official = tmp_path / "official"
    official.mkdir()
    for network, name in OFFICIAL_FILES.items():
        torch.save(load_file(str(golden_models_path(TINY_FILES[network]))), official / name)
    out = tmp_path / "fye.safetensors"
    done = run_fye("convert", "--official-dir", official, "--out", out)
    assert done.returncode == 0, done.stderr
    converted, expected = load_fye(out), load_tiny_models()
    for network, module in expected.networks().items():
        theirs = converted.networks()[network].state_dict()
        for key, tensor in module.state_dict().items():
            if not key.endswith("pos_embed.pe"):  # computed on load, not stored
                assert theirs[key].dtype == torch.float16
            torch.testing.assert_close(theirs[key].float(), tensor.float(), rtol=0, atol=0)

    done = run_fye("convert", "--official-dir", tmp_path / "nowhere", "--out", tmp_path / "x.safetensors")
    assert done.returncode != 0 and "lacks lmk_guider.pth" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.safetensors").exists()


def test_animate_writes_a_playable_video_with_one_frame_per_driving_frame(tmp_path):
    from models_fixtures import write_tiny_models_dir

    models = write_tiny_models_dir(tmp_path / "models")
    portrait = tmp_path / "portrait.png"  # small, so that the tiny networks run fast on a CPU
    Image.open(shared_path("data", "portrait_painting_s9.jpg")).resize((72, 128)).save(portrait)
    out = tmp_path / "animated.mp4"
    done = run_fye("animate", "--portrait", portrait, "--driving", shared_path("data", "lp_d0_driving.mp4"),
                   "--models", models, "--out", out, "--reference-mode", "keep", "--steps", "2")
    assert done.returncode == 0, done.stderr
    frames, fps = read_video(out)
    assert frames.shape == (78, 128, 72, 3) and fps == 25.0
    assert frames.std() > 1  # not a blank video

    template = save_template(golden_track("driving_lp_d0").select(np.arange(6)), tmp_path / "driving.npz")
    from_template = tmp_path / "from_template.mp4"
    done = run_fye("animate", "--portrait", portrait, "--driving", template, "--models", models, "--out",
                   from_template, "--reference-mode", "keep", "--steps", "1", "--pupils", "0.5", "--relative", "3")
    assert done.returncode == 0, done.stderr
    assert "motion controls: pupils=0.5, relative=3" in done.stderr
    assert read_video(from_template)[0].shape == (6, 128, 72, 3)

    missing = run_fye("animate", "--portrait", portrait, "--driving", shared_path("data", "lp_d0_driving.mp4"),
                      "--models", tmp_path / "empty", "--out", tmp_path / "x.mp4")
    assert missing.returncode != 0 and "models folder not found" in missing.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sd-vae-ft-mse").symlink_to(models / "sd-vae-ft-mse")
    missing = run_fye("animate", "--portrait", portrait, "--driving", shared_path("data", "lp_d0_driving.mp4"),
                      "--models", tmp_path / "empty", "--out", tmp_path / "x.mp4")
    last = missing.stderr.strip().splitlines()[-1]
    assert "lacks model files" in last and "FollowYourEmoji" in last and "image_encoder" in last
    assert "sd-vae-ft-mse" not in last.split("put into it:")[1]
    assert not (tmp_path / "x.mp4").exists()


def test_an_interrupted_progressive_run_resumes_to_the_same_video(tmp_path):
    from models_fixtures import write_tiny_models_dir

    models = write_tiny_models_dir(tmp_path / "models")
    portrait = tmp_path / "portrait.png"
    Image.open(shared_path("data", "portrait_painting_s9.jpg")).resize((72, 128)).save(portrait)
    template = save_template(golden_track("driving_lp_d0"), tmp_path / "driving.npz")  # 78 frames
    args = ["animate", "--portrait", portrait, "--driving", template, "--models", models, "--reference-mode", "keep",
            "--steps", "2", "--long-video", "progressive", "--context-frames", "8", "--crf", "0"]
    whole = tmp_path / "whole.mp4"
    assert run_fye(*args, "--out", whole).returncode == 0
    assert not (tmp_path / "whole.mp4.parts").exists()  # removed once the video is written

    out, parts = tmp_path / "resumed.mp4", tmp_path / "resumed.mp4.parts"
    # Ctrl-C's default action even when the suite itself runs in the background (which ignores SIGINT)
    process = subprocess.Popen([FYE, *map(str, args), "--out", str(out)], stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while len(list(parts.glob("clip-*.safetensors"))) < 3:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130 and "run the same command again to resume" in stderr, stderr
    assert not out.exists()
    done = run_fye(*args, "--out", out)
    assert done.returncode == 0 and "resuming from" in done.stderr, done.stderr
    resumed, expected = read_video(out)[0], read_video(whole)[0]  # lossless: x264 output varies run to run
    assert len(expected) == 78
    np.testing.assert_array_equal(resumed, expected)

    (tmp_path / "other.mp4.parts").mkdir()  # a folder of another run is refused
    (tmp_path / "other.mp4.parts" / "run.json").write_text("{}")
    refused = run_fye(*args, "--out", out.with_name("other.mp4"))
    assert refused.returncode != 0 and "holds clips of another run" in refused.stderr


def test_animate_pastes_the_face_crop_back_at_full_resolution(tmp_path):
    from models_fixtures import write_tiny_models_dir

    from fye_core.crop import detect_face_crop, paste_mask
    from fye_core.image import load_image

    models = write_tiny_models_dir(tmp_path / "models")
    template = save_template(golden_track("driving_lp_d0").select(np.arange(4)), tmp_path / "driving.npz")
    out = tmp_path / "full.mp4"
    painting = shared_path("data", "portrait_painting_s9.jpg")
    done = run_fye("animate", "--portrait", painting, "--driving", template, "--models", models, "--out", out,
                   "--steps", "1", "--paste-back", "--crf", "0")
    assert done.returncode == 0, done.stderr
    frames = read_video(out)[0]
    portrait = load_image(painting)
    assert frames.shape == (4, 1280, 720, 3)
    mask = paste_mask(detect_face_crop(portrait).crop)
    error = np.abs(frames.astype(int) - portrait).mean(axis=(0, 3))
    assert error[mask == 0].mean() < 1.5  # the portrait, through lossless yuv420p
    assert error[mask == 1].mean() > 10  # the animated face (tiny random networks)


def write_video_with_tone(path, frames, fps, rate=16000, silent_frames=0):
    """A driving video with sound: the frames and a 440 Hz tone as long as they are (silent during the first
    ``silent_frames``)."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=int(fps))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        samples = int(rate * len(frames) / fps)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)[None]
        tone[:, :int(rate * silent_frames / fps)] = 0.0
        for start in range(0, samples, 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="flt",
                                               layout="mono")
            chunk.sample_rate = rate
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)


def test_outputs_keep_the_driving_fps_and_sound(tmp_path):
    frames, fps = read_video(shared_path("data", "lp_d0_driving.mp4"))
    driving = tmp_path / "with_sound.mp4"
    write_video_with_tone(driving, frames[:25], fps)
    out = tmp_path / "landmarks.mp4"
    done = run_fye("landmarks", "--portrait", shared_path("data", "portrait_painting_s9.jpg"), "--driving", driving,
                   "--out", out, "--no-template")
    assert done.returncode == 0, done.stderr
    info = probe_video(out)
    assert info.fps == 25.0 and info.frame_count == 25 and info.has_audio
    samples, rate = decoded_audio(out)
    assert abs(len(samples) / rate - 1.0) <= 1024 / rate * 2  # AAC works in 1024-sample frames


def decoded_audio(path):
    import av

    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        return np.concatenate([frame.to_ndarray()[0] for frame in container.decode(audio)]), audio.rate


def test_dropping_the_first_frame_drops_its_sound_too(tmp_path):
    frames, _ = read_video(shared_path("data", "lp_d0_driving.mp4"))
    driving = tmp_path / "with_sound.mp4"
    write_video_with_tone(driving, frames[:10], 4, silent_frames=1)  # the first 0.25 s are silent
    loudness = {}
    for drop in (False, True):
        out = tmp_path / f"drop_{drop}.mp4"
        done = run_fye("landmarks", "--portrait", shared_path("data", "portrait_painting_s9.jpg"), "--driving",
                       driving, "--out", out, "--no-template", *(["--drop-first-frame"] if drop else []))
        assert done.returncode == 0, done.stderr
        samples, rate = decoded_audio(out)
        assert probe_video(out).frame_count == 10 - drop
        assert abs(len(samples) / rate - (10 - drop) / 4) <= 1024 / rate * 2
        loudness[drop] = np.sqrt(np.mean(samples[int(0.1 * rate):int(0.2 * rate)] ** 2))
    assert loudness[False] < 0.02 < 0.15 < loudness[True]  # the tone (RMS 0.21) starts with the first kept frame
