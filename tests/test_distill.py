"""The distill stage and the consistency sampler on the tiny seeded networks and real frames (CPU)."""
import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import golden_track
from models_fixtures import write_tiny_models_dir
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from shared_data import shared_path
from test_cli import run_fye
from training_fixtures import tiny_training_config

from fye_core.animate import AnimationOptions, animate, load_diffusers_vae, student_options
from fye_core.errors import FYEInputError
from fye_core.landmarks import save_template
from fye_core.models import load_fye
from fye_core.models.bundle import load_fye_models
from fye_core.models.image_encoder import clip_pixel_values, encode_clip_tokens, load_clip_image_encoder
from fye_core.models.student import (
    LORA_FORMAT,
    StudentSettings,
    add_student_adapter,
    lora_state,
    merged_student,
    read_student_lora,
    read_student_settings,
)
from fye_core.sampling import ConsistencySolver, make_solver, sample
from fye_core.training.data import FaceClipDataset, load_run_videos
from fye_core.training.distill import segment_ends, skipping_timesteps
from fye_core.training.state import MODELS_FILE, STUDENT_LORA_FILE, TARGET_LORA_FILE, checkpoints
from fye_core.training.trainer import STUDENT_FILE, Trainer
from fye_core.video import read_video

DISTILL = {"stage": "distill", "frames": 4, "learning_rate": 1e-3, "lora_rank": 4, "distill_steps": 2}


