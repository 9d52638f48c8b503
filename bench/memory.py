"""Peak memory and time of FYE animation, the default mode against the low-memory mode, measured in one run.

Full-size FYE networks with seeded random weights and the SD-1.5 VAE (the memory and time of the real model; their
outputs mean nothing), a ``--size`` px reference and one window of each ``--frames`` count, ``--steps`` steps of
each ``--preset``. Each (mode, frames, preset) runs in a fresh process, so that its peak is its own:

- ``default``: the official computation (both guidance passes in one batch, whole attention, 8 frames a decode);
- ``low_memory``: what ``fye animate --low-memory`` does: the passes one after the other, attention and VAE decode
  in chunks (``fye_core.memory``), the UNet's and ReferenceNet's weights streamed from CPU memory (diffusers'
  group offloading; on a CPU the weights stay where they are and only the hooks run).

Peaks are measured, not computed: on CUDA torch's allocator statistics (``max_memory_allocated``, weights
included); on a CPU the torch profiler's memory accounting (the most bytes the allocator held at once during the
phase, from its ``[memory]`` events) plus the bytes of the weights on the device, which were allocated before it
started (the CPU is its own offload device, so for ``low_memory`` the streamed ReferenceNet counts one layer, its
largest). The
phases: ``conditioning`` (VAE encode, ReferenceNet, guider), ``step`` (the denoising steps of the window) and
``decode``; ``peak_gb`` is the whole clip's. A CPU has no fast fp16 kernels: ``--dtype bf16`` (the default on a
CPU) has fp16's two bytes per element and the same allocations, so it stands in for fp16 there.

    .venv/bin/python bench/memory.py [--size PX] [--frames N ...] [--steps K] [--preset P ...] [--device cpu|cuda]
        [--dtype fp16|bf16|fp32] [--json OUT]
"""
from __future__ import annotations

import argparse
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
PHASES = ("conditioning", "step", "decode")


def weight_bytes(*modules) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])


def profiled_peak(trace: Path, ranges: dict[str, tuple[float, float]]) -> dict[str, int]:
    """The most bytes the CPU allocator held at once within each named time range of a profiler trace."""
    events = json.loads(trace.read_text())["traceEvents"]
    memory = [(event["ts"], event["args"]["Total Allocated"]) for event in events
              if event.get("name") == "[memory]" and event["args"].get("Device Type") == 0]
    peaks = {}
    for name, (start, end) in ranges.items():
        inside = [total for ts, total in memory if start <= ts <= end]
        peaks[name] = max(inside, default=0)
    return peaks


def measure(spec: dict) -> dict:
    """One mode, frame count and preset in this process: seconds and peak bytes per phase."""
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

    device, cuda = spec["device"], spec["device"].startswith("cuda")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec["dtype"]]
    torch.set_num_threads(spec["threads"])
    low = spec["mode"] == "low_memory"
    models, codec, tokens, reference, motion = full_size_inputs(spec["size"], spec["frames"], "cpu" if low else device,
                                                                dtype)
    codec.vae.to(device)
    if low:
        offload_weights(models, device)
    options = AnimationOptions(preset=spec["preset"], steps=spec["steps"], context_frames=spec["frames"])
    options = memory_options(options, "low" if low else "default", device_free_bytes(device), spec["size"],
                             spec["size"], dtype)
    weights = weight_bytes(codec.vae, *models.networks().values())
    if low and not cuda:  # the streamed ReferenceNet holds one layer on the device at a time
        weights += max(weight_bytes(m) for m in models.referencenet.modules() if not list(m.children())) \
            - weight_bytes(models.referencenet)

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    seconds, peaks, ranges = {}, {}, {}
    trace = Path(tempfile.mkdtemp()) / "trace.json"
    profiler = None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
        profiler.__enter__()
    with torch.no_grad(), attention_chunks(models.networks(), models.unet, options.memory.attention_chunk):
        stages = {
            "conditioning": lambda _: prepare_conditioning(models, codec, tokens, reference, motion,
                                                           options.guidance),
            "step": lambda cond: sample(models, cond, initial_noise(len(motion), spec["size"], spec["size"],
                                                                    options.seed, device, dtype), options),
            "decode": lambda latents: torch.cat(list(decode_frames(codec, latents, options.decode_chunk))),
        }
        value = None
        for phase, stage in stages.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = clock()
            value = stage(value)
            end = clock()
            seconds[phase] = end - start
            if cuda:
                peaks[phase] = torch.cuda.max_memory_allocated()
            ranges[phase] = (start, end)
    if profiler is not None:
        profiler.__exit__(None, None, None)
        # the trace's clock is microseconds since the profiler's own start: map perf_counter onto it
        profiler.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
        first = min(event["ts"] for event in events if event.get("name") == "[memory]")
        origin = ranges["conditioning"][0]
        shifted = {name: ((start - origin) * 1e6 + first - 1, (end - origin) * 1e6 + first + 1e6)
                   for name, (start, end) in ranges.items()}
        allocated = profiled_peak(trace, shifted)
        peaks = {phase: weights + allocated[phase] for phase in PHASES}
    return {"seconds": sum(seconds.values()), "peak_gb": max(peaks.values()) / 1e9,
            "phases": {phase: {"seconds": round(seconds[phase], 2), "peak_gb": round(peaks[phase] / 1e9, 3)}
                       for phase in PHASES},
            "weights_gb": round(weights / 1e9, 3), "plan": options.memory.describe()}


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
    parser.add_argument("--preset", nargs="+", default=["official"], help="speed presets")
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
    config = {"size": args.size, "frames": args.frames, "steps": args.steps, "presets": args.preset,
              "device": args.device, "dtype": dtype, "threads": args.threads, "weights": "full-size, seeded random",
              "measured": "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else
              "torch profiler [memory] events + weight bytes"}
    runs = []
    for preset in args.preset:
        for frames in args.frames:
            for mode in MODES:
                spec = {"mode": mode, "frames": frames, "preset": preset, "size": args.size, "steps": args.steps,
                        "device": args.device, "dtype": dtype, "threads": args.threads}
                result = {**spec, **run(spec)}
                runs.append(result)
                print(f"{preset:<9} {frames:>3} frames {mode:<11} peak {result['peak_gb']:6.2f} GB  "
                      f"{result['seconds']:8.1f} s  " + "  ".join(
                          f"{phase} {value['peak_gb']:.2f} GB {value['seconds']:.1f} s"
                          for phase, value in result["phases"].items()), flush=True)
    main_runs = [r for r in runs if r["frames"] == max(args.frames) and r["preset"] == args.preset[0]]
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
