"""FLUX.1 on the tiny FLUX model (dreamgrid.tiny.build_tiny_flux): a LoRA epoch through the
shared loop, resume equal to replay, the loss against the flow-matching formulas, the LoRA
and full checkpoints loaded by the sampler (LoRA through FluxPipeline.load_lora_weights) with
renders equal to the trained model's, deterministic sampling, and the refusals (negative prompt
without true CFG, DDPM samplers and options, trained text encoders)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dreamgrid import offline
from dreamgrid.errors import SpecError
from dreamgrid.tiny import build_tiny_flux
from dreamgrid.train import loop
from dreamgrid.train.testing import copy_state, next_epoch, tiny_train_spec

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
LORA = {
    "method": "lora",
    "lora_rank": 4,
    "lora_alpha": 8.0,  # scale 2, folded into lora_B on export
    "lora_target_modules": ("to_k", "to_q", "to_v", "to_out.0"),
}


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    import huggingface_hub.constants

    for name, value in offline.SWITCHES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def flux(tmp_path_factory) -> Path:
    return build_tiny_flux(tmp_path_factory.mktemp("model") / "tiny-flux")


def flux_spec(base: Path, out: Path, **changes):
    fields = {
        "family": "flux",
        "arm": "ohwx-noreg-nocap-lora",
        "max_sequence_length": 16,
        "save_precision": "fp32",
        "cache_text_embeddings": True,
        **LORA,
    }
    return tiny_train_spec(base, DEMO / "train", out, **{**fields, **changes})


@pytest.fixture(scope="module")
def lora_run(flux, tmp_path_factory):
    # A high rate, so that three steps change renders clearly.
    spec = flux_spec(flux, tmp_path_factory.mktemp("lora"), learning_rate=1e-2)
    return spec, loop.run(spec)


def settings(**changes):
    from dreamgrid.sample import SampleSettings

    fields = {
        "prompt": "photo of {token} {class}",
        "negative": "",
        "steps": 2,
        "cfg": 3.5,
        "count": 2,
        "seed": 5,
        "width": 64,
        "height": 64,
        "batch_size": 2,
        "scheduler": "euler",
        "max_sequence_length": 16,
    }
    return SampleSettings(**{**fields, **changes})


def render_np(pipe, seed: int = 3) -> np.ndarray:
    return pipe(
        "photo of ohwx woman",
        num_inference_steps=2,
        height=64,
        width=64,
        guidance_scale=3.5,
        max_sequence_length=16,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images


def test_lora_epoch_trains_the_adapter_and_records_flux(lora_run):
    spec, result = lora_run
    assert result["steps"] == 3 and math.isfinite(result["mean_loss"])
    tensors = load_file(str(spec.out_checkpoint))
    assert tensors and all(k.startswith("transformer.") and ".lora_" in k for k in tensors)
    assert any(v.abs().max() > 0 for k, v in tensors.items() if "lora_B" in k)  # B starts at 0
    # Both block kinds adapted: the double-stream attention (with to_out) and the single one.
    assert any(k.startswith("transformer.transformer_blocks.0.attn.to_out.0") for k in tensors)
    assert any(k.startswith("transformer.single_transformer_blocks.0.attn.to_q") for k in tensors)
    meta = json.loads(spec.out_checkpoint.with_suffix(".json").read_text())
    assert meta["family"] == "flux" and meta["flux_guidance"] == 3.5
    assert meta["weighting_scheme"] == "none" and meta["max_sequence_length"] == 16
    with safe_open(str(spec.out_checkpoint), framework="pt") as handle:
        assert handle.metadata()["format"] == "dreamgrid-flux-lora-v1"
    with safe_open(str(spec.state), framework="pt") as handle:
        weights = [k for k in handle.keys() if k.startswith("weights.")]  # noqa: SIM118
    assert weights and all(k.startswith("weights.transformer.") and ".lora_" in k for k in weights)


def test_epoch2_resumed_equals_replayed(lora_run, tmp_path):
    spec, _ = lora_run
    resumed = next_epoch(spec, tmp_path / "a", state=copy_state(spec, tmp_path / "sa"))
    replayed = next_epoch(spec, tmp_path / "b", state=tmp_path / "none.safetensors")
    assert loop.run(resumed)["replayed"] == 0 and loop.run(replayed)["replayed"] == 1
    ta, tb = load_file(str(resumed.out_checkpoint)), load_file(str(replayed.out_checkpoint))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


class Recording(torch.nn.Module):
    """The transformer, recording its inputs and prediction."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer
        self.config = transformer.config
        self.calls: list[dict] = []

    def forward(self, **kwargs):
        out = self.transformer(**kwargs)
        self.calls.append(
            {**{k: v for k, v in kwargs.items() if k != "return_dict"}, "pred": out[0]}
        )
        return out