def test_the_consistency_sampler_takes_the_students_schedule_and_seed():
    solver = make_solver("lcm", 4, seed=3)
    assert solver.timesteps == [999, 759, 499, 259]  # from the skipping schedule 19, 39, ..., 999
    x = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))

    def model(x, t, step):
        return 0.1 * x

    # deterministic by default (the noise the prediction implies), LCM's fresh noise from the seed with eta 1
    runs = [sample(model, x, make_solver("lcm", 4, seed=seed)) for seed in (3, 4)]
    assert torch.equal(runs[0], runs[1])
    runs = [sample(model, x, ConsistencySolver(4, seed=seed, eta=1.0)) for seed in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    with pytest.raises(FYEInputError, match="1 to 50 steps"):
        make_solver("lcm", 51)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """Three distillation steps of the tiny networks (EMA on, validation with a preview at step 2, a checkpoint
    every 2 steps), then the same run resumed from its step-2 checkpoint."""
    root = tmp_path_factory.mktemp("distill")
    config = tiny_training_config(root, **DISTILL, steps=3, ema_decay=0.9, save_every=2, keep_checkpoints=0,
                                  validate_every=2, validation_samples=1, preview_steps=1)
    trainer = Trainer(config)
    trainer.run()
    trainer.close()
    output = root / "run-stagedistill"
    uninterrupted = (output / "log.jsonl").read_text()
    final = {name: load_file(checkpoints(output)[-1] / name) for name in (STUDENT_LORA_FILE, TARGET_LORA_FILE)}
    shutil.copytree(output, root / "uninterrupted")
    resumed = Trainer(config, resume=checkpoints(output)[0])
    resumed.run()
    resumed.close()
    return root, config, uninterrupted, final


def test_the_student_is_distilled_for_the_jumps_its_sampler_takes():
    assert segment_ends(4, 50).tolist() == [-1, 259, 499, 759]  # the sampler's 999 -> 759 -> 499 -> 259 -> clean
    assert segment_ends(4, 4).tolist() == [-1, 249, 499, 749]  # one teacher skip per segment: no target network
    for steps, teacher_steps in ((1, 50), (2, 10), (4, 20)):
        solver = make_solver("lcm", steps, teacher_steps=teacher_steps)
        assert segment_ends(steps, teacher_steps).tolist() == [-1, *sorted(solver.timesteps)[:-1]]
        assert set(segment_ends(steps, teacher_steps).tolist()[1:]) <= set(skipping_timesteps(teacher_steps).tolist())
    # chosen timesteps: with one teacher skip per segment they are the skipping schedule, else they lie on it
    chosen = (999, 666, 333, 99)
    assert skipping_timesteps(4, chosen).tolist() == [99, 333, 666, 999]
    assert segment_ends(4, 4, chosen).tolist() == [-1, 99, 333, 666]
    assert segment_ends(4, 10, (999, 599, 299, 99)).tolist() == [-1, 99, 299, 599]
    assert make_solver("lcm", 4, teacher_steps=4, timesteps=chosen).timesteps == list(chosen)
    assert make_solver("lcm", 2, teacher_steps=4, timesteps=chosen).timesteps == [999, 333]  # LCM's pick by index
    with pytest.raises(FYEInputError, match="1 to 4 steps \\(its own timesteps\\)"):
        make_solver("lcm", 5, teacher_steps=10, timesteps=chosen)


def unet_calls(config) -> list[tuple[torch.Tensor, list[int]]]:
    """(latents, timesteps) of every UNet call of a training run, teacher's and student's, in order."""
    trainer = Trainer(config)
    calls = []
    trainer.models.unet.register_forward_hook(
        lambda module, args, out: calls.append((args[0].detach().clone(), args[1].tolist())))
    trainer.run()
    trainer.close()
    return calls


def test_a_student_distilled_at_chosen_timesteps_learns_and_samples_at_them(tmp_path):
    config = tiny_training_config(tmp_path, **{**DISTILL, "steps": 3, "teacher_steps": 2, "log_every": 1,
                                               "distill_timesteps": [999, 199]})
    calls = [t for _, t in unet_calls(config)]
    student_calls = [t[0] for t in calls if len(t) == 1]
    teacher_calls = {t[0] for t in calls if len(t) == 2}
    assert len(student_calls) == 3 and set(student_calls) <= {999, 199} and teacher_calls <= {999, 199}
    student = read_student_settings(tmp_path / "run-stagedistill" / STUDENT_FILE)
    assert student.timesteps == (999, 199)
    assert student_options(AnimationOptions(), student).solver_factory().timesteps == [999, 199]


def test_distilling_from_noise_trains_the_student_on_its_teachers_trajectory(tmp_path):
    config = tiny_training_config(tmp_path, **{**DISTILL, "steps": 3, "teacher_steps": 2, "log_every": 1,
                                               "distill_from_noise": True})
    calls = unet_calls(config)
    steps, current = [], []
    for x, t in calls:  # the teacher's calls take both guidance halves (2 items), the student's one item
        current.append((x, t))
        if len(x) == 1:
            steps.append(current)
            current = []
    assert len(steps) == 3
    for step in steps:
        *teacher_calls, (x, t) = step
        assert teacher_calls[0][1] == [999, 999]  # every step starts from pure noise at the top
        # the student sees the state the teacher's guided steps reached at its timestep, and learns the next skip
        at_t = [x_teacher for x_teacher, t_teacher in teacher_calls if t_teacher == t * 2]
        assert at_t and torch.equal(at_t[0][:1], x)
    assert {step[-1][1][0] for step in steps} == {999, 499}  # both segments drawn


def test_distilling_along_the_whole_trajectory_trains_every_skip_of_one_teacher_run(tmp_path):
    config = tiny_training_config(tmp_path, **{**DISTILL, "steps": 2, "teacher_steps": 2, "log_every": 1,
                                               "distill_from_noise": True, "distill_whole_trajectory": True})
    calls = unet_calls(config)
    # a step: the teacher's skips from the noise (999 -> 499 -> clean, both guidance halves), then the student
    # once, at both skips' starts as one batch
    assert [t for _, t in calls] == [[999, 999], [499, 499], [999, 499]] * 2
    for step in (calls[:3], calls[3:]):
        (noise, _), (at_499, _), (student, _) = step
        assert torch.equal(student[:1], noise[:1]) and torch.equal(student[1:], at_499[:1])
    with pytest.raises(FYEInputError, match="set distill_from_noise = true"):
        tiny_training_config(tmp_path, **{**DISTILL, "distill_whole_trajectory": True})


def test_distilling_writes_the_student_as_full_weights_and_as_a_lora(distilled):
    root, config, log, _ = distilled
    output = root / "uninterrupted"
    records = [json.loads(line) for line in log.splitlines()]
    assert [r["step"] for r in records if "validation_consistency" in r] == [0, 2, 3]
    assert all({"consistency", "ffg", "total", "lr"} <= set(r) for r in records if "lr" in r)
    student = StudentSettings(steps=2, guidance=3.5, teacher_steps=50, lora_rank=4)
    assert read_student_settings(output / STUDENT_FILE) == student
    assert read_student_lora(output / STUDENT_LORA_FILE)[1] == student
    adapted = {key.split(".lora_")[0] for key in read_student_lora(output / STUDENT_LORA_FILE)[0]}
    assert {"conv_in", "conv_out", "time_embedding.linear_1", "down_blocks.0.attentions.0.proj_in",
            "down_blocks.0.downsamplers.0.conv",
            "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q"} <= adapted  # every layer
    lora_size, full_size = ((output / name).stat().st_size for name in (STUDENT_LORA_FILE, STUDENT_FILE))
    assert lora_size < full_size / 4
    # the checkpoint's models file is the merged student too: it loads as plain FYE weights
    assert load_fye(checkpoints(output)[-1] / MODELS_FILE).config["student"]["steps"] == 2
    preview, _ = read_video(output / "validation" / "step-0000002.mp4")
    assert preview.shape == (4, 128, 3 * 128, 3) and preview[..., 256:, :].std() > 1
    assert any((output / "fye-train").rglob("events.out.tfevents.*"))  # TensorBoard, installed with the tests


def test_a_resumed_distillation_ends_bit_for_bit_as_the_uninterrupted_one(distilled):
    root, _, log, final = distilled
    output = root / "run-stagedistill"
    again = (output / "log.jsonl").read_text()
    assert again.startswith(log) and again[len(log):] == "".join(log.splitlines(keepends=True)[-2:])
    for name, expected in final.items():
        again = load_file(checkpoints(output)[-1] / name)
        assert again.keys() == expected.keys() and all(torch.equal(again[k], expected[k]) for k in expected), name


def test_the_student_as_a_lora_and_merged_gives_the_same_frames(distilled, tiny_animation_inputs):
    root, _, _, _ = distilled
    output = root / "uninterrupted"
    codec, tokens, reference, landmarks = tiny_animation_inputs
    merged = load_fye_models(output / STUDENT_FILE)
    as_lora = load_fye_models(root / "models" / "fye.safetensors", student_lora=output / STUDENT_LORA_FILE)
    teacher = load_fye_models(root / "models" / "fye.safetensors")
    student = StudentSettings.from_config(merged.config)
    options = student_options(AnimationOptions(context_frames=4), student)
    assert (options.speed.solver, options.speed.steps, options.guidance) == ("lcm", 2, 1.0)
    frames = [animate(models, codec, tokens, reference, landmarks, options) for models in (merged, as_lora, teacher)]
    np.testing.assert_allclose(frames[0].astype(float), frames[1].astype(float), atol=1)  # uint8 rounding
    assert np.abs(frames[0].astype(float) - frames[2].astype(float)).max() > 1  # the adapter does something


def test_a_student_lora_on_fewer_layers_loads_on_the_layers_its_file_names(distilled, tmp_path):
    """Files made when the student adapted fewer layers than now (LCM-LoRA's attention and residual ones) record
    those; loading one merges exactly its own layers."""
    from safetensors.torch import save_file

    root, _, _, _ = distilled
    teacher = root / "models" / "fye.safetensors"
    earlier_targets = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "conv1", "conv2"]
    settings = StudentSettings(steps=2, guidance=3.5, teacher_steps=50, lora_rank=4)
    made = load_fye_models(teacher)
    add_student_adapter(made.unet, 4, 0, earlier_targets)
    with torch.no_grad():
        for name, parameter in made.unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    tensors = lora_state(made.unet)
    assert not any("conv_in" in key or "proj_in" in key for key in tensors)
    save_file(tensors, str(tmp_path / "earlier.safetensors"), metadata={
        "format": LORA_FORMAT, "student": json.dumps(asdict(settings)), "targets": json.dumps(earlier_targets)})
    expected = merged_student(made, settings).unet.state_dict()
    loaded = load_fye_models(teacher, student_lora=tmp_path / "earlier.safetensors")
    assert StudentSettings.from_config(loaded.config) == settings
    for key, value in loaded.unet.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def tiny_animation_inputs(distilled):
    root, config, _, _ = distilled
    dataset = FaceClipDataset.for_run(load_run_videos(config.videos, config), config, 1)
    sample = dataset[0]
    encoder = load_clip_image_encoder(root / "models" / "image_encoder")
    tokens = encode_clip_tokens(encoder, clip_pixel_values(sample["reference"][None]))
    return load_diffusers_vae(root / "models" / "sd-vae-ft-mse"), tokens, sample["reference"], sample["landmarks"]


