"""Speed presets and single savings side by side, one run: UNet evaluations, seconds per clip and peak memory
on full-size networks, fidelity to the ``official`` output on the test model trained here.

For every variant (the presets, each saving alone, and plain DDIM with as many UNet evaluations as each faster
preset):
- full-size FYE networks with seeded random weights and the SD-1.5 VAE (the cost of the real model; their
  outputs mean nothing), ``--size`` px (default 256 on a CPU, 512 on a GPU) and ``--frames`` frames (default
  8 / 24) in one window: seconds per clip end to end (VAE encode, ReferenceNet, guider, sampling, decode; not
  the build), peak memory (CPU: peak RSS of the variant's own process; GPU: torch's peak allocation), and,
  with ``--device cuda``, model FLOP utilisation (FLOPs counted by torch's FlopCounterMode on a second run,
  over the timed seconds, against the GPU's dense fp16/bf16 peak);
- the test model (``bench/test_model.py``: a small FYE trained here, whose denoising paths mean something),
  8 held-out frames of an identity it was trained on, in fp32: PSNR and SSIM of the decoded frames against the
  ``official`` output (same seed and inputs), and temporal flicker (mean absolute frame-to-frame difference,
  in 0..255 levels) beside the official's.
``speedup`` is the end-to-end wall-clock ratio against ``official`` on the full-size networks in the same run.
Each full-size variant runs in a fresh process so that its peak memory is its own.

    .venv/bin/python bench/speed.py [--size PX] [--frames N] [--device cpu|cuda] [--json OUT]
    .venv/bin/python bench/speed.py --test-model-dir      # builds the test model if needed, prints its folder
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

SEED, GUIDANCE = 0, 3.5
TEST_FRAMES = 8
PRESET_NAMES = ("official", "fast", "fastest")
# sd-vae-ft-mse's architecture (diffusers' AutoencoderKL defaults are a one-level toy VAE)
SD15_VAE = dict(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4, sample_size=256)
# dense fp16/bf16 tensor-core peaks (FLOP/s) by device name, for the utilisation figure
GPU_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "4090": 165e12,
                  "3090": 71e12, "A10": 125e12, "T4": 65e12}


def variants() -> dict[str, dict]:
    """Name -> AnimationOptions overrides: the presets, then each saving of the faster presets alone."""
    from fye_core.sampling import PRESETS

    fast = PRESETS["fast"]
    return {
        "official": {"preset": "official"},
        "fast": {"preset": "fast"},
        "fastest": {"preset": "fastest"},
        # the solvers at the fast preset's step count (the fastest's solver and steps are that preset alone)
        **{f"solver {solver} {fast.steps} steps": {"solver": solver, "steps": fast.steps}
           for solver in ("unipc", "dpmpp_2m", "euler")},
        "cfg interval 0-0.5 + reuse": {"cfg_interval": (0.0, 0.5), "cfg_reuse": True},
        "cfg interval 0-0.5": {"cfg_interval": (0.0, 0.5)},
        f"feature cache every {fast.cache.interval}": cache_overrides(fast.cache),
        "feature cache every 3": cache_overrides(fast.cache, interval=3),
    }


def cache_overrides(plan, **changes) -> dict:
    values = {"interval": plan.interval, "order": plan.order, "depth": plan.depth, "warmup": plan.warmup, **changes}
    return {f"cache_{name}": value for name, value in values.items()}


def unet_evaluations(overrides: dict, windows: int = 1) -> tuple[int, int]:
    """(UNet evaluations, of which partial) of a run, one per batch item per window, from its plan."""
    from fye_core.animate import AnimationOptions

    options = AnimationOptions(**overrides)
    speed, guidance = options.speed, options.guidance_plan
    full = partial = 0
    seen = set()
    for step in range(speed.steps):
        items = ("uncond", "cond") if guidance.unconditional(step, speed.steps) else ("cond",)
        cached = speed.cache.enabled and set(items) <= seen and not speed.cache.full(step, speed.steps)
        seen |= set(items)
        full += 0 if cached else len(items) * windows
        partial += len(items) * windows if cached else 0
    return full + partial, partial


def naive_variants(chosen: dict[str, dict]) -> dict[str, dict]:
    """Plain DDIM with guidance on every step and as many UNet evaluations as each faster preset."""
    out = {}
    for preset in ("fast", "fastest"):
        evaluations, _ = unet_evaluations(chosen[preset])
        steps = max(1, round(evaluations / 2))
        out[f"ddim {steps} steps (= {preset}'s evaluations)"] = {"steps": steps}
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def full_size_inputs(size: int, frames: int, device: str, dtype):
    """Seeded full-size networks (random weights), SD-1.5 VAE, reference, landmark frames and CLIP tokens."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL

    from fye_core.animate import DiffusersVAE
    from fye_core.models import build_models

    torch.manual_seed(SEED)
    models = build_models(device="cpu").to(device=device, dtype=dtype)
    for network in models.networks().values():
        network.eval().requires_grad_(False)
    torch.manual_seed(SEED + 1)
    codec = DiffusersVAE(AutoencoderKL(**SD15_VAE).eval().requires_grad_(False).to(device=device, dtype=dtype))
    rng = np.random.default_rng(SEED)
    reference = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    motion = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    tokens = torch.from_numpy(rng.standard_normal((1, 257, 1024), dtype=np.float32))
    return models, codec, tokens, reference, motion