@pytest.mark.parametrize("scheme", ["none", "sigma_sqrt", "cosmap", "logit_normal"])
def test_loss_is_the_flow_matching_objective(flux, tmp_path, scheme):
    from diffusers import FluxPipeline

    spec = flux_spec(flux, tmp_path, weighting_scheme=scheme)
    models = loop.load_models(spec, torch.device("cpu"))
    models.denoiser = Recording(models.denoiser)
    generator = torch.Generator().manual_seed(11)
    n, size = 3, 8
    ids = [loop.trainer(spec).tokenize(models, "ohwx woman") for _ in range(n)]
    batch = {
        # Zero spread: the latents are exactly the mean, so the noise can be recovered.
        "latent_mean": torch.randn((n, 16, size, size), generator=generator),
        "latent_std": torch.zeros((n, 16, size, size)),
        "input_ids": torch.stack([i["input_ids"] for i in ids]),
        "input_ids_2": torch.stack([i["input_ids_2"] for i in ids]),
        "weight": torch.tensor([1.0, 1.0, 0.5]),
        "is_reg": torch.tensor([False, False, True]),
    }
    loss = loop.compute_loss(spec, models, batch, torch.Generator().manual_seed(3), "cpu")
    call = models.denoiser.calls[-1]
    vae = models.vae.config
    x0 = (batch["latent_mean"] - vae.shift_factor) * vae.scaling_factor
    sigma = call["timestep"].view(-1, 1, 1, 1)  # timestep / 1000 is the flow-matching sigma
    noisy = FluxPipeline._unpack_latents(call["hidden_states"], 2 * size, 2 * size, 2)
    noise = (noisy - (1 - sigma) * x0) / sigma
    pred = FluxPipeline._unpack_latents(call["pred"], 2 * size, 2 * size, 2)
    weight = {
        "sigma_sqrt": sigma**-2.0,
        "cosmap": 2 / (math.pi * (1 - 2 * sigma + 2 * sigma**2)),
    }.get(scheme, torch.ones_like(sigma))
    per_item = (weight * (pred - (noise - x0)) ** 2).mean(dim=(1, 2, 3))
    expected = (per_item * batch["weight"]).mean()  # Kohya: weighted items, batch mean
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-4, atol=1e-6)
    # Timesteps lie on the training scheduler's grid; guidance 3.5; packed 2 x 2 patches.
    assert all(t * 1000 in models.noise_scheduler.timesteps for t in call["timestep"])
    assert call["guidance"].tolist() == [3.5] * n
    assert call["hidden_states"].shape == (n, (size // 2) ** 2, 64)
    assert call["img_ids"].shape == ((size // 2) ** 2, 3) and not call["txt_ids"].any()
    assert call["encoder_hidden_states"].shape[1] == 16  # max_sequence_length
    assert call["pooled_projections"].shape == (n, models.text_encoder.config.hidden_size)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"noise_offset": 0.05}, "noise_offset"),
        ({"min_snr_gamma": 5.0}, "min_snr_gamma"),
        ({"method": "full", "lora_rank": None, "lora_alpha": None, "lora_target_modules": None,
          "train_text_encoder": True}, "train_text_encoder false"),
        ({"weighting_scheme": "uniform"}, "weighting_scheme"),
    ],
)  # fmt: skip
def test_spec_refuses_ddpm_options_and_text_encoder_training(flux, tmp_path, changes, words):
    with pytest.raises(SpecError, match=words):
        flux_spec(flux, tmp_path, **changes)


