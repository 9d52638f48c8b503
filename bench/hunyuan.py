"""Seconds per denoising step and peak memory of HunyuanPortrait sampling with the full-size UNet: the released
sampler with the temporal context folded (our default: no copies) and repeated for every position (as the released
code computes it), and the savings against it: the guidance interval (the three branches on the first half of the
steps, the cond branch alone with the reused difference after) and the feature cache (fixed windows).

The full-size UNet (SVD-xt with the motion IP weights, 1.58 B parameters) and pose guider are built on the meta
device and materialised with seeded random values (normal, std 1/sqrt(fan in); norms 1, biases 0) directly in the
benchmarked dtype. A step is one Euler step of ``fye_core.hunyuan.sampler.sample_windows`` over a clip of exactly
one window: one UNet call on 3 x FRAMES frames (FRAMES with the cond branch alone). Memory is the process's peak
resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``: weights, activations and the allocator's cache;
tracemalloc does not see torch's allocations), next to the resident set after the build; each variant runs in a
fresh process so that its peak is its own. The savings need a few steps to show: the cache plan computes the whole
UNet on the first step, every second step after it and the last one (interval 2, warm-up 1), so 6 steps forecast 2.

    .venv/bin/python bench/hunyuan.py [--size 128] [--frames 8] [--steps 2] [--threads N] [--dtypes fp32 bf16]
        [--variants folded repeated cfg-interval cache cfg+cache]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 0
CFG_INTERVAL = (0.0, 0.5)  # with the difference reused after
CACHE = {"interval": 2, "order": 1, "depth": 1, "warmup": 1}
# name -> (temporal context folded, guidance interval and reuse, feature cache); the cache variants use fixed
# windows (shift offset 0), the others the released shift
VARIANTS = {"folded": (True, None, None), "repeated": (False, None, None), "cfg-interval": (True, CFG_INTERVAL, None),
            "cache": (True, None, CACHE), "cfg+cache": (True, CFG_INTERVAL, CACHE)}


def rss_gb() -> float:
    """The resident set now (/proc/self/statm), in GB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e9


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def materialise(module, dtype, generator) -> None:
    """Meta-device parameters -> seeded random values on the CPU in ``dtype``, without an fp32 copy first."""
    import torch

    torch.nn.Module.to(module, dtype=dtype)  # still on meta: no memory yet
    module.to_empty(device="cpu")
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if parameter.ndim >= 2:
                parameter.normal_(0, 1 / math.sqrt(parameter[0].numel()), generator=generator)
            elif name.endswith("weight"):
                parameter.fill_(1)
            else:
                parameter.zero_()


def random_conditioning(models, size: int, frames: int, generator):
    """Seeded random tokens and condition latents of the released shapes, with the pose guider's features of a
    ``size`` px frame: what one window of ``frames`` frames is sampled with."""
    import torch

    from fye_core.hunyuan.config import INFERENCE
    from fye_core.hunyuan.models import time_ids
    from fye_core.hunyuan.sampler import HunyuanConditioning

    latent, width = size // 8, models.unet.config.cross_attention_dim
    with torch.no_grad():
        return HunyuanConditioning(image_tokens=torch.randn(1, 64, width, generator=generator),
                                   motion_tokens=torch.randn(1, frames, 64, width, generator=generator),
                                   cond_latent=torch.randn(1, 4, latent, latent, generator=generator),
                                   pose_feature=models.pose_feature(size, size),
                                   time_ids=time_ids(INFERENCE.fps, INFERENCE.motion_bucket_id,
                                                     INFERENCE.noise_aug_strength))


