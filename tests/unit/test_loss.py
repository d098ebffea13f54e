"""The training loss against an independent computation, one option at a time.

compute_loss draws its own noise and timesteps. The UNet is wrapped to record what it was
given (noisy latents, timesteps) and what it predicted; with deterministic latents (a cached
distribution of zero spread) the noise is recovered from the noisy latents through the
scheduler's alphas, and the loss is recomputed from the textbook formulas: the epsilon or
velocity target, the per-item MSE, min-SNR-gamma weights, the class items' prior weight, and
Kohya's batch mean or the paired mode's division by the instance items.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dreamgrid.tiny import build_tiny_sd
from dreamgrid.train.data import epoch_batches
from dreamgrid.train.loop import compute_loss, load_models
from dreamgrid.train.testing import tiny_train_spec

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "sd")


class RecordingUNet(torch.nn.Module):
    """The UNet, recording its inputs and prediction for every call."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, noisy, timesteps, hidden, return_dict=False):
        out = self.unet(noisy, timesteps, hidden, return_dict=return_dict)
        self.calls.append((noisy.detach(), timesteps.detach(), out[0].detach()))
        return out


def setup(tiny: Path, tmp_path: Path, prediction: str = "epsilon", **changes):
    spec = tiny_train_spec(tiny, DEMO / "train", tmp_path / "out", **changes)
    models = load_models(spec, torch.device("cpu"))
    if prediction != "epsilon":
        models.noise_scheduler.register_to_config(prediction_type=prediction)
    models.denoiser = RecordingUNet(models.denoiser)
    return spec, models


