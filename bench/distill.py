"""A few-step student distilled from the test model, against its teacher and the training-free settings.

The teacher is the test model trained here (``bench/test_model.py``, built on first use). The student is made by
``fye train``'s distill stage (``bench/distill.toml`` over the test model's training clips) and cached
under ``.cache/test-model/`` beside it. On held-out frames of a trained identity, every output is compared with
the teacher's 30-step ``official`` output (same inputs, same seed; PSNR of the decoded frames):

- ``student_4``: the student, 4 steps of its consistency sampler, no guidance pass (4 UNet evaluations);
- ``teacher_4``: the teacher itself at 4 DDIM steps with guidance (8 evaluations), as ``--steps 4`` runs it;
- ``teacher_4_student_timesteps``: the teacher's 4 guided DDIM steps at the student's timesteps (8 evaluations);
- ``fastest_same_evals``: the best training-free setting of the speed presets at the student's 4 evaluations
  (each candidate is printed; the JSON also names the best).

The JSON also gives ``student_4`` and ``teacher_4`` on the other held-out identities (``other_videos``).

    .venv/bin/python bench/distill.py [--variant full|small] [--json OUT] [--picture PNG]
    .venv/bin/python bench/distill.py --student-dir   # distils if needed; last line: a models folder
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import test_model  # noqa: E402

RECIPE = BENCH / "distill.toml"
FRAMES = 8
STUDENT_STEPS = 4
# Training-free settings at the student's 4 UNet evaluations: guided runs of 2 steps, unguided runs of 4.
SAME_EVALS = {
    "unipc 2 steps": {"solver": "unipc", "steps": 2},
    "dpmpp_2m 2 steps": {"solver": "dpmpp_2m", "steps": 2},
    "ddim 2 steps": {"steps": 2},
    "unipc 4 steps, no guidance": {"solver": "unipc", "steps": 4, "guidance": 1.0},
    "ddim 4 steps, no guidance": {"steps": 4, "guidance": 1.0},
}


def recipe(variant: str) -> dict:
    import tomllib

    settings = tomllib.loads(RECIPE.read_text())
    return {**settings["distill"], **settings.get(variant, {})}


def student_dir(variant: str) -> Path:
    """The student's models folder (built on first use): ``fye.safetensors`` (the merged student, its config
    recording the steps and guidance it was made for) with the teacher's VAE and CLIP encoder, and the LoRA."""
    teacher = test_model.test_model_dir(variant)
    key = hashlib.sha256(RECIPE.read_bytes() + teacher.name.encode()).hexdigest()[:10]
    final = test_model.CACHE / f"student-{variant}-{key}"
    if final.is_dir():
        return final
    partial = test_model.CACHE / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    start = time.perf_counter()
    distil(teacher, partial, recipe(variant))
    seconds = time.perf_counter() - start
    for name in ("sd-vae-ft-mse", "image_encoder"):
        shutil.copytree(teacher / name, partial / name)
    shutil.move(partial / "run" / "student.safetensors", partial / "fye.safetensors")
    shutil.move(partial / "run" / "student_lora.safetensors", partial / "student_lora.safetensors")
    (partial / "distill.json").write_text(json.dumps({"seconds": round(seconds, 1), "teacher": teacher.name,
                                                      "settings": recipe(variant)}, indent=1) + "\n")
    os.replace(partial, final)
    return final


