"""Our nodes in a real ComfyUI 0.3.75 host over HTTP: registration, the shipped workflow, errors."""
import json
import shutil
import time

import numpy as np
import pytest
import skimage.data
import torch
from comfy_host import REPO_ROOT, PromptFailed, ui_to_api
from conftest import COMFY_NODE_IDS as NODE_IDS
from conftest import COMFY_PORTRAIT as PORTRAIT
from conftest import COMFY_VIDEO as VIDEO
from conftest import golden_track, write_official_template
from hunyuan_models_fixtures import write_tiny_hunyuan_dir
from models_fixtures import load_tiny_models, write_random_clip_vision, write_random_sd_vae
from PIL import Image
from shared_data import golden, shared_path
from training_fixtures import train_tiny_checkpoint

from fye_core.crop import crop_face, detect_face_crop, paste_back, paste_mask
from fye_core.image import load_image, prepare_reference
from fye_core.landmarks import (
    FacePlacement,
    MotionControls,
    align_motion,
    detect_face_track,
    detect_reference,
    load_template,
    render_expression_landmarks,
    save_template,
)
from fye_core.models import save_fye
from fye_core.models.student import StudentSettings, add_student_adapter, save_student_lora
from fye_core.training.state import MODELS_FILE
from fye_core.video import probe_video, read_video, write_video

pytestmark = pytest.mark.comfyui

WORKFLOWS = ("fye_landmarks_from_video", "fye_animate_portrait", "fye_animate_portrait_full_resolution",
             "fye_animate_animal_portrait", "fye_hunyuan_portrait", "fye_motion_controls")
WORKFLOW = REPO_ROOT / "workflows" / "fye_landmarks_from_video.json"


def saved_images(host, history, node_id) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in host.output_files(history, node_id)])


def test_nodes_are_registered_with_tooltips(host):
    info = host.object_info()
    for node_id in NODE_IDS:
        node = info[node_id]
        assert node["category"].startswith("FollowYourEmoji") and node["description"]
        for name, spec in {**node["input"]["required"], **node["input"].get("optional", {})}.items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert info["FYE_FaceLandmarks"]["output"] == ["FYE_FACE_TRACK", "IMAGE", "MASK", "STRING"]
    assert "fye" in host.get_json("/models")


def test_shipped_workflows_are_listed_as_templates(host):
    assert set(WORKFLOWS) <= set(host.get_json("/workflow_templates")[host.pack_name])


@pytest.mark.parametrize("name", WORKFLOWS)
def test_api_copies_match_the_shipped_workflows(host, name):
    converted = ui_to_api(json.loads((REPO_ROOT / "workflows" / f"{name}.json").read_text()), host.object_info())
    assert converted == json.loads((REPO_ROOT / "workflows" / "api" / f"{name}.json").read_text())


def test_shipped_workflow_equals_headless(host):
    prompt = ui_to_api(json.loads(WORKFLOW.read_text()), host.object_info())
    align = next(k for k, n in prompt.items() if n["class_type"] == "FYE_AlignMotion")
    prepare = next(k for k, n in prompt.items() if n["class_type"] == "FYE_PrepareReference")
    prompt["900"] = {"class_type": "SaveImage", "inputs": {"images": [align, 1], "filename_prefix": "test/frames"}}
    prompt["901"] = {"class_type": "FYE_RenderLandmarks", "inputs": {"motion": [align, 0], "background": [prepare, 0]}}
    prompt["902"] = {"class_type": "SaveImage", "inputs": {"images": ["901", 0], "filename_prefix": "test/overlay"}}
    history = host.run_prompt(prompt)

    reference_image = prepare_reference(load_image(shared_path("data", PORTRAIT)))
    reference = detect_reference(reference_image)
    frames, fps = read_video(shared_path("data", VIDEO))
    motion = align_motion(reference, detect_face_track(frames, fps=fps))
    expected = render_expression_landmarks(motion.points, motion.width, motion.height)

    got = saved_images(host, history, "900")
    assert got.shape == (78, 512, 512, 3)
    np.testing.assert_array_equal(got, expected)
    overlay = saved_images(host, history, "902")
    drawn = expected.any(-1)
    np.testing.assert_array_equal(overlay[drawn], expected[drawn])
    np.testing.assert_array_equal(overlay[~drawn], np.broadcast_to(reference_image, overlay.shape)[~drawn])

    save_video = next(k for k, n in prompt.items() if n["class_type"] == "SaveVideo")
    (video,) = host.output_files(history, save_video)
    info = probe_video(video)
    assert (info.width, info.height, info.fps, info.frame_count) == (512, 512, fps, 78)


