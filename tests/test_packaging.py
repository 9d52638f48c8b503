"""Package metadata that ComfyUI, its registry and ComfyUI-Manager read."""
import ast
import subprocess
import sys
from pathlib import Path

import tomllib
from shared_data import REPO_ROOT


def test_requirements_txt_lists_the_pyproject_dependencies():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    lines = [line.strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == pyproject["project"]["dependencies"]
    assert pyproject["tool"]["comfy"]["requires-comfyui"].startswith(">=0.3.75")
    assert pyproject["project"]["scripts"]["fye"] == "fye_core.cli:main"


def test_comfy_is_imported_only_in_nodes():
    for path in [*(REPO_ROOT / "fye_core").rglob("*.py"), REPO_ROOT / "__init__.py"]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in {"comfy", "comfy_api", "folder_paths"} for n in names), path


def test_entry_module_imports_nothing_at_module_level():
    tree = ast.parse((REPO_ROOT / "__init__.py").read_text())
    assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert any(isinstance(n, ast.AsyncFunctionDef) and n.name == "comfy_entrypoint" for n in tree.body)


def test_code_passes_the_linter():
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), "check", "--no-cache", str(REPO_ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
