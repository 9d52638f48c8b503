"""UI workflows saved before a node's inputs changed still load with the values they were saved with.

A saved UI workflow keeps each node's widget values as a list, ``widgets_values``, and the ComfyUI frontend
puts them back onto the node's widgets by position. So a new widget input must come after the existing ones
(it then takes its default), and none may be removed, retyped into a socket, or reordered.

``tests/data/saved_workflows`` holds the UI workflows as first shipped, byte for byte: never update them.
Each is read the way the frontend reads it (the rules of ComfyUI_frontend 1.32.9, the host's) against the
running host's /object_info, and every value must be valid for its input and equal what the workflow's
API-format copy, ``workflows/api/<name>.json``, gives that input.
"""
import json
from pathlib import Path

import pytest
from comfy_host import REPO_ROOT

pytestmark = pytest.mark.comfyui

SAVED_DIR = Path(__file__).parent / "data" / "saved_workflows"
SAVED = sorted(path.stem for path in SAVED_DIR.glob("*.json"))
API_DIR = REPO_ROOT / "workflows" / "api"

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote"})  # node types that live in the frontend, not in /object_info
MODE_MUTED, MODE_BYPASSED = 2, 4
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UPLOADS = ("image_upload", "video_upload", "animated_image_upload")
# Combos that list the files in a folder of the user's: their options depend on what is installed.
FILE_LISTS = frozenset({("LoadImage", "image"), ("LoadVideo", "file"), ("VAELoader", "vae_name"),
                        ("CLIPVisionLoader", "clip_name"), ("FYE_LoadModels", "model"),
                        ("FYE_LoadHunyuanPortrait", "weights")})


def node_widgets(definition: dict) -> list[tuple[str, dict | None]]:
    """The node's widgets in the order the frontend makes them: ``(input name, its spec)``, with a spec of None
    for a widget whose value is not an input's (control after generate, filter list, upload button).

    - The inputs are the required then the optional ones, each in ``input_order``.
    - An INT, FLOAT, STRING, BOOLEAN or COMBO input (or a list of options) is a widget unless ``forceInput``;
      any other type is a socket only, with no saved value.
    - An INT with ``control_after_generate`` (or, when that is not given, one named seed or noise_seed) is
      followed by its "control after generate" widget; a COMBO with ``control_after_generate`` by that and
      a "control filter list" widget (useIntWidget / addComboWidget / addValueControlWidgets).
    - A required COMBO with image/video upload adds an "upload" input at the end of the required inputs
      (the Comfy.UploadImage extension), whose widget saves a value too.
    """
    inputs, order = definition["input"], definition.get("input_order") or {}
    widgets = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        for name in order.get(section) or list(specs):
            kind, options = specs[name][0], (specs[name][1] if len(specs[name]) > 1 else {}) or {}
            if not (isinstance(kind, list) or kind in WIDGET_TYPES) or options.get("forceInput"):
                continue
            widgets.append((name, {"type": "COMBO" if isinstance(kind, list) else kind,
                                   "options": kind if isinstance(kind, list) else options.get("options"), **options}))
            control = options.get("control_after_generate")
            if kind == "INT" and (control if control is not None else name in ("seed", "noise_seed")):
                widgets.append(("control_after_generate", None))
            elif (kind == "COMBO" or isinstance(kind, list)) and control:
                widgets += [("control_after_generate", None), ("control_filter_list", None)]
        uploads = [name for name, spec in specs.items() if len(spec) > 1 and any(spec[1].get(key) for key in UPLOADS)]
        if section == "required" and uploads:
            widgets.append(("upload", None))
    return widgets


