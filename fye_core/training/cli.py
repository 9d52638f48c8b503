"""``fye train``: the two-stage trainer and the distill stage from a config file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .config import describe_config, load_training_config

EXAMPLE = """example config (TOML; relative paths are relative to the file):
  stage = 1
  videos = "data/talking_heads"
  output = "runs/stage1"
  init = "models"            # fye.safetensors or official/kijai weights, sd-vae-ft-mse/, image_encoder/
  steps = 30000
  batch_size = 4
  gradient_accumulation = 8
  mixed_precision = "bf16"
  gradient_checkpointing = true
  validate_every = 500       # validation losses on held-out videos, logged with the training losses
  validation_videos = "data/held_out"
  preview_steps = 25         # and a self-reenactment preview: OUTPUT/validation/step-<step>.png
  [qformer]                  # optional: train the paper's Q-Former too

stage 2 then starts from stage 1:  init = "runs/stage1/checkpoint-0030000/models.safetensors"
a 4-step student of trained weights:  stage = "distill" with init = the teacher; OUTPUT/student.safetensors
multi-GPU:  accelerate launch --multi_gpu --num_processes 8 -m fye_core.cli train --config stage1.toml
CPU processes:  torchrun --nproc_per_node 2 -m fye_core.cli train --config stage1.toml
N processes accumulating A micro-batches train as one accumulating N x A; --resume takes any such split.
"""


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune with the FFG loss (two stages, accelerate), or distil a "
                                     "few-step student",
                       description="Trains Follow-Your-Emoji with L = L_LDM + L_FFG (paper 3.2-3.3): stage 1 the "
                                   "ReferenceNet, UNet spatial layers, guider and optional Q-Former on single "
                                   "frames, stage 2 the motion modules on clips; stage \"distill\" a few-step "
                                   "student (a LoRA) by latent consistency distillation. Checkpoints (safetensors) "
                                   "go to "
                                   "OUTPUT/checkpoint-<step>/: models.safetensors loads in `fye animate` and the "
                                   "ComfyUI loader; training.safetensors holds the optimizer state for --resume. "
                                   "Loss terms are printed and appended to OUTPUT/log.jsonl (and TensorBoard's "
                                   "OUTPUT/fye-train when installed).",
                       epilog=f"config keys:\n{describe_config()}\n\n{EXAMPLE}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="training config (.toml or .json), keys below")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                   help="continue from a checkpoint folder (default: the newest in the config's output)")
    p.add_argument("--debug-masks", type=int, default=0, metavar="N",
                   help="write the landmark images and FFG masks of N samples as PNGs to OUTPUT/debug-masks, "
                        "then stop (no training)")
    p.set_defaults(run=run_train)


def mask_overlay(target: np.ndarray, landmarks: np.ndarray, expression: np.ndarray, facial: np.ndarray) -> np.ndarray:
    """One frame of a sample side by side: the target, its landmark image, and the target with the facial
    mask (green) and expression mask (red) blown up from latent cells to pixels."""
    scale = target.shape[0] // expression.shape[0]

    def to_pixels(mask: np.ndarray) -> np.ndarray:
        return np.kron(mask, np.ones((scale, scale), np.float32))[..., None]

    shaded = target.astype(np.float32)
    shaded = shaded * (1 - 0.4 * to_pixels(facial)) + np.array([0, 255, 0]) * 0.4 * to_pixels(facial)
    shaded = shaded * (1 - 0.6 * to_pixels(expression)) + np.array([255, 0, 0]) * 0.6 * to_pixels(expression)
    return np.concatenate([target, landmarks, shaded.round().astype(np.uint8)], axis=1)


def write_debug_masks(dataset, count: int, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for item in range(count):
        sample = dataset[item]
        for frame in range(len(sample["target"])):
            path = folder / f"sample{item:04d}-frame{frame:02d}.png"
            Image.fromarray(mask_overlay(sample["target"][frame], sample["landmarks"][frame],
                                         sample["expression_mask"][frame], sample["facial_mask"][frame])).save(path)
            written.append(path)
    return written


def run_train(args) -> int:
    from .data import FaceClipDataset, load_run_videos
    from .trainer import Trainer

    config = load_training_config(args.config)
    if args.debug_masks:
        dataset = FaceClipDataset.for_run(load_run_videos(config.videos, config), config, args.debug_masks)
        written = write_debug_masks(dataset, args.debug_masks, Path(config.output) / "debug-masks")
        print(f"wrote {len(written)} mask images to {Path(config.output) / 'debug-masks'}", file=sys.stderr)
        return 0
    resume = None if args.resume is None else (config.output if args.resume == "latest" else args.resume)
    trainer = Trainer(config, resume=resume)
    try:
        last = trainer.run()
    finally:
        trainer.close()
    if trainer.accelerator.is_main_process:
        print(f"trained to step {trainer.step}; checkpoint {last}", file=sys.stderr)
    return 0
