"""Base-model families (foundations of the base-model axis, #17): read from diffusers folders'
pipeline class and from single files' keys by diffusers' own inference; a stated family decides
only where the model cannot tell; other families are refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES
from safetensors.torch import save_file

from dreamgrid.errors import DreamgridError, SpecError
from dreamgrid.families import FAMILIES, detect_family, resolve_family
from dreamgrid.tiny import build_tiny_flux, build_tiny_sd, build_tiny_sdxl

FIX = "family: sd15 | sdxl | flux"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "sd15": build_tiny_sd(root / "tiny-sd"),
        "sdxl": build_tiny_sdxl(root / "tiny-sdxl"),
        "flux": build_tiny_flux(root / "tiny-flux"),
    }


def write(path, keys: dict[str, tuple[int, ...]]):
    """A .safetensors file with tiny zero tensors under ``keys``."""
    save_file({k: torch.zeros(shape, dtype=torch.float16) for k, shape in keys.items()}, path)
    return path


def test_families_are_the_three_the_axis_names():
    assert FAMILIES == ("sd15", "sdxl", "flux")


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_folders_are_detected(folders, family):
    assert detect_family(folders[family]) == family
    assert resolve_family(folders[family], None) == family
    assert resolve_family(folders[family], family) == family


def test_a_prepared_link_folder_is_followed(folders, tmp_path):
    from dreamgrid import models

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / models.LINK).write_text(json.dumps({"path": str(folders["sdxl"])}))
    assert detect_family(prepared) == "sdxl"


def test_sd15_single_file_exported_by_dreamgrid_is_detected(folders, tmp_path):
    from diffusers import StableDiffusionPipeline

    from dreamgrid.train.export import save_sd_checkpoint

    pipe = StableDiffusionPipeline.from_pretrained(
        folders["sd15"], safety_checker=None, requires_safety_checker=False
    )
    path = tmp_path / "epoch-1.safetensors"
    save_sd_checkpoint(path, pipe.unet, pipe.vae, pipe.text_encoder, {"epoch": 1}, "fp32")
    assert detect_family(path) == "sd15"


def test_sd15_full_size_key_set_is_detected(tmp_path):
    """The key names of a full-size SD 1.5 file (as dreamgrid's export writes them for SD 1.5's
    shapes, built on the meta device), each with a 1-sized tensor of the same rank."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dreamgrid.train.export import ldm_state

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12)
        )
    keys = {k: (1,) * v.dim() for k, v in ldm_state(unet, vae, text_encoder).items()}
    assert CHECKPOINT_KEY_NAMES["v1"] in keys
    assert detect_family(write(tmp_path / "v1-5.safetensors", keys)) == "sd15"


@pytest.mark.parametrize(
    "keys, family",
    [
        # SD 1.x's UNet landmark alone (a UNet-only file).
        ({CHECKPOINT_KEY_NAMES["v1"]: (4, 4, 1, 1)}, "sd15"),
        # SDXL base: the OpenCLIP-G text encoder under conditioner.embedders.1.
        (
            {
                CHECKPOINT_KEY_NAMES["xl_base"]: (4,),
                CHECKPOINT_KEY_NAMES["clip_sdxl"]: (77, 4),
                CHECKPOINT_KEY_NAMES["open_clip_sdxl"]: (77, 4),
            },
            "sdxl",
        ),
        # FLUX.1-schnell: double blocks, no guidance embedding (both key spellings).
        ({CHECKPOINT_KEY_NAMES["flux"][0]: (4,)}, "flux"),
        ({CHECKPOINT_KEY_NAMES["flux"][1]: (4,)}, "flux"),
        # FLUX.1-dev: a guidance embedding and 64-channel packed latents in img_in.
        (
            {
                CHECKPOINT_KEY_NAMES["flux"][0]: (4,),
                "guidance_in.in_layer.bias": (4,),
                "img_in.weight": (4, 64),
            },
            "flux",
        ),
    ],
)
def test_single_file_keys_tell_the_family(tmp_path, keys, family):
    path = write(tmp_path / "model.safetensors", keys)
    assert detect_family(path) == family


@pytest.mark.parametrize(
    "keys, named",
    [
        ({CHECKPOINT_KEY_NAMES["v2"]: (4, 1024)}, "Stable Diffusion 2.x"),
        ({CHECKPOINT_KEY_NAMES["xl_refiner"]: (4,)}, "the SDXL refiner"),
        ({CHECKPOINT_KEY_NAMES["sd35_large"][0]: (4, 4)}, "Stable Diffusion 3.5 Large"),
        (
            {
                CHECKPOINT_KEY_NAMES["flux"][0]: (4,),
                "guidance_in.in_layer.bias": (4,),
                "img_in.weight": (4, 384),
            },
            "FLUX.1 Fill",
        ),
    ],
)
def test_single_files_of_other_families_are_refused_by_name(tmp_path, keys, named):
    path = write(tmp_path / "other.safetensors", keys)
    with pytest.raises(SpecError, match=f"other.safetensors: {named} .*trains sd15, sdxl, flux"):
        detect_family(path)
    # Stating a family does not make an SD 2.x model an SD 1.5 one.
    with pytest.raises(SpecError, match=named):
        resolve_family(path, "sd15")