def default_value(spec: dict):
    """The value a new widget starts with (getDefaultValue; numbers 0 without a default)."""
    if "default" in spec:
        return spec["default"]
    if spec["type"] == "COMBO":
        return (spec["options"] or [None])[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[spec["type"]]


def invalid(node_type: str, name: str, spec: dict, value) -> str | None:
    """Why ``value`` cannot be the value of this input, or None when it can."""
    kind = spec["type"]
    if kind == "COMBO":
        if (node_type, name) in FILE_LISTS:
            return None if isinstance(value, str) and value else "not a file name"
        return None if value in spec["options"] else f"not one of {spec['options']}"
    expected = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}[kind]
    if not isinstance(value, expected) or (kind != "BOOLEAN" and isinstance(value, bool)):
        return f"not a {kind}"
    if kind in ("INT", "FLOAT"):
        if "min" in spec and value < spec["min"]:
            return f"below the minimum {spec['min']}"
        if "max" in spec and value > spec["max"]:
            return f"above the maximum {spec['max']}"
    return None


def check_saved_workflow(name: str, object_info: dict) -> None:
    """Asserts that the saved UI workflow ``name`` loads with the values of its API copy (see the module)."""
    saved = json.loads((SAVED_DIR / f"{name}.json").read_text())
    api = json.loads((API_DIR / f"{name}.json").read_text())
    nodes = {str(node["id"]): node for node in saved["nodes"]}
    unknown = {node["type"] for node in nodes.values()} - set(object_info) - FRONTEND_ONLY
    assert not unknown, f"{name}: node types the host does not have: {sorted(unknown)}"
    runs = {node_id: node for node_id, node in nodes.items() if node["type"] in object_info
            and node.get("mode", 0) not in (MODE_MUTED, MODE_BYPASSED)}
    assert {node_id: node["type"] for node_id, node in runs.items()} == \
        {node_id: node["class_type"] for node_id, node in api.items()}, f"{name}: the API copy has other nodes"

    problems = []
    for node_id, node in runs.items():
        where = f"{name} node {node_id} ({node['type']})"
        values = node.get("widgets_values") or []
        assert isinstance(values, list), f"{where}: widgets_values is not a list"
        widgets = node_widgets(object_info[node["type"]])
        if len(values) > len(widgets):
            problems.append(f"{where}: {len(values)} saved values but only {len(widgets)} widgets; the values "
                            f"{values[len(widgets):]} would be lost (an input removed or made a socket?)")
        links = {inp["name"]: inp.get("link") for inp in node.get("inputs") or []}
        for position, (input_name, spec) in enumerate(widgets):
            is_saved = position < len(values)
            if spec is None:  # a frontend widget: control after generate, filter list or upload
                if is_saved and input_name == "control_after_generate" and values[position] not in CONTROL_VALUES:
                    problems.append(f"{where}: value {position} is {values[position]!r}, not a control mode "
                                    f"(an input added before it?)")
                continue
            # A widget input added since the file was saved starts with its default.
            value = values[position] if is_saved else default_value(spec)
            origin = f"saved value {position}" if is_saved else "default (not in the saved file)"
            reason = invalid(node["type"], input_name, spec, value)
            if reason:
                problems.append(f"{where}: {input_name} gets {origin} {value!r}, {reason}")
            expected = api[node_id]["inputs"].get(input_name)
            if isinstance(expected, list):  # fed by a link: the saved value is not used
                assert links.get(input_name) is not None, f"{where}: {input_name} is linked only in the API copy"
                continue
            if expected is None:
                if is_saved:
                    problems.append(f"{where}: {input_name} gets {origin} {value!r} but the API copy has no "
                                    "value for it")
                continue
            if value != expected or isinstance(value, bool) != isinstance(expected, bool):
                problems.append(f"{where}: {input_name} gets {origin} {value!r}, the API copy {expected!r}")
    assert not problems, "\n".join(problems)


def test_every_shipped_workflow_is_frozen():
    shipped = sorted(path.stem for path in (REPO_ROOT / "workflows").glob("*.json"))
    assert SAVED == shipped, "copy a newly shipped workflow into tests/data/saved_workflows (and never edit it)"


@pytest.mark.parametrize("name", SAVED)
def test_a_saved_workflow_loads_with_its_values(host, name):
    check_saved_workflow(name, host.object_info())