def batch_of(models, weights: list[float], is_reg: list[bool], size: int = 8) -> dict:
    generator = torch.Generator().manual_seed(11)
    n = len(weights)
    ids = models.tokenizer(
        ["ohwx woman"] * n, padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    return {
        # Zero spread: the latents are exactly the mean, so the noise can be recovered.
        "latent_mean": torch.randn((n, 4, size, size), generator=generator),
        "latent_std": torch.zeros((n, 4, size, size)),
        "input_ids": ids,
        "weight": torch.tensor(weights),
        "is_reg": torch.tensor(is_reg),
    }


def expected_loss(models, batch, gamma=None, paired=False) -> torch.Tensor:
    """The loss from the formulas, given what the UNet saw and predicted."""
    noisy, timesteps, pred = models.denoiser.calls[-1]
    scheduler = models.noise_scheduler
    latents = batch["latent_mean"] * models.vae.config.scaling_factor
    alpha = scheduler.alphas_cumprod[timesteps].float().view(-1, 1, 1, 1)
    noise = (noisy.float() - alpha.sqrt() * latents) / (1 - alpha).sqrt()
    if scheduler.config.prediction_type == "v_prediction":
        target = alpha.sqrt() * noise - (1 - alpha).sqrt() * latents
    else:
        target = noise
    per_item = ((pred.float() - target) ** 2).mean(dim=(1, 2, 3))
    if gamma is not None:
        snr = (alpha / (1 - alpha)).view(-1)
        weight = torch.clamp(snr, max=gamma) / snr
        if scheduler.config.prediction_type == "v_prediction":
            weight = torch.clamp(snr, max=gamma) / (snr + 1)
        per_item = per_item * weight
    weighted = per_item * batch["weight"]
    if paired:
        return weighted.sum() / (~batch["is_reg"]).sum()
    return weighted.mean()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_loss_matches_the_formulas(tiny, tmp_path, prediction, gamma):
    spec, models = setup(tiny, tmp_path, prediction, min_snr_gamma=gamma)
    batch = batch_of(models, [1.0, 1.0, 1.0], [False, False, False])
    loss = compute_loss(spec, models, batch, torch.Generator().manual_seed(3), torch.device("cpu"))
    expected = expected_loss(models, batch, gamma)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_class_items_weigh_prior_loss_weight_and_paired_batches_divide_by_instances(tiny, tmp_path):
    spec, models = setup(tiny, tmp_path, prior_loss_weight=0.25)
    weights, is_reg = [1.0, 1.0, 0.25, 0.25], [False, False, True, True]
    batch = batch_of(models, weights, is_reg)
    kohya = compute_loss(spec, models, batch, torch.Generator().manual_seed(5), torch.device("cpu"))
    assert kohya.item() == pytest.approx(expected_loss(models, batch).item(), rel=1e-4)

    reg_dir = tmp_path / "class"
    reg_dir.mkdir()
    for source in sorted((DEMO / "ground_truth").iterdir()):
        (reg_dir / source.name).write_bytes(source.read_bytes())
    paired_spec, models = setup(
        tiny, tmp_path, prior_loss_weight=0.25, reg_dir=reg_dir, reg_mode="paired"
    )
    paired = compute_loss(
        paired_spec, models, batch, torch.Generator().manual_seed(5), torch.device("cpu")
    )
    # diffusers' instance + w * prior: the weighted sum over the 2 instance items, not the 4.
    assert paired.item() == pytest.approx(
        expected_loss(models, batch, paired=True).item(), rel=1e-4
    )
    assert paired.item() == pytest.approx(2 * kohya.item(), rel=1e-4)
    # The data side gives class items the prior weight the loss multiplies by.
    items = [item for batch in epoch_batches(paired_spec) for item in batch]
    assert {item.weight for item in items if item.is_reg} == {0.25}
    assert {item.weight for item in items if not item.is_reg} == {1.0}


@pytest.mark.parametrize("offset", [0.0, 0.1])
def test_noise_offset_shifts_each_channel_by_its_size(tiny, tmp_path, offset):
    spec, models = setup(tiny, tmp_path, noise_offset=offset)
    size = 32
    means = []
    generator = torch.Generator().manual_seed(9)
    for _ in range(40):
        batch = batch_of(models, [1.0, 1.0], [False, False], size=size)
        compute_loss(spec, models, batch, generator, torch.device("cpu"))
        noisy, timesteps, _ = models.denoiser.calls[-1]
        alpha = models.noise_scheduler.alphas_cumprod[timesteps].float().view(-1, 1, 1, 1)
        latents = batch["latent_mean"] * models.vae.config.scaling_factor
        noise = (noisy.float() - alpha.sqrt() * latents) / (1 - alpha).sqrt()
        means.append(noise.mean(dim=(2, 3)).flatten())
    variance = torch.cat(means).var().item()
    # Per-channel mean of N(0, 1) noise over size^2 pixels, plus the shift's offset^2.
    expected = 1 / size**2 + offset**2
    assert variance == pytest.approx(expected, rel=0.3)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_steps_of_the_trainer_equal_diffusers_reference_step(tiny, tmp_path, method):
    """N optimizer steps of train_epoch against the inner loop of diffusers'
    train_dreambooth.py (benchmarks/bench_train.py), same weights, batches and draws: every
    step's loss equal, so every update before it was equal too."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_train

    images = bench_train.make_images(tmp_path / "images", 2, 64)
    lora = {
        "method": "lora",
        "lora_rank": 4,
        "lora_alpha": 4.0,
        "lora_target_modules": ("to_k", "to_q", "to_v", "to_out.0"),
    }
    spec = bench_train.make_spec(
        tiny, images, tmp_path / "run", repeats=2, learning_rate=1e-3,
        **(lora if method == "lora" else {}),
    )  # fmt: skip
    result = bench_train.compare(spec, warmup=0)
    assert result["ours"]["steps"] == result["reference"]["steps"] == 4
    assert result["max_abs_loss_difference"] == 0.0
    first = result["first_losses"]
    assert first["ours"][1] != first["ours"][0]  # the weights moved between steps


def test_min_snr_weights_damp_low_noise_steps_only(tiny):
    from diffusers import DDPMScheduler

    from dreamgrid.train.sd15 import min_snr_weights

    scheduler = DDPMScheduler.from_pretrained(tiny, subfolder="scheduler")
    weights = min_snr_weights(scheduler, torch.tensor([1, 50, 500, 999]), gamma=5.0)
    assert weights[0] < weights[1] < 1.0  # high SNR (little noise): down-weighted
    assert torch.equal(weights[2:], torch.ones(2))  # SNR below gamma: plain MSE
