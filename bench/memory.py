"""Peak memory and time of FYE (and HunyuanPortrait) animation, the default mode against the low-memory mode,
measured in one run.

Full-size networks with seeded random weights (FYE with the SD-1.5 VAE; the memory and time of the real models,
their outputs mean nothing), a ``--size`` px reference and one window of each ``--frames`` count, ``--steps``
steps of each FYE ``--preset``. Each (backend, mode, frames, preset) runs in a fresh process, so that its peak is
its own:

- ``default``: the official computation (both guidance passes in one batch, whole attention, 8 frames a decode;
  HunyuanPortrait: its three guidance branches in one batch);
- ``low_memory``: what ``fye animate --low-memory`` does: the passes (branches) one after the other, attention and
  VAE decode in chunks where the free memory asks for it (``fye_core.memory``), the ReferenceNet's weights
  streamed from CPU memory layer by layer (diffusers' group offloading).

Peaks are measured, not computed: on CUDA torch's allocator statistics (``max_memory_allocated``, weights
included); on a CPU the torch profiler's memory accounting (the most bytes the allocator held at once within the
phase's profiler range, from its ``[memory]`` events) plus the bytes of the weights on the device, which were
allocated before it started (the CPU is its own offload device, so for ``low_memory`` the streamed ReferenceNet
counts one layer, its largest). The phases: ``conditioning`` (VAE encode, ReferenceNet, guider), ``step`` (the
denoising steps of the window) and ``decode`` (HunyuanPortrait: the steps alone, its VAE is not built);
``peak_gb`` is the largest. A CPU has no fast fp16 kernels: ``--dtype bf16`` (the default on a CPU) has fp16's two
bytes per element and the same allocations, so it stands in for fp16 there.

    .venv/bin/python bench/memory.py [--size PX] [--frames N ...] [--steps K] [--preset P ...]
        [--backends fye hunyuan-portrait] [--device cpu|cuda] [--dtype fp16|bf16|fp32] [--json OUT]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

MODES = ("default", "low_memory")
BACKENDS = ("fye", "hunyuan-portrait")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def weight_bytes(*modules) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])


def profiled_peaks(trace: Path, phases) -> dict[str, int]:
    """The most bytes the CPU allocator held at once within each phase's range of a profiler trace."""
    events = json.loads(trace.read_text())["traceEvents"]
    memory = [(event["ts"], event["args"]["Total Allocated"]) for event in events
              if event.get("name") == "[memory]" and event["args"].get("Device Type") == 0]
    peaks = {}
    for phase in phases:
        span = next(event for event in events if event.get("name") == f"bench_phase_{phase}" and "dur" in event)
        inside = [total for ts, total in memory if span["ts"] <= ts <= span["ts"] + span["dur"]]
        peaks[phase] = max(inside, default=0)
    return peaks


def measure_phases(stages: dict, device: str, weights: int) -> dict:
    """Runs ``stages`` (phase -> function of the previous phase's result) in order: seconds and peak bytes of
    each, the weights (``weights`` bytes, allocated before) included."""
    import torch

    cuda = device.startswith("cuda")

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    seconds, peaks = {}, {}
    profiler = None if cuda else torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                        profile_memory=True)
    with torch.no_grad(), profiler or contextlib.nullcontext():
        value = None
        for phase, stage in stages.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = clock()
            with torch.profiler.record_function(f"bench_phase_{phase}"):
                value = stage(value)
            seconds[phase] = clock() - start
            if cuda:
                peaks[phase] = torch.cuda.max_memory_allocated()
    if profiler is not None:
        trace = Path(tempfile.mkdtemp()) / "trace.json"
        profiler.export_chrome_trace(str(trace))
        peaks = {phase: weights + allocated for phase, allocated in profiled_peaks(trace, stages).items()}
    return {"seconds": sum(seconds.values()), "peak_gb": max(peaks.values()) / 1e9,
            "phases": {phase: {"seconds": round(seconds[phase], 2), "peak_gb": round(peaks[phase] / 1e9, 3)}
                       for phase in stages},
            "weights_gb": round(weights / 1e9, 3)}


def measure_fye(spec: dict) -> dict:
    """FYE in one mode: conditioning, the steps of one window, the decode."""
    import torch
    from speed import full_size_inputs

    from fye_core.animate import (
        AnimationOptions,
        decode_frames,
        initial_noise,
        memory_options,
        prepare_conditioning,
        sample,
    )
    from fye_core.memory import attention_chunks, device_free_bytes, offload_weights

    device, size = spec["device"], spec["size"]
    dtype = getattr(torch, DTYPES[spec["dtype"]])
    low = spec["mode"] == "low_memory"
    models, codec, tokens, reference, motion = full_size_inputs(size, spec["frames"], "cpu" if low else device,
                                                                dtype)
    codec.vae.to(device)
    if low:
        offload_weights(models, device)
    options = AnimationOptions(preset=spec["preset"], steps=spec["steps"], context_frames=spec["frames"])
    options = memory_options(options, "low" if low else "default", device_free_bytes(device), size, size, dtype)
    weights = weight_bytes(codec.vae, *models.networks().values())
    if low and not device.startswith("cuda"):  # the streamed ReferenceNet holds one layer on the device at a time
        weights += max(weight_bytes(m) for m in models.referencenet.modules() if not list(m.children())) \
            - weight_bytes(models.referencenet)
    stages = {
        "conditioning": lambda _: prepare_conditioning(models, codec, tokens, reference, motion, options.guidance),
        "step": lambda cond: sample(models, cond, initial_noise(len(motion), size, size, options.seed, device, dtype),
                                    options),
        "decode": lambda latents: torch.cat(list(decode_frames(codec, latents, options.decode_chunk))),
    }
    with attention_chunks(models.networks(), models.unet, options.memory.attention_chunk):
        result = measure_phases(stages, device, weights)
    return {**result, "plan": options.memory.describe()}


