"""GPU memory estimates: parameter counts against the models, and the arithmetic of the parts."""

import pytest

from dreamgrid import memory
from dreamgrid.memory import GIB, PUBLISHED, estimate_sampling, estimate_training


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from dreamgrid import tiny

    return tiny.build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


def test_folder_counts_equal_the_loaded_components(tiny_folder):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    counts = memory.count_folder(tiny_folder)
    loaded = {
        "unet": UNet2DConditionModel.from_pretrained(tiny_folder, subfolder="unet"),
        "text_encoder": CLIPTextModel.from_pretrained(tiny_folder, subfolder="text_encoder"),
        "vae": AutoencoderKL.from_pretrained(tiny_folder, subfolder="vae"),
    }
    assert counts == {k: sum(p.numel() for p in m.parameters()) for k, m in loaded.items()}
    assert memory.family_of(counts) == "sd15"
    # The tiny model's configs, counted without building it, give the same numbers.
    tiny = {k: sum(p.numel() for p in m.parameters()) for k, m in memory.tiny_models().items()}
    assert tiny == counts


def test_counts_come_from_the_model_the_config_names(tiny_folder, tmp_path):
    def config(source):
        return {"base_model": source, "allow_pickle": False}

    # The prepared tiny folder counts for a tiny base model, not for a hub id.
    assert memory.base_model(config("tiny"), tiny_folder).source == f"counted in {tiny_folder}"
    hub = memory.base_model(config("org/model"), tiny_folder)
    assert hub.counts == PUBLISHED["sd15"] and hub.models is None
    # A local diffusers folder is counted itself; nothing prepared: the tiny configs.
    assert memory.base_model(config(str(tiny_folder)), tmp_path).counts == memory.count_folder(
        tiny_folder
    )
    assert memory.base_model(config("tiny"), tmp_path).source.endswith("tiny model's configs")


@pytest.mark.parametrize("family", memory.FAMILIES)
def test_published_counts_equal_the_meta_counts_of_the_real_configs(family):
    assert memory.meta_counts(family) == PUBLISHED[family]


def test_published_counts_are_the_published_sizes():
    millions = {f: {k: round(v / 1e6, 2) for k, v in c.items()} for f, c in PUBLISHED.items()}
    assert millions == {
        "sd15": {"unet": 859.52, "text_encoder": 123.06, "vae": 83.65},
        "sdxl": {"unet": 2567.46, "text_encoder": 123.06, "text_encoder_2": 694.66,
                 "vae": 83.65},
        "flux": {"transformer": 11901.41, "text_encoder": 123.06, "text_encoder_2": 4762.31,
                 "vae": 83.82},
    }  # fmt: skip


def test_lora_params_equal_what_peft_adds(tiny_folder):
    from peft import LoraConfig

    targets = ["to_k", "to_q", "to_v", "to_out.0", "proj_in"]
    unet = memory.folder_models(tiny_folder)["unet"]
    counted = memory.lora_params(unet, 8, targets)
    unet.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=targets))
    added = sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)
    assert counted == added > 0


def test_sd15_full_parts_are_the_arithmetic():
    counts = PUBLISHED["sd15"]
    est = estimate_training("sd15", counts, precision="fp16", optimizer="adamw",
                            gradient_checkpointing=True)  # fmt: skip
    unet = counts["unet"]
    assert est.trainable_weights == est.gradients == 4 * unet
    assert est.optimizer_states == 8 * unet
    assert est.frozen_weights == 2 * (counts["vae"] + counts["text_encoder"])
    assert est.activations == int(0.5 * GIB)
    assert est.total == sum(
        (est.frozen_weights, est.trainable_weights, est.gradients, est.optimizer_states,
         est.activations, est.overhead)
    )  # fmt: skip
    # The ShivamShrirao T4 row the coefficients came from (fp16, batch 1, checkpointing,
    # 8-bit Adam, VAE and text encoder freed): 9.92 GB measured.
    t4 = estimate_training("sd15", {"unet": unet}, optimizer="adamw8bit",
                           gradient_checkpointing=True)  # fmt: skip
    assert t4.total / GIB == pytest.approx(9.92, abs=0.3)


def test_the_parts_scale_as_they_should():
    counts = PUBLISHED["sd15"]

    def train(**kw):
        settings = {"precision": "fp16", "optimizer": "adamw", "gradient_checkpointing": False}
        return estimate_training("sd15", counts, **{**settings, **kw})

    assert train(optimizer="adamw8bit").optimizer_states * 4 == train().optimizer_states
    assert train(optimizer="adamw8bit").total < train().total
    lora = train(method="lora")
    assert lora.trainable_weights < train().trainable_weights / 100
    assert lora.total < train().total / 2
    assert train(gradient_checkpointing=True).activations < train().activations
    assert train(precision="no").frozen_weights == 2 * train().frozen_weights
    assert train(batch_size=2).activations == 2 * train().activations
    assert train(resolution=1024).activations == 4 * train().activations
    # A trained text encoder moves from frozen to trainable.
    te = train(train_text_encoder=True)
    assert te.trainable_weights == 4 * (counts["unet"] + counts["text_encoder"])
    assert te.frozen_weights == 2 * counts["vae"]
    sample = estimate_sampling("sd15", counts, batch_size=8)
    assert sample.frozen_weights == 2 * sum(counts.values())
    assert estimate_sampling("sd15", counts, batch_size=4).total < sample.total


def test_flux_full_does_not_fit_24gib_and_sd15_lora_fits_8gib():
    flux = estimate_training("flux", PUBLISHED["flux"], method="full", precision="bf16",
                             optimizer="adamw8bit", gradient_checkpointing=True)  # fmt: skip
    assert not memory.fits(flux, 24 * GIB)
    assert flux.trainable_weights / GIB > 40  # fp32 masters alone
    lora = estimate_training("sd15", PUBLISHED["sd15"], method="lora", precision="fp16",
                             resolution=512, gradient_checkpointing=True)  # fmt: skip
    assert memory.fits(lora, 8 * GIB)
    # FLUX LoRA with cached embeddings: the bf16 transformer and VAE stay, T5 and CLIP go.
    flux_lora = estimate_training("flux", PUBLISHED["flux"], method="lora", precision="bf16",
                                  cached_text_embeddings=True, gradient_checkpointing=True)  # fmt: skip
    assert flux_lora.frozen_weights == 2 * (
        PUBLISHED["flux"]["transformer"] + PUBLISHED["flux"]["vae"]
    )
    # Published LoRA shapes: rank 4 on SD 1.5's attention projections (diffusers' default).
    assert lora.trainable_weights == 4 * 797_184


def test_refusal_names_the_arm_parts_gpu_and_fixes():
    est = estimate_training("sd15", PUBLISHED["sd15"])
    advice = memory.training_advice({"gradient_checkpointing": False, "optimizer": "adamw",
                                     "mixed_precision": "no", "method": "full"})  # fmt: skip
    text = memory.refusal("rare-noreg-nocap", "training", est, 8 * GIB, "--gpu-memory", advice)
    assert text.startswith("arm rare-noreg-nocap: training needs about ")
    assert (
        "optimizer states" in text and "activations" in text and "8.0 GiB of --gpu-memory" in text
    )
    for fix in ("gradient_checkpointing: true", "adamw8bit", "mixed_precision", "axes.method",
                "training.resolution"):  # fmt: skip
        assert fix in text


def test_no_gpu_here():
    import torch

    if not torch.cuda.is_available():
        assert memory.visible_gpu_memory() is None
    else:
        assert all(size > 0 for size in memory.visible_gpu_memory())