def distil(teacher: Path, folder: Path, settings: dict) -> None:
    """Runs the distill stage as ``fye train --config distill.toml`` in ``folder``."""
    from accelerate.state import AcceleratorState

    from fye_core.training.config import load_training_config
    from fye_core.training.trainer import Trainer

    paths = {"videos": str(teacher / "data" / "train"), "output": "run", "init": str(teacher / "fye.safetensors"),
             "vae": str(teacher / "sd-vae-ft-mse"), "clip": str(teacher / "image_encoder")}
    config = {"stage": "distill", **paths, **settings}
    (folder / "distill.toml").write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items()))
    shutil.copytree(teacher / "data" / "tracks", folder / "run" / "tracks")  # detected once, by the test model
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        with contextlib.chdir(folder), test_model.torch_threads(2):
            trainer = Trainer(load_training_config("distill.toml"))
            try:
                trainer.run()
            finally:
                trainer.close()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def run(models, codec, tokens, reference, landmarks, options):
    from fye_core.animate import animate

    return animate(models, codec, tokens, reference, landmarks, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=test_model.VARIANTS, default="small",
                        help="test model variant (small: the one the tests use, built here in minutes)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--picture", type=Path, default=None,
                        help="PNG: the real held-out frames, the teacher's 30 steps, its 4 steps, the student's 4")
    parser.add_argument("--student-dir", action="store_true",
                        help="distil if needed and print the student's models folder (last line)")
    args = parser.parse_args()
    student = student_dir(args.variant)
    if args.student_dir:
        print(student)
        return

    import numpy as np
    import torch

    from fye_core.animate import AnimationOptions, load_diffusers_vae, student_options
    from fye_core.eval.metrics import video_metrics
    from fye_core.models.bundle import load_fye_models, locate_model_files
    from fye_core.models.image_encoder import clip_pixel_values, encode_clip_tokens, load_clip_image_encoder
    from fye_core.models.student import StudentSettings

    torch.set_num_threads(2)
    teacher_files = locate_model_files(test_model.test_model_dir(args.variant))
    held = test_model.held_out(args.variant, frames=FRAMES)
    clip_encoder = load_clip_image_encoder(teacher_files.clip)
    codec = load_diffusers_vae(teacher_files.vae)
    teacher = load_fye_models(teacher_files.fye)
    distilled = load_fye_models(student / "fye.safetensors")
    settings = StudentSettings.from_config(distilled.config)
    base = AnimationOptions(context_frames=FRAMES)
    student_4, teacher_4 = student_options(base, settings), AnimationOptions(context_frames=FRAMES, steps=STUDENT_STEPS)

    def inputs_of(clip):
        tokens = encode_clip_tokens(clip_encoder, clip_pixel_values(clip.reference))
        return codec, tokens, clip.reference, clip.landmarks

    inputs = inputs_of(held)
    official = run(teacher, *inputs, base)
    outputs = {"student_4": run(distilled, *inputs, student_4),
               "teacher_4": run(teacher, *inputs, teacher_4),
               # the teacher's guided DDIM at the student's own timesteps (its consistency sampler: c_skip ~ 0)
               "teacher_4_student_timesteps": run(teacher, *inputs,
                                                  student_options(base, settings, guidance_given=True))}
    candidates = {name: run(teacher, *inputs, AnimationOptions(context_frames=FRAMES, **overrides))
                  for name, overrides in SAME_EVALS.items()}
    scores = {name: video_metrics(video, official)["psnr"] for name, video in {**outputs, **candidates}.items()}
    best = max(SAME_EVALS, key=scores.get)
    # the other held-out identities, the student and the teacher's 4 steps alone (the margin is judged on the first)
    other_videos = {}
    for video in test_model.held_out_videos(args.variant):
        if video != held.video:
            other_inputs = inputs_of(test_model.held_out(args.variant, video, frames=FRAMES))
            other_official = run(teacher, *other_inputs, base)
            other_videos[video] = {name: video_metrics(run(models, *other_inputs, options), other_official)["psnr"]
                                   for name, models, options in (("student_4", distilled, student_4),
                                                                 ("teacher_4", teacher, teacher_4))}
    results = {"student_4": scores["student_4"], "teacher_4": scores["teacher_4"],
               "teacher_4_student_timesteps": scores["teacher_4_student_timesteps"],
               "fastest_same_evals": scores[best], "fastest_same_evals_setting": best,
               "same_evals": {name: scores[name] for name in SAME_EVALS},
               "ssim": {name: video_metrics(video, official)["ssim"] for name, video in outputs.items()},
               "other_videos": other_videos,
               "distill": json.loads((student / "distill.json").read_text()),
               "config": {"variant": args.variant, "frames": FRAMES, "video": held.video, "seed": base.seed,
                          "guidance": base.guidance, "student": vars(settings), "threads": 2,
                          "torch": torch.__version__}}
    for name, value in scores.items():
        print(f"{name:<32} PSNR {value:6.2f} dB against the teacher's 30 steps")
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.picture:
        from PIL import Image

        rows = [held.frames, official, outputs["teacher_4"], outputs["student_4"]]
        Image.fromarray(np.concatenate([np.concatenate(list(row[::2]), axis=1) for row in rows], axis=0)).save(
            args.picture)


if __name__ == "__main__":
    main()