def test_motion_controls_workflow_draws_the_controlled_landmarks_over_the_portrait(host):
    """The preview workflow: FYE Motion Controls into FYE Align Motion, drawn over the portrait, equal to the
    headless core with the same controls; and a relative frame past the clip is a clear error."""
    prompt = ui_to_api(json.loads((REPO_ROOT / "workflows" / "fye_motion_controls.json").read_text()),
                       host.object_info())
    render = next(k for k, n in prompt.items() if n["class_type"] == "FYE_RenderLandmarks")
    controls = next(k for k, n in prompt.items() if n["class_type"] == "FYE_MotionControls")
    prompt["900"] = {"class_type": "SaveImage", "inputs": {"images": [render, 0], "filename_prefix": "test/controls"}}
    history = host.run_prompt(prompt)

    settings = prompt[controls]["inputs"]
    assert (settings["expression_strength"], settings["relative"], settings["filter"]) == (1.5, "first", "one-euro")
    reference_image = prepare_reference(load_image(shared_path("data", PORTRAIT)))
    frames, fps = read_video(shared_path("data", VIDEO))
    motion = align_motion(detect_reference(reference_image), detect_face_track(frames, fps=fps),
                          MotionControls(expression=1.5, relative="first", filter="one-euro"))
    expected = render_expression_landmarks(motion.points, motion.width, motion.height,
                                           background=np.broadcast_to(reference_image, (len(motion), 512, 512, 3)))
    np.testing.assert_array_equal(saved_images(host, history, "900"), expected)

    prompt[controls]["inputs"].update(relative="frame", relative_frame=500)
    with pytest.raises(PromptFailed, match="relative motion from driving frame 500, but the driving video has 78"):
        host.run_prompt(prompt)


def test_reference_without_face_fails_with_a_clear_message(host):
    Image.fromarray(np.full((256, 256, 3), 90, np.uint8)).save(host.input_dir / "blank.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "blank.png"}},
        "2": {"class_type": "FYE_FaceLandmarks", "inputs": {"images": ["1", 0], "detection": "image",
                                                             "fill": "hold", "fps": 30.0}},
        "3": {"class_type": "LoadImage", "inputs": {"image": PORTRAIT}},
        "4": {"class_type": "FYE_PrepareReference", "inputs": {"image": ["3", 0], "mode": "letterbox", "size": 512}},
        "5": {"class_type": "FYE_FaceLandmarks", "inputs": {"images": ["4", 0], "detection": "image",
                                                             "fill": "hold", "fps": 30.0}},
        "6": {"class_type": "FYE_AlignMotion", "inputs": {"reference_track": ["2", 0], "driving_track": ["5", 0],
                                                           "smooth_window": 1, "drop_first_frame": False}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 1]}},
    }
    with pytest.raises(PromptFailed, match="no face was found in the reference image"):
        host.run_prompt(prompt)


def test_templates_save_and_load_and_pickles_need_consent(host):
    write_official_template(host.input_dir / "official_mppose.npy")

    def prompt(allow_pickle):
        return {
            "1": {"class_type": "FYE_LoadTemplate", "inputs": {"template": "official_mppose.npy",
                                                                "allow_pickle": allow_pickle}},
            "2": {"class_type": "FYE_SaveTemplate", "inputs": {"face_track": ["1", 0],
                                                                "filename_prefix": "test/template"}},
        }

    with pytest.raises(PromptFailed, match="pickled object array"):
        host.run_prompt(prompt(False))
    host.run_prompt(prompt(True))
    (saved,) = sorted((host.output_dir / "test").glob("template_*.npz"))
    track = load_template(saved)
    np.testing.assert_array_equal(track.landmarks, golden("driving_lp_d0")["lmks"].astype(np.float64))