def test_model_inputs(variant: str):
    """The test model (built if needed) and 8 held-out frames of a trained identity, in fp32 on the CPU."""
    import test_model

    from fye_core.animate import load_diffusers_vae
    from fye_core.models.bundle import load_fye_models, locate_model_files
    from fye_core.models.image_encoder import clip_pixel_values, encode_clip_tokens, load_clip_image_encoder

    files = locate_model_files(test_model.test_model_dir(variant))
    held = test_model.held_out(variant, frames=TEST_FRAMES)
    tokens = encode_clip_tokens(load_clip_image_encoder(files.clip), clip_pixel_values(held.reference))
    return load_fye_models(files.fye), load_diffusers_vae(files.vae), tokens, held.reference, held.landmarks


def run_clip(models, codec, tokens, reference, motion, overrides: dict, device: str) -> tuple[dict, object]:
    """One clip end to end; its stage times and the uint8 frames."""
    import torch

    from fye_core.animate import AnimationOptions, decode_frames, initial_noise, prepare_conditioning, sample
    from fye_core.image import images_to_uint8

    def clock():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    options = AnimationOptions(**overrides)
    times = {}
    with torch.no_grad():
        start = clock()
        cond = prepare_conditioning(models, codec, tokens, reference, motion, options.guidance)
        times["conditioning"] = clock() - start
        noise = initial_noise(len(motion), *reference.shape[:2], options.seed, models.unet.device, models.unet.dtype)
        start = clock()
        latents = sample(models, cond, noise, options)
        times["sampling"] = clock() - start
        start = clock()
        frames = images_to_uint8(torch.cat(list(decode_frames(codec, latents, options.decode_chunk))))
        times["decode"] = clock() - start
    times["total"] = sum(times.values())
    return times, frames


def measure_full_size(spec: dict) -> dict:
    """A fresh process's run of one variant on the full-size networks (and its FLOPs on a GPU)."""
    import torch

    device = spec["device"]
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec["dtype"]]
    torch.set_num_threads(spec["threads"])
    inputs = full_size_inputs(spec["size"], spec["frames"], device, dtype)
    if device.startswith("cuda"):
        run_clip(*inputs, {"steps": 1}, device)  # warm-up: kernels, allocator
        torch.cuda.reset_peak_memory_stats()
    times, _ = run_clip(*inputs, spec["overrides"], device)
    result = {"times": times}
    if device.startswith("cuda"):
        result["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            run_clip(*inputs, spec["overrides"], device)
        result["flops"] = counter.get_total_flops()
    else:
        result["peak_gb"] = peak_rss_gb()
    return result


def run_full_size(name: str, spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--spec", json.dumps(spec)], capture_output=True, text=True,
                          cwd=REPO, env=os.environ)
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fidelity(frames, official) -> dict:
    """PSNR/SSIM against the official output and both videos' temporal flicker."""
    import numpy as np

    from fye_core.eval.metrics import video_metrics

    def flicker(video) -> float:
        return float(np.abs(np.diff(video.astype(np.float64), axis=0)).mean())

    metrics = video_metrics(frames, official)
    return {"psnr": metrics["psnr"], "ssim": metrics["ssim"], "flicker": flicker(frames),
            "flicker_official": flicker(official)}


def write_picture(path: Path, variant: str, outputs: list) -> None:
    """The reference and the real held-out frames beside it, then each output under a blank, every other frame
    (the layout of the test model's learned.png)."""
    import numpy as np
    import test_model
    from PIL import Image

    held = test_model.held_out(variant, frames=TEST_FRAMES)
    blank = np.zeros_like(held.reference)
    rows = [[held.reference, *held.frames[::2]], *([blank, *video[::2]] for video in outputs)]
    Image.fromarray(np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)).save(path)


