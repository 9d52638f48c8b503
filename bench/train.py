"""Seconds per optimizer step and peak memory of ``fye train`` in stage 1 and stage 2, in fp32 and bf16, with and
without gradient checkpointing.

By default the tiny seeded networks of $FYE_SHARED/golden/models (through the tests' fixtures) on the first
frames of lp_d0 at 128 px: stage 1 with a small Q-Former, stage 2 on clips with masked latents. With ``--config``
a training config of your own (its networks, videos, size, batch) is measured instead, each variant set on top
of it (its stage as given). Every variant runs in a fresh process so that its peak RSS
(``resource.getrusage`` ru_maxrss: weights, optimizer state, activations, allocator cache) is its own; the
first steps warm up and are not timed. Data loading, the frozen VAE and CLIP encoders and the optimizer step
are part of a step, as in a run.

    .venv/bin/python bench/train.py [--config F] [--steps 10] [--warmup 2] [--threads 2] [--frames 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"fp32": dict(mixed_precision="no", gradient_checkpointing=False),
            "fp32 + checkpointing": dict(mixed_precision="no", gradient_checkpointing=True),
            "bf16": dict(mixed_precision="bf16", gradient_checkpointing=False),
            "bf16 + checkpointing": dict(mixed_precision="bf16", gradient_checkpointing=True)}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def training_config(spec: dict):
    """The config a variant runs: the given file's, or the tiny one of the tests, with the variant's settings."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from fye_core.training.config import load_training_config

    steps = spec["warmup"] + spec["steps"]
    if spec["config"]:
        config = load_training_config(spec["config"])
    else:
        from shared_data import shared_path
        from training_fixtures import TINY_QFORMER, tiny_training_config

        landmarker = shared_path("models", "face_landmarker_v2_with_blendshapes.task")
        os.environ.setdefault("FYE_FACE_LANDMARKER", str(landmarker))
        stage_settings = {1: dict(qformer=TINY_QFORMER), 2: dict(masked_latents=True)}[spec["stage"]]
        config = tiny_training_config(Path(spec["root"]), stage=spec["stage"], frames=spec["frames"],
                                      learning_rate=1e-4, **stage_settings)
    return dataclasses.replace(config, output=str(Path(spec["root"]) / "runs" / spec["name"]), steps=steps,
                               save_every=steps + 1, log_every=steps + 1, **VARIANTS[spec["variant"]])


def measure(spec: dict) -> dict:
    import torch

    from fye_core.training.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    trainer = Trainer(training_config(spec))
    try:
        after_build = peak_rss_gb()
        batches = trainer.batches()
        for _ in range(spec["warmup"]):
            trainer.train_step(batches)
        start = time.perf_counter()
        for _ in range(spec["steps"]):
            losses = trainer.train_step(batches)
        seconds = (time.perf_counter() - start) / spec["steps"]
        trained = sum(parameter.numel() for parameter in trainer.trained_parameters)
    finally:
        trainer.close()
    return {"seconds_per_step": seconds, "peak_rss_gb": peak_rss_gb(), "peak_rss_after_build_gb": after_build,
            "trained_parameters": trained, "last_losses": losses}


def run_variant(spec: dict) -> dict:
    """``measure`` in a fresh process."""
    result = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)], cwd=REPO,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"variant {spec['name']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="", help="a training config file (default: the tiny networks)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--frames", type=int, default=8, help="tiny networks: frames per stage-2 clip")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    config = str(Path(args.config).resolve()) if args.config else ""
    stages = [None] if config else [1, 2]
    with tempfile.TemporaryDirectory() as root:
        settings = {"config": config or "tiny networks, 128 px", "steps": args.steps, "warmup": args.warmup,
                    "threads": args.threads, "frames": None if config else args.frames}
        print(json.dumps(settings))
        for stage in stages:
            for variant in VARIANTS:
                name = f"stage {stage} {variant}" if stage else variant
                spec = {"config": config, "stage": stage, "variant": variant, "name": name.replace(" ", "_"),
                        "root": root, "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
                        "frames": args.frames}
                result = run_variant(spec)
                print(f"{name:32s} {result['seconds_per_step']:7.3f} s/step  peak RSS {result['peak_rss_gb']:.2f} GB "
                      f"(after build {result['peak_rss_after_build_gb']:.2f})  "
                      f"{result['trained_parameters'] / 1e6:.2f} M trained", flush=True)


if __name__ == "__main__":
    main()