@pytest.fixture(scope="module")
def animation_models(host):
    """Tiny seeded FYE networks, a random full-size VAE and CLIP encoder in the host's model folders, and
    the first 12 frames of the driving video as an input."""
    models = host.base_dir / "models"
    save_fye(load_tiny_models(), models / "fye" / "tiny-fye.safetensors")
    (models / "vae").mkdir(parents=True, exist_ok=True)
    (models / "clip_vision").mkdir(parents=True, exist_ok=True)
    write_random_sd_vae(models / "vae" / "random-sd-vae.safetensors")
    write_random_clip_vision(models / "clip_vision" / "random-clip-vision.safetensors")
    frames, fps = read_video(shared_path("data", VIDEO))
    write_video(host.input_dir / "short_driving.mp4", iter(frames[:12]), fps)
    return host.object_info(refresh=True)


def animation_prompt(host, object_info, workflow: str) -> dict:
    """A shipped animation workflow on the test models, a 64x64 reference and 2 steps."""
    prompt = ui_to_api(json.loads((REPO_ROOT / "workflows" / f"{workflow}.json").read_text()), object_info)
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    by_type["FYE_LoadModels"]["model"] = "tiny-fye.safetensors"
    by_type["VAELoader"]["vae_name"] = "random-sd-vae.safetensors"
    by_type["CLIPVisionLoader"]["clip_name"] = "random-clip-vision.safetensors"
    by_type.get("FYE_PrepareReference", by_type.get("FYE_FaceCrop"))["size"] = 64
    by_type["LoadVideo"]["file"] = "short_driving.mp4"
    by_type["FYE_Animate"]["steps"] = 2
    return prompt


@pytest.fixture(scope="module")
def animate_prompt(host, animation_models):
    return animation_prompt(host, animation_models, "fye_animate_portrait")


@pytest.mark.parametrize("long_video", ["official", "progressive"])
def test_animation_workflow_writes_one_frame_per_driving_frame(host, animate_prompt, long_video):
    prompt = json.loads(json.dumps(animate_prompt))
    animate = next(n for n in prompt.values() if n["class_type"] == "FYE_Animate")
    animate["inputs"].update(long_video=long_video, context_frames=5)  # keyframes, then three segments
    history = host.run_prompt(prompt)
    save_video = next(k for k, n in prompt.items() if n["class_type"] == "SaveVideo")
    (video,) = host.output_files(history, save_video)
    frames, fps = read_video(video)
    assert frames.shape == (12, 64, 64, 3) and fps == 25.0


def interrupt_once_started(host, prompt: dict, log_line: str, after: float) -> dict:
    """Queues ``prompt``, interrupts it ``after`` seconds past the host logging ``log_line`` once more, and
    returns its history entry."""
    runs_before = host.log_text().count(log_line)
    prompt_id = host.queue_prompt(prompt)
    deadline = time.monotonic() + 300
    while host.log_text().count(log_line) == runs_before:
        assert prompt_id not in host.get_json(f"/history/{prompt_id}"), host.log_tail()
        assert time.monotonic() < deadline, host.log_tail()
        time.sleep(0.2)
    time.sleep(after)
    host.post_json("/interrupt", {})
    return host.wait_history(prompt_id, timeout=120)


