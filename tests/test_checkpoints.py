"""Checkpoint formats: official .pth, kijai safetensors, AnimateDiff motion modules, ours; and bad files."""
import json
import pickle

import pytest
import torch
from models_fixtures import TINY_FILES, golden_models_path, load_tiny_models, tiny_config
from safetensors.torch import load_file, save_file
from shared_data import shared_path

from fye_core.errors import FYEInputError
from fye_core.models import build_models, load_fye, load_motion_modules, load_official, load_official_dir, save_fye
from fye_core.models.checkpoints import OFFICIAL_FILES, default_config, infer_config


def official_state(network):
    return load_file(str(golden_models_path(TINY_FILES[network])))


def assert_same_weights(a, b):
    for network, module in a.networks().items():
        theirs = b.networks()[network].state_dict()
        ours = module.state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def kijai():
    """Per-network safetensors with the official key names: what kijai's fp16 files are."""
    return load_tiny_models()


def test_meta_construction_allocates_nothing_and_loading_materialises_everything(kijai):
    empty = build_models(tiny_config())
    assert all(p.is_meta for m in empty.networks().values() for p in m.parameters())
    assert not any(t.is_meta for m in kijai.networks().values() for t in [*m.parameters(), *m.buffers()])


def test_official_pth_files_load_like_kijai_safetensors(tmp_path, kijai):
    for network, name in OFFICIAL_FILES.items():
        torch.save(official_state(network), tmp_path / name)
    from_pth = load_official_dir(tmp_path, tiny_config()).to(dtype=torch.float32)
    assert_same_weights(from_pth, kijai)


def test_our_single_file_round_trips(tmp_path, kijai):
    path = save_fye(kijai, tmp_path / "fye.safetensors", dtype=None)
    assert_same_weights(load_fye(path), kijai)
    half = load_fye(save_fye(kijai, tmp_path / "fye-fp16.safetensors"))
    assert half.unet.conv_in.weight.dtype == torch.float16  # the tiny weights are fp16-representable
    assert_same_weights(half.to(dtype=torch.float32), kijai)


def test_animatediff_motion_modules_replace_the_unets(tmp_path, kijai):
    motion = {k: v for k, v in official_state("unet").items() if "motion_modules" in k}
    assert any("pos_encoder" in k for k in motion)
    torch.save({"state_dict": {k: v * 2 for k, v in motion.items()}}, tmp_path / "mm.ckpt")
    models = load_tiny_models()
    load_motion_modules(models, tmp_path / "mm.ckpt")
    ours, before = models.unet.state_dict(), kijai.unet.state_dict()
    for key in ours:
        if "motion_modules" in key and not key.endswith("pos_embed.pe"):
            torch.testing.assert_close(ours[key], before[key] * 2)
        else:
            torch.testing.assert_close(ours[key], before[key])


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "unet.pth"
    with open(path, "wb") as fh:
        pickle.dump({"conv_in.weight": RunsCode(marker)}, fh)
    with pytest.raises(FYEInputError, match="refused to load .*unet.pth"):
        load_official({"guider": golden_models_path(TINY_FILES["guider"]),
                       "referencenet": golden_models_path(TINY_FILES["referencenet"]), "unet": path}, tiny_config())
    assert not marker.exists()


def test_truncated_file_is_a_clear_error(tmp_path, kijai):
    path = save_fye(kijai, tmp_path / "fye.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FYEInputError, match="truncated"):
        load_fye(path)
    truncated_pth = tmp_path / "unet.pth"
    torch.save(official_state("unet"), truncated_pth)
    truncated_pth.write_bytes(truncated_pth.read_bytes()[:5000])
    with pytest.raises(FYEInputError, match="unet.pth"):
        load_official({"guider": golden_models_path(TINY_FILES["guider"]),
                       "referencenet": golden_models_path(TINY_FILES["referencenet"]), "unet": truncated_pth},
                      tiny_config())


def test_wrong_model_names_the_file_the_model_and_the_keys(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file(official_state("referencenet"), str(path))
    files = {network: golden_models_path(name) for network, name in TINY_FILES.items()} | {"unet": path}
    with pytest.raises(FYEInputError) as err:
        load_official(files, tiny_config())
    message = str(err.value)
    assert "unet.safetensors does not hold the FYE denoising UNet with motion modules" in message
    assert "missing: " in message and "motion_modules" in message
    with pytest.raises(FYEInputError, match="lacks lmk_guider.pth, referencenet.pth, unet.pth"):
        load_official_dir(tmp_path)
    with pytest.raises(FYEInputError, match="not an FYE model file"):
        load_fye(path)


def test_mis_shaped_weights_are_named(tmp_path):
    state = official_state("guider")
    state["conv_out.weight"] = state["conv_out.weight"][:16]
    path = tmp_path / "lmk_guider.safetensors"
    save_file(state, str(path))
    files = {network: golden_models_path(name) for network, name in TINY_FILES.items()} | {"guider": path}
    with pytest.raises(FYEInputError, match=r"mis-shaped: conv_out.weight \(16, 256, 3, 3\) \(expected \(32, 256"):
        load_official(files, tiny_config())


def test_architecture_is_read_off_the_weights():
    states = {network: {k: tuple(v.shape) for k, v in official_state(network).items()}
              for network in ("guider", "referencenet")}
    assert infer_config(states["guider"], states["referencenet"]) == tiny_config()
    manifests = {name: json.loads(shared_path("reference", "manifests", f"{name}.json").read_text())
                 for name in ("lmk_guider", "referencenet")}
    full = infer_config(*({k: tuple(v) for k, v in m.items()} for m in manifests.values()))
    assert full == default_config()


def test_q_former_is_saved_loaded_and_extends_the_context(tmp_path, kijai):
    config = {**tiny_config(), "qformer": {}}
    with_qformer = build_models(config, device="cpu")
    for network, module in kijai.networks().items():
        with_qformer.networks()[network].load_state_dict(module.state_dict())
    loaded = load_fye(save_fye(with_qformer, tmp_path / "q.safetensors", dtype=None))
    assert loaded.qformer is not None and len(loaded.qformer.layers) == 4
    assert_same_weights(loaded, with_qformer)
    tokens = torch.randn(2, 257, 1024)
    with torch.no_grad():
        reference_context, unet_context = loaded.encode_context(tokens)
        plain_reference, plain_unet = kijai.encode_context(tokens)
    assert reference_context.shape == unet_context.shape == (2, 257 + 16, 768)
    torch.testing.assert_close(unet_context[:, :257], plain_unet)
    torch.testing.assert_close(reference_context[:, :257], plain_reference)