def measure_hunyuan(spec: dict) -> dict:
    """HunyuanPortrait in one mode: the steps of one window (the UNet; its VAE is not built), the three guidance
    branches in one batch (default) or one after the other (low memory)."""
    import torch
    from hunyuan import SEED, materialise, random_conditioning

    from fye_core.hunyuan.config import INFERENCE
    from fye_core.hunyuan.loader import build_hunyuan_models
    from fye_core.hunyuan.sampler import HunyuanConditioning, guidance_scales, karras_schedule, sample_windows

    device, size, frames = spec["device"], spec["size"], spec["frames"]
    dtype = getattr(torch, DTYPES[spec["dtype"]])
    models = build_hunyuan_models()  # meta
    generator = torch.Generator().manual_seed(SEED)
    for network in (models.unet, models.pose_guider):
        materialise(network.eval(), dtype, generator)
        network.to(device)
    latent = size // 8
    cond = random_conditioning(models, size, frames, generator)
    cond = HunyuanConditioning(*(t.to(device, dtype) for t in (cond.image_tokens, cond.motion_tokens,
                                                               cond.cond_latent, cond.pose_feature)),
                               time_ids=cond.time_ids.to(device))
    sigmas, timesteps = karras_schedule(INFERENCE.num_inference_steps)
    sigmas, timesteps = sigmas[:spec["steps"] + 1], timesteps[:spec["steps"]]
    scale = guidance_scales(INFERENCE.appearance_guidance, INFERENCE.appearance_guidance, spec["steps"])
    x = (torch.randn(1, frames, 4, latent, latent, generator=generator) * sigmas[0]).to(device, dtype)
    stages = {"step": lambda _: sample_windows(models.unet, x, cond, sigmas, timesteps, scale, scale, window=frames,
                                               overlap=0, batched=spec["mode"] == "default")}
    result = measure_phases(stages, device, weight_bytes(models.unet, models.pose_guider))
    return {**result, "plan": "branches batched" if spec["mode"] == "default" else "branches one after the other"}


def measure(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    return measure_hunyuan(spec) if spec["backend"] == "hunyuan-portrait" else measure_fye(spec)


def run(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--spec", json.dumps(spec)], capture_output=True, text=True,
                          cwd=REPO, env=os.environ)
    if done.returncode:
        raise RuntimeError(f"{spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="reference size in px (square)")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 24], help="window lengths, one window each")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps per clip")
    parser.add_argument("--preset", nargs="+", default=["official"], help="FYE speed presets")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=None,
                        help="default both on CUDA, fye on a CPU (HunyuanPortrait's full-size UNet at 512x512 takes "
                             "hours there)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default=None,
                        help="default fp16 on CUDA, bf16 (fp16's size) on a CPU")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spec:
        print(json.dumps(measure(json.loads(args.spec))))
        return
    dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "bf16")
    args.backends = args.backends or (list(BACKENDS) if args.device.startswith("cuda") else ["fye"])
    config = {"backends": args.backends, "size": args.size, "frames": args.frames, "steps": args.steps,
              "presets": args.preset,
              "device": args.device, "dtype": dtype, "threads": args.threads, "weights": "full-size, seeded random",
              "measured": "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else
              "torch profiler [memory] events + weight bytes"}
    runs = []
    for backend in args.backends:
        for preset in args.preset if backend == "fye" else ["released"]:
            for frames in args.frames:
                for mode in MODES:
                    spec = {"backend": backend, "mode": mode, "frames": frames, "preset": preset, "size": args.size,
                            "steps": args.steps, "device": args.device, "dtype": dtype, "threads": args.threads}
                    result = {**spec, **run(spec)}
                    runs.append(result)
                    print(f"{backend:<16} {preset:<9} {frames:>3} frames {mode:<11} peak {result['peak_gb']:6.2f} GB "
                          f"{result['seconds']:8.1f} s  " + "  ".join(
                              f"{phase} {value['peak_gb']:.2f} GB {value['seconds']:.1f} s"
                              for phase, value in result["phases"].items()), flush=True)
    first = args.backends[0]
    main_runs = [r for r in runs if r["backend"] == first and r["frames"] == max(args.frames)
                 and r["preset"] in (args.preset[0], "released")]
    modes = {r["mode"]: {"peak_gb": round(r["peak_gb"], 3), "seconds": round(r["seconds"], 2)} for r in main_runs}
    results = {"modes": modes, "config": config, "runs": runs,
               "low_memory_time_ratio": round(modes["low_memory"]["seconds"] / modes["default"]["seconds"], 3)}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