def measure(spec: dict) -> dict:
    import torch

    from fye_core.hunyuan.config import INFERENCE
    from fye_core.hunyuan.loader import build_hunyuan_models
    from fye_core.hunyuan.sampler import guidance_scales, karras_schedule, sample_windows
    from fye_core.sampling.cache import CachePlan

    torch.set_num_threads(spec["threads"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    start = time.perf_counter()
    models = build_hunyuan_models()  # meta
    generator = torch.Generator().manual_seed(SEED)
    for network in (models.unet, models.pose_guider):
        materialise(network.eval(), dtype, generator)
    fold, interval, cache = VARIANTS[spec["variant"]]
    models.unet.set_temporal_context_folding(fold)
    build_seconds = time.perf_counter() - start
    build_rss = rss_gb()

    size, frames = spec["size"], spec["frames"]
    latent = size // 8
    cond = random_conditioning(models, size, frames, generator)
    sigmas, timesteps = karras_schedule(INFERENCE.num_inference_steps)
    steps = spec["steps"]
    sigmas, timesteps = sigmas[:steps + 1], timesteps[:steps]
    scale = guidance_scales(INFERENCE.appearance_guidance, INFERENCE.appearance_guidance, steps)
    x = torch.randn(1, frames, 4, latent, latent, generator=generator) * sigmas[0]
    ends, items, partial = [], [], []

    def record(event):
        if event["event"] == "step":
            ends.append(time.perf_counter())
        else:
            items.append(len(event["branches"]))
            partial.append(event["partial"])

    savings = {"cfg_interval": interval or (0.0, 1.0), "cfg_reuse": interval is not None,
               "cache": CachePlan(**cache) if cache else None}
    start = time.perf_counter()
    with torch.no_grad():
        sample_windows(models.unet, x, cond, sigmas, timesteps, scale, scale, window=frames, overlap=0,
                       shift_offset=0 if cache else INFERENCE.shift_offset, callback=record, **savings)
    step_seconds = [end - begin for begin, end in zip([start, *ends[:-1]], ends, strict=True)]
    return {"build_seconds": build_seconds, "build_rss_gb": build_rss, "step_seconds": step_seconds,
            "peak_rss_gb": peak_rss_gb(), "unet_items": items, "partial": partial}


def run_variant(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--spec", json.dumps(spec)], capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"{spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels (a multiple of 64)")
    parser.add_argument("--frames", type=int, default=8, help="frames per window (released 25)")
    parser.add_argument("--steps", type=int, default=2, help="Euler steps; the first includes warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS),
                        help="folded: the released sampler (the baseline of the savings); repeated: its temporal "
                             "context as the released code computes it; cfg-interval, cache, cfg+cache: the savings")
    args = parser.parse_args()
    if args.spec:
        sys.path.insert(0, str(REPO))
        print(json.dumps(measure(json.loads(args.spec))))
        return

    import torch

    threads = args.threads or torch.get_num_threads()
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    print(f"config: torch {torch.__version__}, {threads} threads ({os.cpu_count()} cpus, amx_bf16 "
          f"{'yes' if 'amx_bf16' in cpu_flags else 'no'}); full-size HunyuanPortrait UNet (SVD-xt + motion IP "
          f"weights) and pose guider, seeded random weights (seed {SEED}); {args.size}x{args.size} px (latents "
          f"{args.size // 8}x{args.size // 8}), one window of {args.frames} frames, three-branch CFG (UNet batch "
          f"{3 * args.frames} frames), Karras/Euler, first {args.steps} of 25 steps; peak memory = peak RSS "
          "(resource.getrusage ru_maxrss) of a fresh process per variant; savings: cfg-interval = the three "
          f"branches on steps in {CFG_INTERVAL[0]:g}-{CFG_INTERVAL[1]:g} of the run, the cond branch with the "
          f"reused difference after; cache = feature cache {CACHE}, shift offset 0")
    rows = []
    for dtype in args.dtypes:
        for variant in args.variants:
            spec = dict(dtype=dtype, variant=variant, size=args.size, frames=args.frames, steps=args.steps,
                        threads=threads)
            print(f"running {dtype} {variant} ...", flush=True)
            rows.append((spec, run_variant(spec)))
    print(f"\n{'dtype':<5} {'variant':<12} {'build s':>7} {'RSS after build GB':>18} {'first step s':>12} "
          f"{'later steps s/step':>18} {'run s':>7} {'vs folded':>9} {'UNet items':>10} {'forecast':>8} "
          f"{'peak RSS GB':>11} {'peak - build GB':>15}")
    baseline = {spec["dtype"]: sum(r["step_seconds"]) for spec, r in rows if spec["variant"] == "folded"}
    for spec, r in rows:
        steps = r["step_seconds"]
        later = f"{sum(steps[1:]) / len(steps[1:]):.2f}" if len(steps) > 1 else "-"
        total = sum(steps)
        ratio = f"{total / baseline[spec['dtype']]:.2f}x" if spec["dtype"] in baseline else "-"
        print(f"{spec['dtype']:<5} {spec['variant']:<12} {r['build_seconds']:>7.1f} {r['build_rss_gb']:>18.2f} "
              f"{steps[0]:>12.2f} {later:>18} {total:>7.1f} {ratio:>9} {sum(r['unet_items']):>10} "
              f"{sum(r['partial']):>8} {r['peak_rss_gb']:>11.2f} {r['peak_rss_gb'] - r['build_rss_gb']:>15.2f}")
        print(f"      seconds per step: {' '.join(f'{s:.2f}' for s in steps)}")


if __name__ == "__main__":
    main()