def test_flux_fields_stay_out_of_other_families_fingerprint_and_metadata(tmp_path):
    sd = tiny_train_spec(tmp_path, tmp_path, tmp_path)
    assert "flux_guidance" not in sd.checkpoint_settings()
    assert sd.fingerprint() == dataclasses.replace(sd, flux_guidance=1.0).fingerprint()
    fx = dataclasses.replace(sd, family="flux")
    assert fx.fingerprint() != dataclasses.replace(fx, flux_guidance=1.0).fingerprint()


def test_lora_targets_are_checked_against_the_transformer(flux):
    from dreamgrid.train import targets

    targets.check(targets.empty_unet(flux), ["to_k", "to_q", "to_v", "to_out.0"])
    # The current train_dreambooth_lora_flux.py default (both streams' attention and MLPs).
    script_default = [
        *("attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0"),
        *("attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out"),
        *("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"),
    ]
    targets.check(targets.empty_unet(flux), script_default)
    with pytest.raises(SpecError, match="to_kk.*transformer"):
        targets.check(targets.empty_unet(flux), ["to_kk"])


@pytest.fixture(scope="module")
def lora_pipe(flux, lora_run):
    from dreamgrid.sample import load_pipeline

    return load_pipeline(flux, lora_run[0].out_checkpoint, "cpu")


def test_lora_export_renders_as_the_trained_model(flux, lora_run, lora_pipe):
    from diffusers import FluxPipeline

    spec, _ = lora_run
    # The trained model: the base with the adapter as training left it (the resume state).
    models = loop.load_models(spec, torch.device("cpu"))
    state = load_file(str(spec.state))
    with torch.no_grad():
        for name, param in models.named_params.items():
            param.copy_(state[f"weights.{name}"])
    trained = FluxPipeline.from_pretrained(flux, transformer=models.denoiser)
    trained.set_progress_bar_config(disable=True)
    base = FluxPipeline.from_pretrained(flux)
    base.set_progress_bar_config(disable=True)
    ours, theirs = render_np(lora_pipe), render_np(trained)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.abs(ours - render_np(base)).max() > 1e-3  # the adapter changes the render