def test_unknown_keys_cannot_tell_and_a_stated_family_decides(tmp_path):
    path = write(tmp_path / "mystery.safetensors", {"encoder.layer.0.weight": (2, 2)})
    with pytest.raises(DreamgridError, match=f"mystery.safetensors: cannot tell .*{FIX}"):
        detect_family(path)
    with pytest.raises(SpecError, match=FIX):
        resolve_family(path, None)
    assert resolve_family(path, "sdxl") == "sdxl"


def test_a_broken_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(SpecError, match="broken.safetensors: not a readable .safetensors file"):
        resolve_family(path, "sd15")


def test_only_the_header_is_read(tmp_path, monkeypatch):
    from safetensors import safe_open

    path = write(tmp_path / "sdxl.safetensors", {CHECKPOINT_KEY_NAMES["xl_base"]: (4,)})
    handle_type = type(safe_open(str(path), framework="pt"))

    def no_tensors(*args, **kwargs):
        raise AssertionError("a tensor was read")

    monkeypatch.setattr(handle_type, "get_tensor", no_tensors, raising=False)
    assert detect_family(path) == "sdxl"


def test_a_pickle_is_not_read_and_a_stated_family_decides(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"not unpickled")
    with pytest.raises(SpecError, match=f"model.ckpt: cannot tell .*{FIX}"):
        detect_family(path)
    assert resolve_family(path, "sd15") == "sd15"


def test_a_stated_family_that_disagrees_is_refused_naming_both(folders):
    with pytest.raises(SpecError, match="states family: flux, but the model is sdxl"):
        resolve_family(folders["sdxl"], "flux")


def test_a_stated_family_must_be_one_of_the_three(folders):
    with pytest.raises(SpecError, match="'sd21' is not one dreamgrid trains"):
        resolve_family(folders["sd15"], "sd21")


def test_a_folder_without_model_index_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SpecError, match="no model_index.json, so not a diffusers pipeline"):
        detect_family(tmp_path)
    with pytest.raises(SpecError, match="no model_index.json"):
        resolve_family(tmp_path, "sd15")


def test_a_missing_path_is_refused(tmp_path):
    with pytest.raises(SpecError, match="no such folder or file"):
        resolve_family(tmp_path / "typo", "sd15")


def pipeline_folder(root, class_name: str, unet: dict | None = None, **components):
    """A folder with model_index.json (and a UNet config), no weights: all detection reads."""
    root.mkdir()
    index = {"_class_name": class_name, "_diffusers_version": "0.35.0", **components}
    (root / "model_index.json").write_text(json.dumps(index))
    if unet is not None:
        (root / "unet").mkdir()
        (root / "unet" / "config.json").write_text(json.dumps(unet))
    return root


def test_folders_of_other_families_are_refused_by_name(tmp_path):
    sd2 = pipeline_folder(
        tmp_path / "sd2", "StableDiffusionPipeline", {"cross_attention_dim": 1024}
    )
    with pytest.raises(SpecError, match="sd2: Stable Diffusion 2.x .*1024-wide"):
        detect_family(sd2)
    sd3 = pipeline_folder(tmp_path / "sd3", "StableDiffusion3Pipeline")
    with pytest.raises(SpecError, match="a StableDiffusion3Pipeline model"):
        resolve_family(sd3, "sdxl")
    refiner = pipeline_folder(
        tmp_path / "refiner",
        "StableDiffusionXLImg2ImgPipeline",
        text_encoder=[None, None],
        text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
    )
    with pytest.raises(SpecError, match="the SDXL refiner"):
        detect_family(refiner)


def test_img2img_folders_are_their_family_and_custom_pipelines_need_a_stated_one(tmp_path):
    sd15 = pipeline_folder(
        tmp_path / "sd15", "StableDiffusionImg2ImgPipeline", {"cross_attention_dim": 768}
    )
    assert detect_family(sd15) == "sd15"
    custom = pipeline_folder(tmp_path / "custom", "MyStudioPipeline")
    with pytest.raises(SpecError, match=f"MyStudioPipeline, a pipeline class diffusers .*{FIX}"):
        detect_family(custom)
    assert resolve_family(custom, "flux") == "flux"