def test_fye_animate_samples_with_the_students_own_steps(distilled, tmp_path):
    root, _, _, _ = distilled
    template = save_template(golden_track("driving_lp_d0").select(np.arange(4)), tmp_path / "driving.npz")
    portrait = tmp_path / "portrait.png"
    Image.open(shared_path("data", "portrait_painting_s9.jpg")).resize((72, 128)).save(portrait)
    student_models = tmp_path / "student"
    write_tiny_models_dir(student_models)
    shutil.copy(root / "uninterrupted" / STUDENT_FILE, student_models / "fye.safetensors")
    common = ["--portrait", portrait, "--driving", template, "--reference-mode", "keep"]
    done = run_fye("animate", *common, "--models", student_models, "--out", tmp_path / "full.mp4")
    assert done.returncode == 0, done.stderr
    assert "student: distilled for 2 lcm steps with guidance 3.5 folded in; sampling lcm 2 steps, cfg 1" \
        in done.stderr
    done = run_fye("animate", *common, "--models", root / "models", "--student-lora",
                   root / "uninterrupted" / STUDENT_LORA_FILE, "--steps", "1", "--out", tmp_path / "lora.mp4")
    assert done.returncode == 0, done.stderr
    assert "sampling lcm 1 steps, cfg 1" in done.stderr
    assert read_video(tmp_path / "lora.mp4")[0].shape == (4, 128, 72, 3)
    refused = run_fye("animate", *common, "--models", root / "models", "--student-lora", root / "models" /
                      "fye.safetensors", "--out", tmp_path / "no.mp4")
    assert refused.returncode == 1 and "not an FYE student LoRA" in refused.stderr


def test_a_bad_distill_config_is_refused(tmp_path):
    with pytest.raises(FYEInputError, match="distill takes a 4-channel UNet"):
        tiny_training_config(tmp_path, **DISTILL, masked_latents=True)
    with pytest.raises(FYEInputError, match="teacher_steps dividing 1000"):
        tiny_training_config(tmp_path, **DISTILL, teacher_steps=30)
    for timesteps in ([999], [999, 999], [899, 99], [999, 98]):  # count, order, start, off the 20-step schedule
        with pytest.raises(FYEInputError, match="distill_timesteps must be distill_steps"):
            tiny_training_config(tmp_path, **DISTILL, teacher_steps=20, distill_timesteps=timesteps)


def test_the_student_file_records_what_it_was_made_for(distilled):
    root, _, _, _ = distilled
    with safe_open(str(root / "uninterrupted" / STUDENT_LORA_FILE), framework="pt") as f:
        assert json.loads(f.metadata()["student"]) == {"steps": 2, "guidance": 3.5, "teacher_steps": 50,
                                                       "lora_rank": 4, "timesteps": None}