def test_cancelling_stops_the_sampler_between_steps(host, animate_prompt):
    prompt = json.loads(json.dumps(animate_prompt))
    animate = next(n for n in prompt.values() if n["class_type"] == "FYE_Animate")
    # a thousand steps of twelve one-frame windows: many minutes unless the sampler checks for interruption
    animate["inputs"].update(steps=1000, context_frames=1, context_overlap=0)
    animate["inputs"]["seed"] = 1  # not cached from the previous run
    entry = interrupt_once_started(host, prompt, "FYE sampling", after=3)
    events = [event for event, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in events, entry["status"]
    interrupted = next(data for event, data in entry["status"]["messages"] if event == "execution_interrupted")
    assert interrupted["node_type"] == "FYE_Animate"


def test_a_mask_painted_over_a_cat_places_its_face(host):
    from test_placement import CAT_BOX

    cat = skimage.data.chelsea()
    x, y, width, height = CAT_BOX
    alpha = np.full(cat.shape[:2], 255, np.uint8)
    alpha[y:y + height, x:x + width] = 0  # Load Image's mask is 1 - alpha: what the mask editor paints
    Image.fromarray(np.dstack([cat, alpha])).save(host.input_dir / "cat.png")
    save_template(golden_track("driving_lp_d0").select(np.arange(12)), host.input_dir / "driving12.npz")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
        "2": {"class_type": "FYE_PlaceFace", "inputs": {"image": ["1", 0], "x": 0, "y": 0, "width": 0, "height": 0,
                                                         "face_points": "", "mask": ["1", 1]}},
        "3": {"class_type": "FYE_LoadTemplate", "inputs": {"template": "driving12.npz", "allow_pickle": False}},
        "4": {"class_type": "FYE_AlignMotion", "inputs": {"reference_track": ["2", 0], "driving_track": ["3", 0],
                                                           "smooth_window": 1, "drop_first_frame": False}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 1], "filename_prefix": "cat/motion"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["2", 2], "filename_prefix": "cat/preview"}},
    }
    history = host.run_prompt(prompt)
    track = detect_reference(cat, placement=FacePlacement(box=CAT_BOX))
    preview = render_expression_landmarks(track.landmarks, 451, 300, normalized=True, background=cat[None])[0]
    np.testing.assert_array_equal(saved_images(host, history, "6")[0], preview)
    motion = saved_images(host, history, "5")
    expected = render_expression_landmarks(align_motion(track, golden_track("driving_lp_d0").select(np.arange(12)))
                                           .points, 451, 300)
    np.testing.assert_array_equal(motion, expected)
    drawn = np.argwhere(motion.max(axis=(0, 3)) > 60)
    assert len(motion) == 12 and len(drawn) > 500
    assert (drawn >= [y - 0.1 * height, x - 0.1 * width]).all()
    assert (drawn <= [y + 1.1 * height, x + 1.1 * width]).all()


def test_face_crop_and_paste_back_give_full_resolution_frames_and_a_mask(host):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": PORTRAIT}},
        "2": {"class_type": "FYE_FaceCrop", "inputs": {"image": ["1", 0], "margin": 0.5, "aspect": 1.0, "size": 512}},
        "3": {"class_type": "FYE_PasteBack", "inputs": {"images": ["2", 0], "crop": ["2", 1], "portrait": ["1", 0],
                                                         "feather": 16}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "crop/face"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "crop/full"}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 1]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "crop/mask"}},
    }
    history = host.run_prompt(prompt)
    portrait = load_image(shared_path("data", PORTRAIT))
    crop = detect_face_crop(portrait).crop
    np.testing.assert_array_equal(saved_images(host, history, "4")[0], crop_face(portrait, crop))
    full = saved_images(host, history, "5")[0]
    np.testing.assert_array_equal(full, paste_back(crop_face(portrait, crop)[None], portrait, crop, 16)[0])
    mask = saved_images(host, history, "7")[0][..., 0]
    assert full.shape == portrait.shape and mask.shape == portrait.shape[:2]
    np.testing.assert_array_equal(mask, (paste_mask(crop, 16) * 255).astype(np.uint8))  # SaveImage truncates


def run_paste_back_workflow(host, object_info, workflow: str) -> tuple[np.ndarray, float, np.ndarray]:
    """A shipped full-resolution workflow on the test models: its video's frames and fps, and the mask it
    pasted with (saved from its MaskToImage node, 16)."""
    prompt = animation_prompt(host, object_info, workflow)
    prompt["900"] = {"class_type": "SaveImage", "inputs": {"images": ["16", 0], "filename_prefix": f"test/{workflow}"}}
    history = host.run_prompt(prompt)
    save_video = next(k for k, n in prompt.items() if n["class_type"] == "SaveVideo")
    (video,) = host.output_files(history, save_video)
    frames, fps = read_video(video)
    return frames, fps, saved_images(host, history, "900")[0][..., 0]


