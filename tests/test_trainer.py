"""The two-stage trainer on tiny seeded networks and real frames of the shared driving video (CPU)."""
import json

import numpy as np
import pytest
import torch
from conftest import golden_track
from PIL import Image
from shared_data import shared_path
from test_cli import run_fye
from training_fixtures import TINY_QFORMER, tiny_training_config, train_tiny_checkpoint

from fye_core.landmarks import save_template
from fye_core.models import load_fye
from fye_core.models.bundle import load_fye_models, locate_fye_weights
from fye_core.training.state import MODELS_FILE, checkpoints
from fye_core.training.trainer import Trainer
from fye_core.video import read_video

VALIDATION_ITEMS = list(range(4))


def overfit(config, steps: int) -> tuple[dict, dict]:
    """Validation loss terms (fixed noise and timesteps) before and after ``steps`` steps."""
    trainer = Trainer(config)
    try:
        before = trainer.validation_loss(VALIDATION_ITEMS)
        batches = trainer._batches(0)
        for _ in range(steps):
            trainer.train_step(batches)
        return before, trainer.validation_loss(VALIDATION_ITEMS)
    finally:
        trainer.close()


def test_stage_1_overfits_a_few_frames_with_the_q_former(tmp_path):
    config = tiny_training_config(tmp_path, stage=1, frames=4, steps=150, learning_rate=5e-4, qformer=TINY_QFORMER)
    before, after = overfit(config, config.steps)
    assert after["ldm"] <= before["ldm"] / 2 and after["ffg"] <= before["ffg"] / 2, (before, after)


def test_stage_2_overfits_a_clip_with_masked_latents(tmp_path):
    config = tiny_training_config(tmp_path, stage=2, frames=4, steps=100, learning_rate=2e-3, masked_latents=True)
    before, after = overfit(config, config.steps)
    assert after["ldm"] <= before["ldm"] / 2 and after["ffg"] <= before["ffg"] / 2, (before, after)


def test_resuming_gives_the_same_next_step_and_weights_as_an_uninterrupted_run(tmp_path):
    config = tiny_training_config(tmp_path, stage=2, frames=4, steps=3, learning_rate=1e-3, masked_latents=True,
                                  ema_decay=0.9, gradient_accumulation=2, uncond_probability=0.5, save_every=2,
                                  keep_checkpoints=0)
    trainer = Trainer(config)
    trainer.run()
    trainer.close()
    output = tmp_path / "run-stage2"
    uninterrupted = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    second, third = checkpoints(output)
    final = {name: load_fye(third / name).unet.state_dict() for name in (MODELS_FILE, "ema.safetensors")}

    resumed = Trainer(config, resume=second)
    assert resumed.step == 2
    resumed.run()
    resumed.close()
    assert [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()][-1] == uninterrupted[-1]
    for name, expected in final.items():
        again = load_fye(third / name).unet.state_dict()
        assert all(torch.equal(again[key], expected[key]) for key in expected), name
    assert not torch.equal(final[MODELS_FILE]["conv_in.weight"], final["ema.safetensors"]["conv_in.weight"])


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