def test_full_fine_tune_with_captions_and_prior_preservation_loads_over_the_base(flux, tmp_path):
    from dreamgrid.sample import load_pipeline

    names = sorted(p.name for p in (DEMO / "train").iterdir())
    rows = [
        f"{name},ohwx woman {'smiling' if i % 2 else 'in a suit'}" for i, name in enumerate(names)
    ]
    (tmp_path / "captions.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
    spec = flux_spec(
        flux,
        tmp_path,
        method="full",
        lora_rank=None,
        lora_alpha=None,
        lora_target_modules=None,
        arm="ohwx-prior-cap",
        learning_rate=1e-4,
        captions=tmp_path / "captions.csv",
        reg_dir=DEMO / "references",
        reg_mode="paired",
        prior_loss_weight=0.5,
    )
    result = loop.run(spec)
    meta = json.loads(spec.out_checkpoint.with_suffix(".json").read_text())
    assert meta["reg_images"] == 3 and meta["regularization"] and meta["method"] == "full"
    assert math.isfinite(result["mean_loss"]) and result["steps"] >= 1
    with safe_open(str(spec.out_checkpoint), framework="pt") as handle:
        assert handle.metadata()["format"] == "dreamgrid-flux-v1"
    pipe = load_pipeline(flux, spec.out_checkpoint, "cpu")
    state = load_file(str(spec.state))
    loaded = pipe.transformer.state_dict()
    assert all(torch.equal(loaded[k[len("weights.transformer.") :]], v) for k, v in state.items()
               if k.startswith("weights."))  # fmt: skip


def test_sampling_is_deterministic_and_batch_independent(lora_run, lora_pipe, tmp_path):
    from PIL import Image

    from dreamgrid.sample import render

    a = render(lora_pipe, settings(), "ohwx", "woman", tmp_path / "a")
    again = render(lora_pipe, settings(), "ohwx", "woman", tmp_path / "again")
    alone = render(lora_pipe, settings(batch_size=1), "ohwx", "woman", tmp_path / "b", seeds=[6])
    assert list(a["seed"]) == [5, 6] and list(a["cfg"]) == [3.5, 3.5] and len(again) == 2
    assert len(alone) == 1

    def pixels(folder: str, seed: int) -> np.ndarray:
        return np.asarray(Image.open(tmp_path / folder / f"render-{seed}.png")).astype(int)

    assert all(np.array_equal(pixels("a", s), pixels("again", s)) for s in (5, 6))
    # Alone or in a batch of two: the same noise; float sums in another order may move a
    # pixel by one level.
    assert np.abs(pixels("a", 6) - pixels("b", 6)).max() <= 1
    assert not np.array_equal(pixels("a", 5), pixels("a", 6))


def test_negative_prompt_needs_true_cfg(lora_pipe, tmp_path):
    from dreamgrid.sample import render

    with pytest.raises(SpecError, match="true_cfg"):
        settings(negative="blurry", family="flux")
    with pytest.raises(SpecError, match="sample.scheduler"):
        settings(scheduler="ddim", family="flux")
    settings(negative="blurry", family="sd15")  # other families keep their negative prompt
    out = tmp_path / "refused"
    with pytest.raises(SpecError, match="true_cfg"):
        render(lora_pipe, settings(negative="blurry"), "ohwx", "woman", out)
    assert not list(out.glob("*.png"))  # refused before any render
    table = render(
        lora_pipe, settings(negative="blurry", true_cfg=2.0, count=1), "ohwx", "woman", out
    )
    assert len(table) == 1 and (out / "render-5.png").is_file()


def test_class_images_render_with_flux_own_scheduler(flux, tmp_path):
    from dreamgrid.regularization import generate_class_images

    common = {"prompt": "photo of a woman", "count": 2, "seed": 1, "steps": 2, "cfg": 3.5}
    with pytest.raises(SpecError, match="regularization.negative"):
        generate_class_images(flux, negative="blurry", size=64, batch_size=2,
                              out_dir=tmp_path / "no", **common)  # fmt: skip
    index = generate_class_images(
        flux, negative="", size=64, batch_size=2, out_dir=tmp_path / "class", **common
    )
    assert list(index["seed"]) == [1, 2] and not (tmp_path / "no").exists()
    assert all((tmp_path / "class" / name).is_file() for name in index["image"])


def test_checkpoints_are_refused_over_another_family(flux, lora_run, tiny_model, tmp_path):
    from safetensors.torch import save_file

    from dreamgrid.sample import load_pipeline
    from dreamgrid.train.export import FORMAT, LORA_FORMAT

    with pytest.raises(SpecError, match="FLUX.1 checkpoint"):
        load_pipeline(tiny_model, lora_run[0].out_checkpoint, "cpu")
    for fmt in (FORMAT, LORA_FORMAT):  # an SD 1.5 full checkpoint or LoRA
        sd = tmp_path / f"{fmt}.safetensors"
        save_file({"x": torch.zeros(1)}, str(sd), metadata={"format": fmt})
        with pytest.raises(SpecError, match="not a FLUX checkpoint"):
            load_pipeline(flux, sd, "cpu")
