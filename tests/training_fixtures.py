"""Tiny training runs: the golden tiny networks, a few frames of a shared driving video, 128 px crops."""
from pathlib import Path

from models_fixtures import write_tiny_models_dir
from shared_data import VIDEOS, shared_path

from fye_core.training.config import TrainingConfig
from fye_core.video import read_video, write_video

TINY_QFORMER = {"hidden_dims": 64, "depth": 1, "dim_head": 16, "heads": 2, "num_queries": 4, "ffn_ratio": 2}


def few_frames_folder(folder: Path, frames: int, video: str = "lp_d0") -> Path:
    """A video folder holding the first ``frames`` frames of a shared driving video."""
    folder.mkdir(parents=True, exist_ok=True)
    clip, fps = read_video(shared_path("data", VIDEOS[video]), max_frames=frames)
    write_video(folder / f"{video}_start.mp4", iter(clip), fps)
    return folder


def tiny_training_config(root: Path, stage: int, frames: int, video: str = "lp_d0", **overrides) -> TrainingConfig:
    """A run in ``root`` from the tiny models (written once per root) on ``frames`` frames of ``video``."""
    models = root / "models"
    if not models.is_dir():
        write_tiny_models_dir(models)
    videos = root / f"videos-{video}-{frames}"
    if not videos.is_dir():
        few_frames_folder(videos, frames, video)
    settings = {"stage": stage, "videos": str(videos), "output": str(root / f"run-stage{stage}"), "init": str(models),
                "size": 128, "clip_frames": frames, "weight_decay": 0.0, "uncond_probability": 0.0,
                "log_every": 1, "save_every": 1000}
    return TrainingConfig(**{**settings, **overrides})


def train_tiny_checkpoint(root: Path):
    """One stage-1 step of the tiny networks with a Q-Former and the masked-latent input: the checkpoint
    folder and the trained parameters by name."""
    from fye_core.training.trainer import Trainer

    config = tiny_training_config(root, stage=1, frames=2, steps=1, learning_rate=1e-3, qformer=TINY_QFORMER,
                                  masked_latents=True)
    trainer = Trainer(config)
    try:
        checkpoint = trainer.run()
        return checkpoint, {name: parameter.detach().clone() for name, parameter in trainer.trained}
    finally:
        trainer.close()
