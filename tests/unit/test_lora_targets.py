"""LoRA target_modules checked against a UNet built from its config on the meta device."""

import json
import re
from pathlib import Path

import pytest

from dreamgrid import tiny
from dreamgrid.errors import SpecError
from dreamgrid.train import targets


@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory):
    """A diffusers folder holding only the tiny UNet's config: no weights to load."""
    folder = tmp_path_factory.mktemp("base")
    config = {"_class_name": "UNet2DConditionModel", **tiny.TINY_UNET}
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    return folder


def test_the_default_targets_pass_and_no_weights_are_allocated(unet_folder):
    unet = targets.empty_unet(unet_folder)
    assert all(p.device.type == "meta" for p in unet.parameters())
    targets.check(unet, ["to_k", "to_q", "to_v", "to_out.0"])


def test_a_typo_is_named_with_close_names_even_beside_good_targets():
    # peft itself accepts this list (to_q matches), and would silently train fewer layers.
    with pytest.raises(SpecError, match=r"lora.target_modules: 'to_kk' \(did you mean to_k"):
        targets.check(targets.empty_unet(None), ["to_kk", "to_q"])


def test_a_block_that_peft_cannot_adapt_is_named():
    with pytest.raises(SpecError, match=r"'attn1' \(Attention\) is a block"):
        targets.check(targets.empty_unet(None), ["attn1"])


def test_the_job_records_how_many_layers_get_adapters(unet_folder, tmp_path):
    out = tmp_path / "lora_targets.json"
    record = targets.check_lora_targets(unet_folder, ["to_k", "to_v"], out)
    assert json.loads(out.read_text()) == record
    unet = targets.empty_unet(unet_folder)
    expected = sum(1 for name, _ in unet.named_modules() if re.search(r"\.to_[kv]$", name))
    assert record["layers"] == expected > 0


def test_a_failing_job_writes_nothing(unet_folder, tmp_path):
    out = tmp_path / "lora_targets.json"
    with pytest.raises(SpecError, match="to_x"):
        targets.check_lora_targets(unet_folder, ["to_x"], out)
    assert not out.exists() and list(Path(tmp_path).iterdir()) == []


def test_a_folder_without_a_unet_config_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(SpecError, match=r"no unet/config.json"):
        targets.empty_unet(tmp_path)
