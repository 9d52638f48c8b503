"""Seconds per denoising step, peak memory and end-to-end time of full-size FYE sampling, with and without
each speed-up, against the plain fp32 computation.

Full-size random-weight networks (seeded, so every variant has the same weights), SD-1.5 VAE with random
weights, 256x256 px (32x32 latents), 8 frames in one window, CFG 3.5 (batch of 2), DDIM with 4 steps
(per-step variants stop after 3 of them). Random CLIP tokens stand in for the CLIP vision encoder (a one-off
~1 s, not part of the comparison). Speed-ups: the conditioning cache, ReferenceNet on the conditional item
only, chunked VAE decode, channels-last UNet convs, bf16, glibc malloc keeping freed memory (environment
variables) and, with --compile, torch.compile. Each variant runs in a fresh process so that its peak RSS is
its own; its latents after every step are compared with the plain run's in this process.

    .venv/bin/python bench/sampler.py [--compile]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED, THREADS, SIZE, FRAMES, STEPS, GUIDANCE = 0, 2, 256, 8, 4, 3.5
TOLERANCE = 1e-4
# sd-vae-ft-mse's architecture (diffusers' AutoencoderKL defaults are a one-level toy VAE)
SD15_VAE = dict(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4, sample_size=256)
# official code on this machine, same settings
OFFICIAL = {"step": 28.0, "decode_per_frame": 3.1, "total": 143.0}

PLAIN = dict(dtype="fp32", cache=False, reference_batch=2, decode_chunk=1, steps=STEPS)
ALL_ON = dict(dtype="fp32", cache=True, reference_batch=1, decode_chunk=8, steps=STEPS)
PER_STEP = dict(PLAIN, decode_chunk=0, steps=3)
# glibc malloc keeps freed memory instead of unmapping every large tensor (page faults on every reuse)
KEEP_FREED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(64 << 30)}
VARIANTS = {  # name -> spec; "plain" first: the others are compared with it
    "plain": PLAIN,
    "cache": dict(PER_STEP, cache=True),
    "reference-cond-only": dict(PER_STEP, reference_batch=1),
    "channels-last": dict(PER_STEP, cache=True, channels_last=True),
    "channels-last+nchw-groupnorm": dict(PER_STEP, cache=True, channels_last=True, contiguous_groupnorm=True),
    "decode-one-by-one": dict(decode_only=True, dtype="fp32", decode_chunk=1),
    "decode-chunk-8": dict(decode_only=True, dtype="fp32", decode_chunk=8),
    "all-on": ALL_ON,
    "all-on+malloc": dict(ALL_ON, env=KEEP_FREED),
    "all-on-bf16": dict(ALL_ON, dtype="bf16"),
    "all-on-bf16+malloc": dict(ALL_ON, dtype="bf16", env=KEEP_FREED),
}
COMPILE = {"cache+compile": dict(PER_STEP, cache=True, compile=True)}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def sd15_vae(dtype):
    import torch
    from diffusers import AutoencoderKL

    from fye_core.animate import DiffusersVAE

    torch.manual_seed(SEED + 1)
    return DiffusersVAE(AutoencoderKL(**SD15_VAE).eval().requires_grad_(False).to(dtype=dtype))


def nchw_group_norm():
    """Makes every GroupNorm normalise a contiguous (NCHW) copy of its input (channels-last is inaccurate)."""
    from torch import nn
    from torch.nn import functional as F

    nn.GroupNorm.forward = lambda self, x: F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias,
                                                        self.eps)


def measure(spec: dict, out: str) -> dict:
    import torch

    from fye_core.animate import OFFICIAL_SEED, decode_frames, initial_noise
    from fye_core.image import images_to_uint8
    from fye_core.models import build_models
    from fye_core.sampling import Conditioning, Schedule, official_windows, sample_windows

    torch.set_num_threads(THREADS)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    times: dict = {}
    clock = time.perf_counter
    if spec.get("decode_only"):  # the plain run's final latents through the VAE alone
        codec = sd15_vae(dtype)
        latents = torch.load(spec["latents_from"])["latents"][-1].to(dtype)
        start = clock()
        frames = images_to_uint8(torch.cat(list(decode_frames(codec, latents, spec["decode_chunk"]))))
        times["decode"] = clock() - start
        torch.save({"latents": [], "frames": torch.from_numpy(frames)}, out)
        return {"times": times, "peak_rss_gb": peak_rss_gb()}

    start = clock()
    torch.manual_seed(SEED)
    models = build_models(device="cpu").to(dtype=dtype)
    codec = sd15_vae(dtype)
    times["build"] = clock() - start
    models.unet.set_conditioning_cache(spec["cache"])
    if spec.get("channels_last"):
        models.unet.to(memory_format=torch.channels_last)
    if spec.get("contiguous_groupnorm"):
        nchw_group_norm()
    if spec.get("compile"):
        models.unet.compile()

    generator = torch.Generator().manual_seed(SEED)
    tokens = torch.randn(1, 257, 1024, generator=generator)
    reference = torch.randint(0, 256, (SIZE, SIZE, 3), generator=generator, dtype=torch.uint8)
    motion = torch.randint(0, 256, (FRAMES, SIZE, SIZE, 3), generator=generator, dtype=torch.uint8)
    steps, latents = [], []

    def on_step(event):
        if event["event"] == "step":
            steps.append(clock())
            latents.append(event["x"].float().clone())

    with torch.no_grad():  # fye_core.animate.prepare_conditioning, stage by stage
        start = clock()
        reference_latents = codec.encode(reference[None].float().div(255)).to(dtype)
        times["vae_encode"] = clock() - start
        start = clock()
        tokens = tokens.to(dtype)
        reference_context, context = models.encode_context(torch.cat([torch.zeros_like(tokens), tokens]))
        if spec["reference_batch"] == 2:  # official: [uncond, cond], of which only cond is used
            pair = models.referencenet.reference_features(reference_latents.repeat(2, 1, 1, 1), reference_context)
            features = [feature[1:] for feature in pair]
        else:
            features = models.referencenet.reference_features(reference_latents, reference_context[-1:])
        times["referencenet"] = clock() - start
        start = clock()
        landmarks = models.guider(motion.to(dtype).div(255).permute(3, 0, 1, 2)[None])
        times["guider"] = clock() - start
        cond = Conditioning(context=context, reference=features, landmarks=landmarks)

        noise = initial_noise(FRAMES, SIZE, SIZE, OFFICIAL_SEED, "cpu", dtype)
        schedule = Schedule(STEPS)
        schedule.timesteps = schedule.timesteps[:spec["steps"]]
        start = clock()
        x = sample_windows(models.unet, noise, cond, schedule, official_windows(FRAMES, FRAMES), GUIDANCE,
                           callback=on_step)
        times["steps"] = [end - begin for begin, end in zip([start, *steps[:-1]], steps, strict=True)]
        frames = None
        if spec["decode_chunk"]:
            start = clock()
            frames = torch.from_numpy(images_to_uint8(torch.cat(list(decode_frames(codec, x, spec["decode_chunk"])))))
            times["decode"] = clock() - start
    torch.save({"latents": latents, "frames": frames}, out)
    return {"times": times, "peak_rss_gb": peak_rss_gb()}


def run_variant(name: str, spec: dict, folder: Path) -> dict:
    out = folder / f"{name}.pt"
    done = subprocess.run([sys.executable, __file__, "--spec", json.dumps(spec), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, **spec.get("env", {})})
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "out": out, "spec": spec}


def compare(result: dict, plain: dict) -> None:
    """Max |diff| of the latents after the variant's last step and of its frames, against the plain run."""
    import torch

    ours, reference = torch.load(result["out"]), torch.load(plain["out"])
    if ours["latents"]:
        n = len(ours["latents"])
        result["diff_latents"] = float((ours["latents"][-1] - reference["latents"][n - 1]).abs().max())
    if ours["frames"] is not None:
        result["diff_pixels"] = int((ours["frames"].int() - reference["frames"].int()).abs().max())


