"""The two-stage trainer on tiny seeded networks and real frames of the shared driving video (CPU)."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import golden_track
from PIL import Image
from shared_data import shared_path
from test_cli import run_fye
from training_fixtures import TINY_QFORMER, few_frames_folder, tiny_training_config, train_tiny_checkpoint

from fye_core.errors import FYEInputError
from fye_core.landmarks import save_template
from fye_core.models import load_fye
from fye_core.models.bundle import load_fye_models, locate_fye_weights
from fye_core.training.config import TrainingConfig
from fye_core.training.state import MODELS_FILE, checkpoints
from fye_core.training.trainer import Trainer
from fye_core.video import read_video


def overfit(config, steps: int) -> tuple[dict, dict]:
    """Validation loss terms (8 samples of the training video, fixed noise and timesteps) before and after
    ``steps`` steps."""
    trainer = Trainer(config)
    try:
        before = trainer.validation_loss()
        batches = trainer.batches()
        for _ in range(steps):
            trainer.train_step(batches)
        return before, trainer.validation_loss()
    finally:
        trainer.close()


def test_stage_1_overfits_a_few_frames_with_the_q_former(tmp_path):
    config = tiny_training_config(tmp_path, stage=1, frames=4, size=64, steps=150, learning_rate=5e-4,
                                  qformer=TINY_QFORMER)
    before, after = overfit(config, config.steps)
    assert after["ldm"] <= before["ldm"] / 2 and after["ffg"] <= before["ffg"] / 2, (before, after)


def test_stage_2_overfits_a_clip_with_masked_latents(tmp_path):
    """Stage 2 starts from stage-1 weights, as in the paper: here a stage-1 run of the tiny networks on another
    face (fye_temple), so that the frozen spatial layers are trained ones and the motion modules (with the
    widened conv_in) must learn lp_d0's clip through them. From the random golden networks the frozen random
    output layers cap L_LDM near half its start whatever the motion modules learn."""
    pretraining = Trainer(tiny_training_config(tmp_path, stage=1, frames=4, video="fye_temple", size=64, steps=250,
                                               learning_rate=5e-4))
    try:
        stage_1 = pretraining.run() / MODELS_FILE
    finally:
        pretraining.close()
    models = tmp_path / "models"
    config = tiny_training_config(tmp_path, stage=2, frames=4, size=64, steps=120, learning_rate=2e-3,
                                  masked_latents=True, init=str(stage_1), vae=str(models / "sd-vae-ft-mse"),
                                  clip=str(models / "image_encoder"))
    before, after = overfit(config, config.steps)
    assert after["ldm"] <= before["ldm"] / 2 and after["ffg"] <= before["ffg"] / 2, (before, after)


def test_resuming_gives_the_same_next_step_and_weights_as_an_uninterrupted_run(tmp_path):
    config = tiny_training_config(tmp_path, stage=2, frames=4, steps=3, learning_rate=1e-3, masked_latents=True,
                                  ema_decay=0.9, gradient_accumulation=2, uncond_probability=0.5, save_every=2,
                                  keep_checkpoints=0, lr_warmup_steps=2, validate_every=2, validation_samples=2,
                                  preview_steps=2,
                                  validation_videos=str(few_frames_folder(tmp_path / "held-out", 4, "fye_temple")))
    trainer = Trainer(config)
    trainer.run()
    trainer.close()
    output = tmp_path / "run-stage2"
    uninterrupted = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in uninterrupted if "validation_ldm" in record] == [0, 2, 3]
    assert [record["lr"] for record in uninterrupted if "lr" in record] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    assert sorted(p.name for p in (output / "validation").iterdir()) == [f"step-000000{s}.mp4" for s in (0, 2, 3)]
    preview, _ = read_video(output / "validation" / "step-0000003.mp4")
    assert preview.shape == (4, 128, 3 * 128, 3) and preview[..., 256:, :].std() > 1  # target | landmarks | generated
    second, third = checkpoints(output)
    final = {name: load_fye(third / name).unet.state_dict() for name in (MODELS_FILE, "ema.safetensors")}

    with pytest.raises(FYEInputError, match="seed 0 -> 1"):
        Trainer(dataclasses.replace(config, seed=1), resume=second)
    resumed = Trainer(config, resume=second)
    assert resumed.step == 2
    resumed.run()
    resumed.close()
    log = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert log[len(uninterrupted):] == uninterrupted[-2:]  # step 3's training and validation losses
    assert np.array_equal(read_video(output / "validation" / "step-0000003.mp4")[0], preview)
    for name, expected in final.items():
        again = load_fye(third / name).unet.state_dict()
        assert all(torch.equal(again[key], expected[key]) for key in expected), name
    assert not torch.equal(final[MODELS_FILE]["conv_in.weight"], final["ema.safetensors"]["conv_in.weight"])

    models = tmp_path / "models"  # validation ran with the EMA weights
    of_ema = Trainer(dataclasses.replace(config, init=str(third / "ema.safetensors"), vae=str(models / "sd-vae-ft-mse"),
                                         clip=str(models / "image_encoder")))
    try:
        assert {f"validation_{k}": round(v, 6) for k, v in of_ema.validation_loss().items()} == {
            k: v for k, v in uninterrupted[-1].items() if k.startswith("validation_")}
    finally:
        of_ema.close()


STAGE_RUNS = {1: {"stage": 1, "frames": 2}, 2: {"stage": 2, "frames": 4},
              "distill": {"stage": "distill", "frames": 4, "lora_rank": 4, "distill_steps": 2}}


@pytest.mark.parametrize("stage", list(STAGE_RUNS))
def test_two_processes_train_as_one_process_accumulating_two_micro_batches(tmp_path, stage):
    """A distributed launch on the CPU (torchrun, gloo), every stage: two processes with one micro-batch each make
    the steps of one process accumulating two (same samples, same noise), one log with one validation per step,
    and a checkpoint that resumes in one process."""
    settings = {"steps": 2, "learning_rate": 1e-3, "uncond_probability": 0.5, "validate_every": 1,
                "validation_samples": 2, "preview_steps": 1, "save_every": 1, "keep_checkpoints": 0,
                **STAGE_RUNS[stage]}
    distributed = tiny_training_config(tmp_path, output=str(tmp_path / "two-processes"), dataloader_workers=1,
                                       **settings)
    config_file = tmp_path / "two-processes.json"
    config_file.write_text(distributed.to_json())
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "fye_core.cli", "train", "--config", str(config_file)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "2 process(es)" in done.stderr and done.stderr.count("trained to step 2") == 1
    preview = tmp_path / "two-processes" / "validation" / f"step-0000002.{'png' if stage == 1 else 'mp4'}"
    frames = np.asarray(Image.open(preview))[None] if stage == 1 else read_video(preview)[0]
    assert frames.shape == (distributed.frames, 128, 384, 3)

    single = tiny_training_config(tmp_path, output=str(tmp_path / "one-process"), gradient_accumulation=2,
                                  **settings)
    trainer = Trainer(single)
    trainer.run()
    trainer.close()
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("two-processes", "one-process")]
    assert [sorted(record) for record in logs[0]] == [sorted(record) for record in logs[1]]
    assert [record["step"] for record in logs[0]] == [0, 1, 1, 2, 2]  # validation before training, then each step
    for two, one in zip(*logs, strict=True):
        assert two.pop("preview", None) == one.pop("preview", None)
        assert two == pytest.approx(one, rel=1e-5, abs=1e-6)
    two, one = ({f"{name}.{key}": tensor for name, network in load_fye(checkpoints(tmp_path / run)[-1]
                                                                       / MODELS_FILE).networks().items()
                 for key, tensor in network.state_dict().items()} for run in ("two-processes", "one-process"))
    differences = torch.cat([(two[name] - one[name]).abs().flatten() for name in one])
    # AdamW moves a weight by about lr per step whatever its gradient's size, so where a gradient is at Adam's eps
    # (1e-8) the summation order (all-reduce vs accumulation) decides the update: 0.25 % of the weights in stage 1,
    # and such a weight can part by up to about lr on each of the steps
    assert (differences > 1e-6).float().mean() < 0.01
    assert differences.max() < settings["steps"] * settings["learning_rate"]

    first_step = checkpoints(tmp_path / "two-processes")[0]
    resumed = Trainer(dataclasses.replace(single, output=distributed.output), resume=first_step)
    try:
        losses = resumed.train_step(resumed.batches(resumed.step))
        # the log keeps 6 decimals
        assert losses == pytest.approx({key: logs[0][-2][key] for key in losses}, rel=1e-5, abs=1e-6)
    finally:
        resumed.close()
    with pytest.raises(FYEInputError, match="gradient_accumulation x processes 1 x 2 -> 1 x 1"):
        Trainer(distributed, resume=first_step)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    return root, *train_tiny_checkpoint(root)


def test_a_trainer_checkpoint_animates_with_its_q_former_and_masked_latents(trained_checkpoint, tmp_path):
    root, checkpoint, trained = trained_checkpoint
    weights = locate_fye_weights(checkpoint / MODELS_FILE)
    models = load_fye_models(weights)
    assert models.qformer is not None and models.unet.takes_masked_latents
    networks = {f"{name}.{key}": tensor for name, network in models.networks().items()
                for key, tensor in network.state_dict().items()}
    assert all(torch.equal(networks[name], value) for name, value in trained.items())
    assert {name.split(".")[0] for name in trained} == {"guider", "referencenet", "unet", "qformer"}

    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "trained.safetensors").symlink_to(checkpoint / MODELS_FILE)
    for folder in ("sd-vae-ft-mse", "image_encoder"):
        (models_dir / folder).symlink_to(root / "models" / folder)
    portrait = tmp_path / "portrait.png"
    Image.open(shared_path("data", "portrait_painting_s9.jpg")).resize((72, 128)).save(portrait)
    template = save_template(golden_track("driving_lp_d0").select(np.arange(6)), tmp_path / "driving.npz")
    out = tmp_path / "animated.mp4"
    done = run_fye("animate", "--portrait", portrait, "--driving", template, "--models", models_dir, "--out", out,
                   "--reference-mode", "keep", "--steps", "2", "--long-video", "progressive", "--context-frames", "4")
    assert done.returncode == 0, done.stderr
    frames, fps = read_video(out)
    assert frames.shape == (6, 128, 72, 3) and frames.std() > 1


def test_gradient_checkpointing_and_bf16_train_the_same_networks(tmp_path):
    def first_step(**overrides):
        trainer = Trainer(tiny_training_config(tmp_path, stage=1, frames=2, steps=1, learning_rate=1e-3,
                                               uncond_probability=0.5, **overrides))
        try:
            losses = trainer.train_step(trainer.batches())
            return losses, {name: parameter.detach().clone() for name, parameter in trainer.trained}
        finally:
            trainer.close()

    plain, plain_weights = first_step()
    recomputed, recomputed_weights = first_step(gradient_checkpointing=True)
    assert recomputed == pytest.approx(plain, rel=1e-6)
    for name, weight in plain_weights.items():
        torch.testing.assert_close(recomputed_weights[name], weight, rtol=0, atol=1e-6, msg=name)
    AcceleratorState._reset_state(reset_partial_state=True)  # accelerate fixes the precision once per process
    try:
        bf16, _ = first_step(mixed_precision="bf16")
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert bf16 == pytest.approx(plain, rel=0.05)


def test_fye_train_documents_its_config_and_writes_debug_masks(tmp_path):
    done = run_fye("train", "--help")
    assert done.returncode == 0
    for key in ("stage", "videos", "init", "qformer", "masked_latents", "mixed_precision", "ema_decay", "seed",
                "validate_every", "preview_steps", "clip_stride", "lr_warmup_steps"):
        assert f"  {key} (" in done.stdout, key
    assert "accelerate launch" in done.stdout

    config = tiny_training_config(tmp_path, stage=2, frames=4)
    path = tmp_path / "stage2.toml"
    path.write_text(f'stage = 2\nvideos = "{config.videos}"\noutput = "out"\ninit = "{config.init}"\n'
                    "size = 128\nclip_frames = 4\n")
    done = run_fye("train", "--config", path, "--debug-masks", "2")
    assert done.returncode == 0, done.stderr
    images = sorted((tmp_path / "out" / "debug-masks").glob("*.png"))
    assert len(images) == 2 * 4
    panel = np.asarray(Image.open(images[0]))
    assert panel.shape == (128, 3 * 128, 3)
    target, shaded = panel[:, :128].astype(int), panel[:, 256:].astype(int)
    assert (shaded != target).any(axis=2).mean() > 0.05  # the masks cover part of the frame

    path.write_text(path.read_text() + "learning_rat = 1e-4\n")
    done = run_fye("train", "--config", path)
    assert done.returncode == 1 and "unknown keys ['learning_rat']" in done.stderr


def test_a_bad_training_config_names_every_problem():
    with pytest.raises(FYEInputError) as error:
        TrainingConfig(stage=3, videos="videos", output="run", init="models", size=100, mixed_precision="fp8",
                       uncond_probability=1.5, preview_steps=25)
    for problem in ('stage must be 1, 2 or "distill"', "size must be a positive multiple of 8",
                    "mixed_precision must be one of",
                    "uncond_probability must be between 0 and 1", "preview_steps needs validate_every"):
        assert problem in str(error.value), problem
