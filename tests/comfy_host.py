"""Start a real ComfyUI host over HTTP for integration tests, and convert UI workflows to API prompts.

The host is the ComfyUI tree built by ``scripts/bootstrap.sh --comfyui`` in ``.cache/comfyui-host``.
Each :class:`ComfyHost` runs its own ComfyUI process (CPU only, a free port on 127.0.0.1) with every
writable folder under one base directory, and the pack under test symlinked into its custom_nodes.

Only the standard library is used, so this module can be imported before anything else is set up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

__all__ = [
    "COMFYUI_DIR",
    "REPO_ROOT",
    "ComfyHost",
    "PromptFailed",
    "PromptRejected",
    "free_port",
    "ui_to_api",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
COMFYUI_DIR = REPO_ROOT / ".cache" / "comfyui-host" / "ComfyUI"

LOG_TAIL_CHARS = 6000


class PromptRejected(RuntimeError):
    """POST /prompt answered HTTP 400; ``body`` is the decoded JSON answer (or the raw text)."""

    def __init__(self, message: str, body):
        super().__init__(message)
        self.body = body


class PromptFailed(RuntimeError):
    """A queued prompt finished with a status other than "success"; ``history`` is its entry."""

    def __init__(self, message: str, history: dict):
        super().__init__(message)
        self.history = history


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyHost:
    """One ComfyUI process with the pack at ``pack_dir`` installed as ``custom_nodes/<pack_name>``.

    Use as a context manager (``with ComfyHost(tmp_path) as host: ...``) or call :meth:`start` and
    :meth:`stop`. ``expected_nodes`` are node class names that must be registered once it is up.
    """

    def __init__(
        self,
        base_dir: Path,
        pack_dir: Path = REPO_ROOT,
        pack_name: str = "comfyui-follow-your-emoji",
        expected_nodes: tuple[str, ...] = (),
        extra_args: tuple[str, ...] = (),
    ):
        self.base_dir = Path(base_dir)
        self.pack_dir = Path(pack_dir)
        self.pack_name = pack_name
        self.expected_nodes = tuple(expected_nodes)
        self.extra_args = tuple(extra_args)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self._object_info: dict | None = None

    # -- paths and state ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the running host, e.g. ``http://127.0.0.1:8188``."""
        if self.port is None:
            raise RuntimeError("ComfyHost is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def temp_dir(self) -> Path:
        return self.base_dir / "temp"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "comfyui.log"

    def log_text(self) -> str:
        """Everything the ComfyUI process has written to stdout/stderr so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of :meth:`log_text`, for error messages."""
        return self.log_text()[-chars:]

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> ComfyHost:
        """Start ComfyUI, wait until it answers, and check that the pack imported cleanly."""
        if self.proc is not None:
            raise RuntimeError("ComfyHost is already started")
        if not (COMFYUI_DIR / "main.py").is_file():
            raise RuntimeError(f"No ComfyUI host at {COMFYUI_DIR}: run `scripts/bootstrap.sh --comfyui` first")
        for sub in ("custom_nodes", "input", "output"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / self.pack_name
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            raise RuntimeError(f"{link} exists and is not a symlink")
        link.symlink_to(self.pack_dir.resolve(), target_is_directory=True)

        self._object_info = None
        deadline = time.monotonic() + timeout
        try:
            for attempt in range(3):
                self._spawn()
                if self._wait_ready(deadline):
                    break
                # Lost the race for the port to another process: try again with a fresh one.
                if "address already in use" not in self.log_text().lower() or attempt == 2:
                    raise RuntimeError(
                        f"ComfyUI exited with code {self.proc.returncode} before it was ready; "
                        f"log tail:\n{self.log_tail()}"
                    )
                self._close_log()
                self.proc = None
            self._check_pack()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        self.port = free_port()
        cmd = [
            sys.executable,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--base-directory",
            str(self.base_dir),
            "--database-url",
            "sqlite:///:memory:",
            *self.extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=COMFYUI_DIR,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def _wait_ready(self, deadline: float) -> bool:
        """True once /system_stats answers; False if the process exited; TimeoutError past deadline."""
        while True:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"ComfyUI did not answer on {self.url} in time; log tail:\n{self.log_tail()}")
            time.sleep(0.2)

    def _check_pack(self) -> None:
        failed = [
            line
            for line in self.log_text().splitlines()
            if ("IMPORT FAILED" in line or "Cannot import" in line) and self.pack_name in line
        ]
        if failed:
            raise RuntimeError(
                f"ComfyUI failed to import the pack {self.pack_name!r}:\n"
                + "\n".join(failed)
                + f"\nlog tail:\n{self.log_tail()}"
            )
        if self.expected_nodes:
            info = self.object_info()
            missing = [name for name in self.expected_nodes if name not in info]
            if missing:
                raise RuntimeError(
                    f"Nodes missing from /object_info: {', '.join(missing)}; log tail:\n{self.log_tail()}"
                )

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after 10 s. Safe to call more than once."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            # Whatever is left of the group (the leader if it ignored SIGTERM, or its children).
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ComfyHost:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP --------------------------------------------------------------------------------------

    def get_json(self, path: str, timeout: float = 60):
        """GET ``path`` (e.g. "/object_info") and decode the JSON answer."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def post_json(self, path: str, payload, timeout: float = 60):
        """POST ``payload`` as JSON to ``path`` and decode the JSON answer (None for an empty one)."""
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def object_info(self, refresh: bool = False) -> dict:
        """All node definitions (GET /object_info), fetched once per start or again with ``refresh``."""
        if self._object_info is None or refresh:
            self._object_info = self.get_json("/object_info")
        return self._object_info

    def workflow_templates(self) -> dict:
        """Example workflows per pack: ``{pack_dir_name: [workflow names without .json]}``."""
        return self.get_json("/workflow_templates")

    def add_input(self, src: Path, name: str | None = None) -> str:
        """Copy ``src`` into the input folder and return the name nodes like LoadImage take."""
        name = name or Path(src).name
        shutil.copyfile(src, self.input_dir / name)
        return name

    def queue_prompt(self, prompt: dict) -> str:
        """Queue an API-format prompt; return its prompt_id or raise :class:`PromptRejected`."""
        try:
            answer = self.post_json("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        except urllib.error.HTTPError as err:
            if err.code != 400:
                raise
            raw = err.read().decode("utf-8", errors="replace")
            try:
                body = json.loads(raw)
            except ValueError:
                raise PromptRejected(f"prompt rejected: {raw}", raw) from None
            detail = json.dumps({"error": body.get("error"), "node_errors": body.get("node_errors")}, indent=1)
            raise PromptRejected(f"prompt rejected:\n{detail}", body) from None
        return answer["prompt_id"]

    def wait_history(self, prompt_id: str, timeout: float = 600) -> dict:
        """Poll /history/<prompt_id> every 0.1 s until the entry appears; return the entry."""
        deadline = time.monotonic() + timeout
        while True:
            history = self.get_json(f"/history/{prompt_id}")
            if prompt_id in history:
                return history[prompt_id]
            if not self.is_running():
                raise RuntimeError(f"ComfyUI exited while running prompt {prompt_id}; log tail:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")
            time.sleep(0.1)

    def run_prompt(self, prompt: dict, timeout: float = 600) -> dict:
        """Queue ``prompt``, wait for it, return its history entry; raise :class:`PromptFailed`."""
        entry = self.wait_history(self.queue_prompt(prompt), timeout=timeout)
        status = entry.get("status") or {}
        if status.get("status_str") != "success":
            parts = [f"prompt finished with status {status.get('status_str')!r}"]
            for event, data in status.get("messages") or []:
                if event == "execution_error":
                    parts.append(
                        f"node {data.get('node_id')} ({data.get('node_type')}): "
                        f"{data.get('exception_type')}: {data.get('exception_message')}"
                    )
                    parts.append("".join(data.get("traceback") or []))
            raise PromptFailed("\n".join(parts), entry)
        return entry

    def output_files(self, history_entry: dict, node_id=None, key: str | None = None) -> list[Path]:
        """Paths of the files a finished prompt produced, in order.

        Every ``{"filename", "subfolder", "type"}`` item under any output key ("images", "gifs",
        "video", ...) is resolved under the output, temp or input folder according to its type.
        ``node_id`` and ``key`` restrict the result to one node and/or one output key.
        """
        roots = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}
        files = []
        for nid, outputs in (history_entry.get("outputs") or {}).items():
            if node_id is not None and str(nid) != str(node_id):
                continue
            for out_key, items in outputs.items():
                if key is not None and out_key != key:
                    continue
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item:
                        root = roots.get(item.get("type", "output"), self.output_dir)
                        files.append(root / (item.get("subfolder") or "") / item["filename"])
        return files


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- UI workflow -> API prompt ---------------------------------------------------------------------

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
MODE_MUTED = 2
MODE_BYPASSED = 4
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
PRIMITIVE_TYPES = frozenset({"PrimitiveNode"})


def _definition_inputs(definition: dict) -> list[tuple[str, list]]:
    """``(name, [type, options])`` for the required then optional inputs of a node definition."""
    inputs = definition.get("input") or {}
    order = definition.get("input_order") or {}
    result = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        for name in order.get(section) or list(specs):
            if name in specs:
                spec = specs[name]
                result.append((name, list(spec) if isinstance(spec, (list, tuple)) else [spec]))
    return result


def _is_widget(spec: list) -> bool:
    kind = spec[0] if spec else None
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _extra_widget_values(spec: list) -> int:
    """How many extra widgets_values entries the frontend stores after this widget."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    extra = 1 if options.get("control_after_generate") else 0
    if any(key.endswith("_upload") and options[key] for key in options):
        extra += 1
    return extra


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow (``nodes`` + ``links``) to an API prompt for POST /prompt.

    Muted nodes and notes are dropped; links through Reroute-like nodes (unknown types with one
    input) and bypassed nodes are followed to their source; inputs fed by a PrimitiveNode keep the
    widget value the frontend mirrors into the target node.
    """
    subgraph_ids = {sg.get("id") for sg in (workflow.get("definitions") or {}).get("subgraphs") or []}
    nodes = {node["id"]: node for node in workflow.get("nodes") or []}
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"], link.get("type"))
        else:
            links[link[0]] = (link[1], link[2], link[5] if len(link) > 5 else None)

    def source_of(link_id, seen=()):
        """``[node_id, slot]`` feeding ``link_id``, "primitive", or None when nothing feeds it."""
        if link_id is None or link_id not in links:
            return None
        from_id, from_slot, link_type = links[link_id]
        node = nodes.get(from_id)
        if node is None or from_id in seen:
            return None
        seen = (*seen, from_id)
        ntype = node.get("type")
        mode = node.get("mode", 0)
        if ntype in object_info and mode == MODE_MUTED:
            return None
        if ntype in object_info and mode == MODE_BYPASSED:
            return source_of(_bypass_input_link(node, from_slot, link_type), seen)
        if ntype in object_info:
            return [str(from_id), from_slot]
        if ntype in subgraph_ids:
            raise NotImplementedError(f"node {from_id} is a subgraph; subgraphs are not supported")
        if ntype in PRIMITIVE_TYPES:
            return "primitive"
        node_inputs = node.get("inputs") or []
        if len(node_inputs) == 1:  # Reroute and reroute-like nodes pass their one input through.
            return source_of(node_inputs[0].get("link"), seen)
        raise ValueError(f"node {from_id} has type {ntype!r}, which is not in object_info")

    prompt = {}
    for node_id, node in nodes.items():
        ntype = node.get("type")
        if node.get("mode", 0) in (MODE_MUTED, MODE_BYPASSED):
            continue
        if ntype not in object_info:
            if ntype in subgraph_ids:
                raise NotImplementedError(f"node {node_id} is a subgraph; subgraphs are not supported")
            continue  # Notes, reroutes, primitives: frontend-only nodes.

        ui_inputs = {inp.get("name"): inp for inp in node.get("inputs") or []}
        values = node.get("widgets_values")
        if values is None:
            values = []
        position = 0
        inputs = {}
        for name, spec in _definition_inputs(object_info[ntype]):
            ui_input = ui_inputs.get(name) or {}
            source = source_of(ui_input.get("link"))
            linked = source is not None and source != "primitive"
            if _is_widget(spec):
                has_value = False
                if isinstance(values, dict):
                    has_value, value = name in values, values.get(name)
                elif not linked or "widget" in ui_input:
                    if position < len(values):
                        has_value, value = True, values[position]
                    position += 1 + _extra_widget_values(spec)
                if has_value and not linked:
                    inputs[name] = value
            if linked:
                inputs[name] = source
        # Inputs the frontend added that the definition does not list (dynamic inputs).
        for name, ui_input in ui_inputs.items():
            if name not in inputs:
                source = source_of(ui_input.get("link"))
                if source is not None and source != "primitive":
                    inputs.setdefault(name, source)
        prompt[str(node_id)] = {
            "class_type": ntype,
            "inputs": inputs,
            "_meta": {"title": node.get("title") or ntype},
        }
    return prompt


def _bypass_input_link(node: dict, slot: int, link_type):
    """The input link a bypassed node passes through to its output ``slot`` (as the frontend does)."""
    node_inputs = node.get("inputs") or []
    if link_type is None:
        outputs = node.get("outputs") or []
        link_type = outputs[slot].get("type") if slot < len(outputs) else None
    if slot < len(node_inputs) and node_inputs[slot].get("type") == link_type:
        if node_inputs[slot].get("link") is not None:
            return node_inputs[slot]["link"]
    for inp in node_inputs:
        if inp.get("type") == link_type and inp.get("link") is not None:
            return inp["link"]
    return None
