"""Long videos on the tiny seeded official networks: memory and time of progressive sampling as the video
grows, and how visible the seams between windows, tiles or segments are in each long-video mode.

Tiny networks and tiny VAE of $FYE_SHARED/golden/models (through the tests' loader), its 192x128 reference
and 16 landmark frames repeated to the length asked for, CLIP tokens from its fixtures, one window size for
all. Each length runs in a fresh process so that its peak RSS is its own; frames are decoded and encoded
to an mp4 as ``fye animate`` does.

Seam measure: the mean absolute latent difference between adjacent frames where the windows (tiles,
segments) covering them change, against the same measure between adjacent frames covered alike.

    .venv/bin/python bench/long_video.py
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LENGTHS = (48, 480)
WINDOW, OVERLAP, STEPS, THREADS = 8, 2, 2, 2
SEAM_FRAMES = 48


def setup():
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    import numpy as np
    import torch
    from models_fixtures import fixtures, golden_models_path, load_tiny_models, tiny_vae

    from fye_core.animate import DiffusersVAE

    torch.set_num_threads(THREADS)
    with np.load(golden_models_path("inputs_u8.npz"), allow_pickle=False) as data:
        reference, landmarks = data["ref_u8"], data["lmk_u8"]
    tokens = fixtures()["clip_tokens"]
    return load_tiny_models(), DiffusersVAE(tiny_vae()), tokens, reference, landmarks


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_length(num_frames: int) -> dict:
    import numpy as np

    from fye_core.animate import AnimationOptions, animate_frames
    from fye_core.image import images_to_uint8
    from fye_core.video import write_video

    models, vae, tokens, reference, landmarks = setup()
    baseline = peak_rss_mb()
    options = AnimationOptions(steps=STEPS, long_video="progressive", context_frames=WINDOW)
    start = time.perf_counter()
    chunks = animate_frames(models, vae, tokens, reference, lambda i: landmarks[np.asarray(i) % len(landmarks)],
                            num_frames, options)
    with tempfile.TemporaryDirectory() as tmp:
        count = write_video(Path(tmp) / "out.mp4", (f for chunk in chunks for f in images_to_uint8(chunk)), 25.0)
    seconds = time.perf_counter() - start
    return {"frames": count, "seconds_per_frame": seconds / count, "peak_rss_mb": peak_rss_mb(),
            "baseline_rss_mb": baseline}


def seams() -> dict:
    import numpy as np
    import torch

    from fye_core.animate import (
        AnimationOptions,
        initial_noise,
        prepare_conditioning,
        reference_conditioning,
        sample,
        sample_progressive,
    )
    from fye_core.sampling import gaussian_tile_offsets, official_windows, overlapping_windows

    models, vae, tokens, reference, landmarks = setup()
    motion = landmarks[np.arange(SEAM_FRAMES) % len(landmarks)]
    noise = initial_noise(SEAM_FRAMES, *reference.shape[:2], 0, "cpu", torch.float32)
    cond = prepare_conditioning(models, vae, tokens, reference, motion, 3.5)
    windows = {
        "official": official_windows(SEAM_FRAMES, WINDOW),
        "overlap": overlapping_windows(SEAM_FRAMES, WINDOW, OVERLAP),
        "tiles": [list(range(o, o + WINDOW)) for o in gaussian_tile_offsets(SEAM_FRAMES, WINDOW, OVERLAP)],
    }
    latents = {mode: sample(models, cond, noise, AnimationOptions(steps=STEPS, long_video=mode,
                                                                  context_frames=WINDOW, context_overlap=OVERLAP))
               for mode in windows}

    class Leaves:  # records the clips that give the final frames: the contiguous ones
        def __init__(self):
            self.clips = []

        def get(self, frames):
            return None

        def put(self, frames, clip):
            if list(frames) == list(range(frames[0], frames[-1] + 1)):
                self.clips.append(list(frames))

    leaves = Leaves()
    options = AnimationOptions(steps=STEPS, long_video="progressive", context_frames=WINDOW)
    stream = sample_progressive(models, reference_conditioning(models, vae, tokens, reference, 3.5), reference,
                                lambda i: motion[i], noise, options, store=leaves)
    latents["progressive"] = torch.stack([latent for _, latent in stream], dim=2)
    windows["progressive"] = leaves.clips

    result = {}
    for mode, clips in windows.items():
        covering = [frozenset(i for i, clip in enumerate(clips) if f in clip) for f in range(SEAM_FRAMES)]
        step = (latents[mode][0, :, 1:] - latents[mode][0, :, :-1]).abs().mean(dim=(0, 2, 3))
        boundary = torch.tensor([covering[f] != covering[f + 1] for f in range(SEAM_FRAMES - 1)])
        result[mode] = {"seam": float(step[boundary].mean()), "inside": float(step[~boundary].mean()),
                        "seams": int(boundary.sum())}
    return result


def run_stage(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seams", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.length:
        print(json.dumps(measure_length(args.length)))
        return
    if args.seams:
        print(json.dumps(seams()))
        return

    print(f"config: tiny seeded official networks + tiny VAE (golden/models), 192x128 px, window {WINDOW}, "
          f"{STEPS} DDIM steps, CFG 3.5, {THREADS} threads, fp32; progressive: keyframes evenly spaced")
    print("\nprogressive sampling, decoding and mp4 encoding")
    print(f"{'frames':>7} {'s/frame':>8} {'peak RSS MB':>12} {'after loading MB':>17}")
    runs = {length: run_stage("--length", str(length)) for length in LENGTHS}
    for length, r in runs.items():
        print(f"{length:>7} {r['seconds_per_frame']:>8.3f} {r['peak_rss_mb']:>12.0f} {r['baseline_rss_mb']:>17.0f}")
    ratio = runs[LENGTHS[-1]]["peak_rss_mb"] / runs[LENGTHS[0]]["peak_rss_mb"]
    print(f"peak RSS {LENGTHS[-1]} / {LENGTHS[0]} frames: {ratio:.2f}x")

    print(f"\nseams over {SEAM_FRAMES} frames (mean |latent difference| of adjacent frames; overlap {OVERLAP})")
    print(f"{'mode':<12} {'at seams':>9} {'inside':>9} {'ratio':>6} {'seams':>6}")
    for mode, r in run_stage("--seams").items():
        print(f"{mode:<12} {r['seam']:>9.4f} {r['inside']:>9.4f} {r['seam'] / r['inside']:>6.2f} {r['seams']:>6}")


if __name__ == "__main__":
    main()
