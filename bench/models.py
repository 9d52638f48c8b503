"""Time and peak memory of building the full-size FYE networks and of loading a full-size checkpoint.

Each measurement runs in a fresh process so that its peak RSS is its own. The checkpoint is our single
safetensors file (fp16) written from randomly initialised full-size networks into a temporary folder.

    .venv/bin/python bench/models.py [--keep DIR]
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


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def stage(name: str, checkpoint: str) -> dict:
    import torch

    from fye_core.models import build_models, load_fye, save_fye

    baseline = peak_rss_bytes()
    start = time.perf_counter()
    if name == "build-meta":
        build_models()
    elif name == "build-cpu":
        build_models(device="cpu")
    elif name == "write":
        save_fye(build_models(device="cpu").to(dtype=torch.float16), checkpoint, torch.float16)
    elif name in ("load", "load+read"):
        models = load_fye(checkpoint)
        assert not any(p.is_meta for m in models.networks().values() for p in m.parameters())
        if name == "load+read":  # safetensors maps the file lazily: touch every weight once
            sum(float(p.float().sum()) for m in models.networks().values() for p in m.parameters())
    seconds = time.perf_counter() - start
    return {"stage": name, "seconds": round(seconds, 2), "peak_rss_gb": round(peak_rss_bytes() / 1e9, 3),
            "baseline_rss_gb": round(baseline / 1e9, 3)}


def run_stage(name: str, checkpoint: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--stage", name, "--checkpoint", str(checkpoint)],
                          capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, help="write the checkpoint here and keep it")
    args = parser.parse_args()
    if args.stage:
        sys.path.insert(0, str(REPO))
        print(json.dumps(stage(args.stage, args.checkpoint)))
        return

    import torch

    print(f"config: full-size FYE (SD-1.5 ReferenceNet + UNet3D with AnimateDiff v2 motion modules + guider), "
          f"torch {torch.__version__}, {os.cpu_count()} cpus, {torch.get_num_threads()} threads, fp32 build, "
          "fp16 checkpoint")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = (args.keep or Path(tmp)) / "fye-full-fp16.safetensors"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        rows = [run_stage(name, checkpoint) for name in ("build-meta", "build-cpu", "write", "load", "load+read")]
        size = checkpoint.stat().st_size
    for row in rows:
        print(f"{row['stage']:>10}: {row['seconds']:7.2f} s, peak RSS {row['peak_rss_gb']:.2f} GB "
              f"(process baseline {row['baseline_rss_gb']:.2f} GB)")
    load = rows[-1]
    print(f"checkpoint {size / 1e9:.2f} GB; peak RSS of load+read / checkpoint size = "
          f"{load['peak_rss_gb'] * 1e9 / size:.2f}")


if __name__ == "__main__":
    main()