def fmt_diff(result: dict) -> str:
    diff = result.get("diff_latents")
    if diff is None:
        return "-"
    return f"{diff:.1e} ({'ok' if diff <= TOLERANCE else 'over'} 1e-4)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the UNet (compiling takes minutes on 2 cores)")
    args = parser.parse_args()
    if args.spec:
        sys.path.insert(0, str(REPO))
        print(json.dumps(measure(json.loads(args.spec), args.out)))
        return

    import torch

    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    print(f"config: torch {torch.__version__}, {THREADS} threads ({os.cpu_count()} cpus, "
          f"amx_bf16 {'yes' if 'amx_bf16' in cpu_flags else 'no'}), full-size FYE random weights (seed {SEED}) "
          f"+ SD-1.5 VAE, {SIZE}x{SIZE} px (latents {SIZE // 8}x{SIZE // 8}), {FRAMES} frames, fp32 unless "
          f"marked, CFG {GUIDANCE} (batch 2), DDIM {STEPS} steps; random CLIP tokens (CLIP encoder ~1 s, not "
          "timed); the uncond half skipping the reference attention is built in and cannot be toggled")
    variants = {**VARIANTS, **(COMPILE if args.compile else {})}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in variants.items():
            if spec.get("decode_only"):
                spec = dict(spec, latents_from=str(results["plain"]["out"]))
            print(f"running {name} ...", flush=True)
            results[name] = run_variant(name, spec, Path(tmp))
            compare(results[name], results["plain"])

    print(f"\ndenoising step (official: {OFFICIAL['step']:.0f} s/step); first: includes warm-up, rest: mean of the "
          "later steps; max|diff|: latents after the last step vs the plain run after the same step")
    print(f"{'variant':<30} {'steps':>5} {'first s':>8} {'rest s/step':>11} {'peak RSS GB':>11}  max|diff| latents")
    for name, r in results.items():
        if "steps" not in r["times"]:
            continue
        steps = r["times"]["steps"]
        print(f"{name:<30} {len(steps):>5} {steps[0]:>8.2f} {sum(steps[1:]) / len(steps[1:]):>11.2f} "
              f"{r['peak_rss_gb']:>11.2f}  {fmt_diff(r)}")

    print("\nReferenceNet once (clip_fc contexts + features): official batch [uncond, cond] vs cond only")
    for name in ("plain", "reference-cond-only"):
        print(f"{name:<30} batch {results[name]['spec']['reference_batch']}: "
              f"{results[name]['times']['referencenet']:.2f} s")

    print(f"\nVAE decode of {FRAMES} frames (the plain run's final latents, VAE alone in its process; official "
          f"{OFFICIAL['decode_per_frame']} s/frame one at a time); max|diff| in uint8 levels vs one by one")
    for name in ("decode-one-by-one", "decode-chunk-8"):
        r = results[name]
        print(f"{name:<30} {r['times']['decode']:7.2f} s, {r['times']['decode'] / FRAMES:.2f} s/frame, peak RSS "
              f"{r['peak_rss_gb']:.2f} GB, max|diff| {r.get('diff_pixels', 0)}")

    print(f"\nend to end, {STEPS} steps (VAE encode, ReferenceNet, guider, steps, VAE decode; not the build); "
          f"official {OFFICIAL['total']:.0f} s")
    print(f"{'variant':<18} {'encode':>7} {'refnet':>7} {'guider':>7} {'steps':>7} {'decode':>7} {'total':>7} "
          f"{'vs official':>11} {'peak RSS GB':>11}  max|diff| latents / pixels vs plain")
    for name in ("plain", "all-on", "all-on+malloc", "all-on-bf16", "all-on-bf16+malloc"):
        r, t = results[name], results[name]["times"]
        stages = [t["vae_encode"], t["referencenet"], t["guider"], sum(t["steps"]), t["decode"]]
        total = sum(stages)
        print(f"{name:<18} " + " ".join(f"{s:>7.2f}" for s in stages) + f" {total:>7.2f} "
              f"{OFFICIAL['total'] / total:>10.2f}x {r['peak_rss_gb']:>11.2f}  {fmt_diff(r)} / "
              f"{r.get('diff_pixels', 0)} levels")
    official_30 = OFFICIAL["total"] + (30 - STEPS) * OFFICIAL["step"]
    print(f"\nprojected to the official 30 steps: the first step as measured, the other 29 at the mean of the later "
          f"steps (official about {official_30:.0f} s, the same projection of its figures)")
    for name in ("plain", "all-on", "all-on+malloc"):
        t = results[name]["times"]
        steps = t["steps"]
        total = (t["vae_encode"] + t["referencenet"] + t["guider"] + steps[0]
                 + 29 * sum(steps[1:]) / len(steps[1:]) + t["decode"])
        print(f"{name:<18} {total:>7.0f} s {official_30 / total:>10.2f}x")
    print("plain: conditioning cache off, ReferenceNet on [uncond, cond], decode one frame at a time; all-on: "
          "cache on, ReferenceNet on cond only, decode 8 frames per call (what fye_core.animate does); +malloc: "
          + " ".join(f"{k}={v}" for k, v in KEEP_FREED.items()) + " in the environment")


if __name__ == "__main__":
    main()