def gpu_peak_flops(device: str) -> float | None:
    import torch

    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_FLOPS.items() if key in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None, help="full-size networks: side in px (CPU 256, GPU 512)")
    parser.add_argument("--frames", type=int, default=None, help="full-size networks: frames (CPU 8, GPU 24)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                        help="full-size networks' dtype (CPU fp32, GPU fp16); the test model is always fp32")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--variant", choices=("full", "small"), default="full", help="test model variant")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants (names as printed)")
    parser.add_argument("--full-size", nargs="*", default=None,
                        help="time only these variants on the full-size networks (official always; default all; "
                             "none: fidelity on the test model only)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--picture", type=Path, default=None,
                        help="write a PNG here: the reference and the real held-out frames, then the test model's "
                             "official, fast and fastest outputs (every other frame)")
    parser.add_argument("--test-model-dir", action="store_true",
                        help="build the test model if needed and print its models folder (last line)")
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spec:
        print(json.dumps(measure_full_size(json.loads(args.spec))))
        return
    if args.test_model_dir:
        import test_model

        print(test_model.test_model_dir(args.variant))
        return

    import torch

    gpu = args.device == "cuda"
    size, frames = args.size or (512 if gpu else 256), args.frames or (24 if gpu else 8)
    dtype = args.dtype or ("fp16" if gpu else "fp32")
    torch.set_num_threads(args.threads)
    chosen = variants()
    chosen.update(naive_variants(chosen))
    if args.only:
        chosen = {name: overrides for name, overrides in chosen.items() if name in args.only or name == "official"}
    config = {"device": torch.cuda.get_device_name() if gpu else f"cpu ({args.threads} threads of {os.cpu_count()})",
              "torch": torch.__version__, "full_size": {"size": size, "frames": frames, "dtype": dtype,
                                                        "weights": f"random, seed {SEED}", "windows": 1},
              "test_model": {"variant": args.variant, "frames": TEST_FRAMES, "dtype": "fp32"},
              "guidance": GUIDANCE, "variants": chosen}
    print(f"config: {json.dumps(config)}", flush=True)

    results = {name: {"evaluations": unet_evaluations(overrides)[0],
                      "partial_evaluations": unet_evaluations(overrides)[1]} for name, overrides in chosen.items()}
    test_inputs = test_model_inputs(args.variant)
    official, videos = None, {}
    for name, overrides in chosen.items():
        start = time.perf_counter()
        _, video = run_clip(*test_inputs, overrides, "cpu")
        official = video if official is None else official
        videos[name] = video
        results[name].update(fidelity(video, official))
        results[name]["test_model_seconds"] = time.perf_counter() - start
        print(f"test model  {name:<40} PSNR {results[name]['psnr']:6.2f} dB  SSIM {results[name]['ssim']:.4f}",
              flush=True)
    if args.picture:
        write_picture(args.picture, args.variant, [videos[name] for name in PRESET_NAMES if name in videos])
    timed = chosen if args.full_size is None else {
        name: overrides for name, overrides in chosen.items() if name in args.full_size or name == "official"}
    if args.full_size != []:
        for name, overrides in timed.items():
            spec = {"device": args.device, "dtype": dtype, "size": size, "frames": frames, "threads": args.threads,
                    "overrides": overrides}
            measured = run_full_size(name, spec)
            results[name].update(seconds=measured["times"]["total"], stages=measured["times"],
                                 peak_gb=measured["peak_gb"])
            if "flops" in measured:
                peak = gpu_peak_flops(args.device)
                results[name]["tflops"] = measured["flops"] / measured["times"]["total"] / 1e12
                results[name]["mfu"] = None if peak is None else measured["flops"] / measured["times"]["total"] / peak
            results[name]["speedup"] = results["official"]["seconds"] / results[name]["seconds"]
            print(f"full size   {name:<40} {measured['times']['total']:8.1f} s  x{results[name]['speedup']:.2f}",
                  flush=True)

    print(f"\n{'variant':<40} {'evals':>9} {'s/clip':>8} {'speedup':>7} {'peak GB':>7} {'PSNR dB':>7} {'SSIM':>6} "
          f"{'flicker':>7}" + (f" {'MFU':>5}" if gpu else ""))
    for name, r in results.items():
        evals = f"{r['evaluations']}" + (f"({r['partial_evaluations']}p)" if r["partial_evaluations"] else "")
        timing = (f"{r['seconds']:8.1f} {r['speedup']:6.2f}x {r['peak_gb']:7.2f}" if "seconds" in r
                  else f"{'-':>8} {'-':>7} {'-':>7}")
        print(f"{name:<40} {evals:>9} {timing} {r['psnr']:7.2f} {r['ssim']:6.4f} {r['flicker']:7.2f}"
              + (f" {r['mfu']:5.1%}" if gpu and r.get("mfu") is not None else ""))
    print(f"official flicker {results['official']['flicker']:.2f} levels; evals: UNet evaluations (batch items x "
          "windows), p = of them partial (outer levels only, deep features forecast)")
    if args.json:  # identical frames (official against itself) have no finite PSNR: null
        presets = {name: {key: None if value == float("inf") else value for key, value in r.items()}
                   for name, r in results.items()}
        args.json.write_text(json.dumps({"presets": presets, "config": config}, indent=1, default=str))


if __name__ == "__main__":
    main()