def test_full_resolution_workflow_pastes_the_animation_into_the_portrait(host, animation_models):
    frames, fps, mask = run_paste_back_workflow(host, animation_models, "fye_animate_portrait_full_resolution")
    assert frames.shape == (12, 1280, 720, 3) and fps == 25.0
    portrait = load_image(shared_path("data", PORTRAIT))
    error = np.abs(frames.astype(int) - portrait).mean(axis=(0, 3))
    assert mask.shape == (1280, 720) and (mask == 0).mean() > 0.5
    assert error[mask == 0].mean() < 3 and error[mask == 255].mean() > 10  # portrait kept, face animated


def test_animal_workflow_animates_a_cat_placed_by_a_painted_mask(host, animation_models):
    from test_placement import CAT_BOX

    canvas = np.full((640, 960, 3), 120, np.uint8)  # the cat small enough for a real crop around its face
    canvas[170:470, 250:701] = skimage.data.chelsea()
    x, y, width, height = CAT_BOX
    alpha = np.full(canvas.shape[:2], 255, np.uint8)
    alpha[170 + y:170 + y + height, 250 + x:250 + x + width] = 0
    Image.fromarray(np.dstack([canvas, alpha])).save(host.input_dir / "chelsea.png")
    frames, fps, mask = run_paste_back_workflow(host, animation_models, "fye_animate_animal_portrait")
    assert frames.shape == (12, 640, 960, 3) and fps == 25.0
    rows, cols = np.flatnonzero((mask == 255).any(axis=1)), np.flatnonzero((mask == 255).any(axis=0))
    assert rows[0] < 170 + y + height / 2 < rows[-1] and cols[0] < 250 + x + width / 2 < cols[-1]  # on the face
    error = np.abs(frames.astype(int) - canvas).mean(axis=(0, 3))
    assert (mask == 0).mean() > 0.3 and error[mask == 0].mean() < 3 and error[mask == 255].mean() > 10


def test_a_trainer_checkpoint_with_q_former_and_masked_latents_animates_in_comfyui(host, animation_models, tmp_path):
    checkpoint, _ = train_tiny_checkpoint(tmp_path)
    shutil.copy(checkpoint / MODELS_FILE, host.base_dir / "models" / "fye" / "trained-fye.safetensors")
    prompt = animation_prompt(host, host.object_info(refresh=True), "fye_animate_portrait")
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    by_type["FYE_LoadModels"]["model"] = "trained-fye.safetensors"
    by_type["FYE_Animate"].update(long_video="progressive", context_frames=5)  # keyframes fixed through conv_in
    history = host.run_prompt(prompt)
    save_video = next(k for k, n in prompt.items() if n["class_type"] == "SaveVideo")
    (video,) = host.output_files(history, save_video)
    frames, fps = read_video(video)
    assert frames.shape == (12, 64, 64, 3) and fps == 25.0


@pytest.fixture(scope="module")
def hunyuan_prompt(host):
    """The shipped HunyuanPortrait workflow on the tiny official-format networks (models/hunyuan_portrait/
    tiny-hunyuan), 12 driving frames, a 64x64 face crop, 2 steps, 8-frame windows and 2 pad frames, low memory."""
    write_tiny_hunyuan_dir(host.base_dir / "models" / "hunyuan_portrait" / "tiny-hunyuan")
    frames, fps = read_video(shared_path("data", VIDEO))
    write_video(host.input_dir / "driving12.mp4", iter(frames[:12]), fps)
    prompt = ui_to_api(json.loads((REPO_ROOT / "workflows" / "fye_hunyuan_portrait.json").read_text()),
                       host.object_info(refresh=True))
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    by_type["FYE_LoadHunyuanPortrait"]["weights"] = "tiny-hunyuan"
    by_type["FYE_FaceCrop"]["size"] = 64
    by_type["LoadVideo"]["file"] = "driving12.mp4"
    # the low-memory mode (branches one after the other) through the host: the same output as batched
    by_type["FYE_HunyuanPortraitAnimate"].update(steps=2, context_frames=8, context_overlap=2, pad_frames=2,
                                                 memory="low")
    return prompt


def test_hunyuan_portrait_workflow_animates_the_portrait_with_tiny_models(host, hunyuan_prompt):
    history = host.run_prompt(hunyuan_prompt)
    save_video = next(k for k, n in hunyuan_prompt.items() if n["class_type"] == "SaveVideo")
    (video,) = host.output_files(history, save_video)
    frames, fps = read_video(video)
    portrait = load_image(shared_path("data", PORTRAIT))
    assert frames.shape == (12, *portrait.shape) and fps == 25.0
    crop = detect_face_crop(portrait, margin=1.0, size=64).crop
    mask = paste_mask(crop, 16)
    error = np.abs(frames.astype(int) - portrait).mean(axis=(0, 3))
    assert error[mask == 0].mean() < 3 and error[mask == 1].mean() > 10  # portrait kept, face animated
    report = next(n for n in history["outputs"].values() if "text" in n)["text"][0]
    assert "driving: face found in all 12 frames" in report and "no arcface.onnx" in report


def test_cancelling_stops_hunyuan_portrait_between_windows(host, hunyuan_prompt):
    prompt = json.loads(json.dumps(hunyuan_prompt))
    animate = next(n for n in prompt.values() if n["class_type"] == "FYE_HunyuanPortraitAnimate")
    animate["inputs"].update(steps=1000, seed=1)  # minutes unless the sampler checks for interruption
    entry = interrupt_once_started(host, prompt, "HunyuanPortrait sampling", after=2)
    interrupted = [data for event, data in entry["status"]["messages"] if event == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_type"] == "FYE_HunyuanPortraitAnimate", entry["status"]


def test_speed_presets_and_expert_options_reach_the_sampler(host, animate_prompt):
    prompt = json.loads(json.dumps(animate_prompt))
    animate = next(n for n in prompt.values() if n["class_type"] == "FYE_Animate")
    animate["inputs"].update(steps=0, preset="fast")  # 0: the preset's steps
    host.run_prompt(prompt)
    assert "preset fast: unipc 8 steps" in host.log_text()
    prompt["900"] = {"class_type": "FYE_SpeedOptions",
                     "inputs": {"solver": "euler", "cfg_start": -1.0, "cfg_end": -1.0, "cfg_reuse": "preset",
                                "cache_interval": 3, "cache_order": -1, "cache_depth": -1, "cache_warmup": 1}}
    animate["inputs"].update(preset="fastest", speed_options=["900", 0])
    history = host.run_prompt(prompt)
    assert "preset fastest: euler 3 steps, feature cache every 3 (order 1, depth 1, warm-up 1)" in host.log_text()
    save_video = next(k for k, n in prompt.items() if n["class_type"] == "SaveVideo")
    (video,) = host.output_files(history, save_video)
    assert read_video(video)[0].shape == (12, 64, 64, 3)


def test_a_student_lora_samples_with_its_own_steps_in_comfyui(host, animate_prompt):
    """FYE Load Models merges a student LoRA from models/fye; FYE Animate then runs the student's consistency
    sampler with its own steps and no guidance pass."""
    models = load_tiny_models()
    add_student_adapter(models.unet, 4, 0)
    with torch.no_grad():
        for name, parameter in models.unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.01, generator=torch.Generator().manual_seed(len(name)))
    save_student_lora(models.unet, StudentSettings(steps=3, guidance=3.5, teacher_steps=50, lora_rank=4),
                      host.base_dir / "models" / "fye" / "tiny-student_lora.safetensors")
    host.object_info(refresh=True)
    prompt = json.loads(json.dumps(animate_prompt))
    loader = next(n for n in prompt.values() if n["class_type"] == "FYE_LoadModels")
    loader["inputs"]["student_lora"] = "tiny-student_lora.safetensors"
    next(n for n in prompt.values() if n["class_type"] == "FYE_Animate")["inputs"].update(steps=0)
    history = host.run_prompt(prompt)
    assert "preset official: lcm 3 steps, cfg 1" in host.log_text()
    save_video = next(k for k, n in prompt.items() if n["class_type"] == "SaveVideo")
    (video,) = host.output_files(history, save_video)
    assert read_video(video)[0].shape == (12, 64, 64, 3)
