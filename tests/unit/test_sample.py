"""Sample stage on the tiny random-weight SD pipeline (CPU, 64 px, 3 steps)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dreamgrid.errors import SpecError
from dreamgrid.prompts import fill
from dreamgrid.sample import (
    RENDER_COLUMNS,
    SCHEDULERS,
    SampleSettings,
    load_pipeline,
    render,
    sample_checkpoint,
    set_scheduler,
)
from dreamgrid.tiny import build_tiny_sd
from dreamgrid.train.export import save_sd_checkpoint

SETTINGS = SampleSettings(
    prompt="headshot photo of {token} {class}",
    negative="smile, text, {class} cartoon",
    steps=3,
    cfg=8.0,
    count=5,
    seed=100,
    width=64,
    height=64,
    batch_size=4,
    scheduler="euler",
)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "sd")


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    return load_pipeline(tiny_sd, None, device="cpu")


@pytest.fixture(scope="module")
def perturbed_checkpoint(tiny_sd, tmp_path_factory) -> Path:
    """A checkpoint whose UNet is the base UNet plus noise, written as the trainer writes
    every epoch (one SD-layout file, fp32 so the weights come back exactly)."""
    import torch

    other = load_pipeline(tiny_sd, None, device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in other.unet.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    path = tmp_path_factory.mktemp("ckpt") / "epoch-1.safetensors"
    save_sd_checkpoint(
        path, other.unet, other.vae, other.text_encoder, {"arm": "test", "epoch": 1}, "fp32"
    )
    return path


@pytest.mark.parametrize("scheduler", ["euler", "euler_a"])
def test_batch_size_does_not_change_renders(pipe, tmp_path, scheduler):
    # Every image has its own generator, so batch 1 and batch 4 start from the same noise
    # (and, for euler_a, draw the same step noise). CPU kernels for different batch shapes
    # round differently in the last float bits, which can move a pixel by one level.
    one = dataclasses.replace(SETTINGS, batch_size=1, scheduler=scheduler)
    four = dataclasses.replace(SETTINGS, batch_size=4, scheduler=scheduler)
    t1 = render(pipe, one, "ohwx", "woman", tmp_path / "b1")
    t4 = render(pipe, four, "ohwx", "woman", tmp_path / "b4")
    assert list(t1.seed) == list(t4.seed) == [100, 101, 102, 103, 104]
    for name in t1.image:
        diff = np.abs(pixels(tmp_path / "b1" / name) - pixels(tmp_path / "b4" / name))
        assert diff.max() <= 2, name
        assert diff.mean() < 0.05, name
    # ...while different seeds give clearly different images.
    a, b = (pixels(tmp_path / "b1" / n) for n in t1.image[:2])
    assert np.abs(a - b).mean() > 5


def test_same_settings_give_pixel_identical_renders(pipe, tmp_path):
    settings = dataclasses.replace(SETTINGS, count=3, scheduler="euler_a")
    t1 = render(pipe, settings, "ohwx", "woman", tmp_path / "x")
    t2 = render(pipe, settings, "ohwx", "woman", tmp_path / "y")
    for name in t1.image:
        assert np.array_equal(pixels(tmp_path / "x" / name), pixels(tmp_path / "y" / name))
    assert t1.equals(t2)


def test_render_table_and_png_text_chunks(pipe, tmp_path):
    settings = dataclasses.replace(SETTINGS, count=2)
    table = render(pipe, settings, "ohwx", "woman", tmp_path, checkpoint_label="epoch-3")
    assert list(table.columns) == list(RENDER_COLUMNS)
    assert list(table.image) == ["render-100.png", "render-101.png"]
    row = table.iloc[1]
    assert row.prompt == "headshot photo of ohwx woman"
    assert row.negative == "smile, text, woman cartoon"
    assert (row.steps, row.cfg, row.scheduler, row.width, row.height) == (3, 8.0, "euler", 64, 64)
    image = Image.open(tmp_path / "render-101.png")
    assert image.size == (64, 64)
    assert image.text["seed"] == "101"
    assert image.text["prompt"] == "headshot photo of ohwx woman"
    assert image.text["negative"] == "smile, text, woman cartoon"
    assert image.text["scheduler"] == "euler"
    assert image.text["steps"] == "3"
    assert image.text["checkpoint"] == "epoch-3"
    assert image.text["prompt_set"] == "main" and set(table.prompt_set) == {"main"}


def test_extra_prompt_set_may_leave_out_the_token(pipe, tmp_path):
    # Class bleed: the class prompt without the token, on the same seeds as `main`.
    bleed = dataclasses.replace(SETTINGS, count=1, prompt="photo of a {class}", prompt_set="bleed")
    table = render(pipe, bleed, "ohwx", "woman", tmp_path)
    assert table.prompt.tolist() == ["photo of a woman"]
    assert table.prompt_set.tolist() == ["bleed"] and table.seed.tolist() == [100]
    assert Image.open(tmp_path / "render-100.png").text["prompt_set"] == "bleed"


def test_token_with_spaces_and_quotes(pipe, tmp_path):
    token = 'Emma "E." O\'Neil {x}'
    settings = dataclasses.replace(SETTINGS, count=1)
    out_table = tmp_path / "renders.csv"
    table = sample_checkpoint(
        pipe_base(pipe), None, settings, token, "woman", tmp_path / "renders", out_table
    )
    expected = fill(SETTINGS.prompt, token, "woman")
    assert expected == 'headshot photo of Emma "E." O\'Neil {x} woman'
    assert table.prompt.tolist() == [expected]
    assert pd.read_csv(out_table).prompt.tolist() == [expected]
    assert Image.open(tmp_path / "renders" / "render-100.png").text["prompt"] == expected


def pipe_base(pipe) -> Path:
    """The folder the module's pipeline was loaded from."""
    return Path(pipe.config._name_or_path)


def test_seeds_do_not_depend_on_checkpoint(tiny_sd, perturbed_checkpoint, tmp_path):
    settings = dataclasses.replace(SETTINGS, count=3)
    base = sample_checkpoint(
        tiny_sd, None, settings, "ohwx", "woman", tmp_path / "base", tmp_path / "b.csv"
    )
    trained = sample_checkpoint(
        tiny_sd,
        perturbed_checkpoint,
        settings,
        "ohwx",
        "woman",
        tmp_path / "ck",
        tmp_path / "c.csv",
    )
    assert list(base.seed) == list(trained.seed) == [100, 101, 102]
    # image: relative to the folder above the renders' own (renders/ in the workflow)
    assert list(base.image) == [f"base/render-{seed}.png" for seed in base.seed]
    names = [Path(image).name for image in base.image]
    assert names == [Path(image).name for image in trained.image]
    assert set(base.checkpoint) == {"base"}
    assert set(trained.checkpoint) == {str(perturbed_checkpoint)}
    written = pd.read_csv(tmp_path / "c.csv")
    assert list(written.columns) == [*RENDER_COLUMNS, "checkpoint"]
    assert list(written.seed) == [100, 101, 102]
    # The checkpoint's weights are used: same seed, different image.
    for name in names:
        diff = np.abs(pixels(tmp_path / "base" / name) - pixels(tmp_path / "ck" / name))
        assert diff.mean() > 1, name
    assert Image.open(tmp_path / "ck" / "render-100.png").text["checkpoint"] == str(
        perturbed_checkpoint
    )


def test_load_pipeline_loads_checkpoint_weights(tiny_sd, perturbed_checkpoint):
    import torch

    pipe = load_pipeline(tiny_sd, perturbed_checkpoint, device="cpu")
    # the perturbed weights come back: a fresh base pipeline plus the fixture's same noise
    base = load_pipeline(tiny_sd, None, device="cpu")
    loaded = dict(pipe.unet.named_parameters())
    generator = torch.Generator().manual_seed(0)
    for key, param in base.unet.named_parameters():
        expected = param.detach() + 0.05 * torch.randn(param.shape, generator=generator)
        assert torch.equal(loaded[key].detach(), expected), key
    assert pipe.unet.dtype == torch.float32
    assert pipe.safety_checker is None


def test_sample_checkpoint_replaces_stale_output_dir(tiny_sd, tmp_path):
    out = tmp_path / "renders"
    out.mkdir()
    (out / "render-999.png").write_bytes(b"stale")
    settings = dataclasses.replace(SETTINGS, count=1)
    sample_checkpoint(tiny_sd, None, settings, "ohwx", "woman", out, tmp_path / "t.csv")
    assert sorted(p.name for p in out.iterdir()) == ["render-100.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["renders", "t.csv"]


def test_render_subset_of_seeds(pipe, tmp_path):
    table = render(pipe, SETTINGS, "ohwx", "woman", tmp_path, seeds=[104, 101, 103, 100])
    assert list(table.seed) == [104, 101, 103, 100]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "render-100.png",
        "render-101.png",
        "render-103.png",
        "render-104.png",
    ]
    with pytest.raises(SpecError, match="not among"):
        render(pipe, SETTINGS, "ohwx", "woman", tmp_path, seeds=[99])


def test_every_scheduler_renders(pipe, tmp_path):
    for name in SCHEDULERS:
        settings = dataclasses.replace(SETTINGS, count=1, scheduler=name, batch_size=1)
        render(pipe, settings, "ohwx", "woman", tmp_path / name)
        assert type(pipe.scheduler).__name__ == SCHEDULERS[name]
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"


def test_scheduler_swap_keeps_model_betas(pipe):
    set_scheduler(pipe, "ddim")
    set_scheduler(pipe, "euler")
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.scheduler.config.beta_end == pytest.approx(0.012)
    assert pipe.scheduler.config.steps_offset == 1


def test_unknown_scheduler_lists_names(pipe):
    # The config schema refuses one before any job (test_config.py); a caller passing a name
    # by hand gets the names too.
    with pytest.raises(SpecError) as err:
        set_scheduler(pipe, "lms")
    for name in SCHEDULERS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"prompt": "photo of a {class}"}, "token"),
        # width 60, count 0, batch_size 0, cfg -1 (and 0, which this class used to take) are
        # the config schema's to refuse, before any job:
        # tests/unit/test_config.py::test_the_schema_owns_the_ranges_the_jobs_settings_had.
    ],
)
def test_invalid_settings(change, match):
    with pytest.raises(SpecError, match=match):
        dataclasses.replace(SETTINGS, **change)


def test_missing_model_and_checkpoint(tiny_sd, tmp_path):
    with pytest.raises(SpecError, match="model_index.json"):
        load_pipeline(tmp_path / "nope", None, device="cpu")
    with pytest.raises(SpecError, match="checkpoint not found"):
        load_pipeline(tiny_sd, tmp_path / "missing.safetensors", device="cpu")
    # a weights file without the trainer's format (e.g. the old weights-only layout) is
    # refused before the base model is loaded, with the fix
    import torch
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"unet.conv_in.weight": torch.zeros(1)}, str(foreign))
    with pytest.raises(SpecError, match="rerun the train stage"):
        load_pipeline(tiny_sd, foreign, device="cpu")


def test_shards_equal_one_unsharded_render(tiny_sd, tmp_path):
    """Two shards (renders 0-3 and 4) give the same files as one run of all five renders."""
    from dreamgrid.sample import shard_ranges

    whole = sample_checkpoint(
        tiny_sd, None, SETTINGS, "ohwx", "woman", tmp_path / "all", tmp_path / "all.csv"
    )
    tables = []
    for k, (start, stop) in enumerate(shard_ranges(SETTINGS.count, 4, SETTINGS.batch_size)):
        settings = dataclasses.replace(SETTINGS, count=stop)
        out = tmp_path / "renders" / f"shard-{k}"
        tables.append(
            sample_checkpoint(
                tiny_sd, None, settings, "ohwx", "woman", out, out.with_suffix(".csv"), first=start
            )
        )
    sharded = pd.concat(tables, ignore_index=True)
    assert list(sharded.seed) == list(whole.seed) == [100, 101, 102, 103, 104]
    assert list(sharded.image) == [f"shard-{i // 4}/render-{100 + i}.png" for i in range(5)]
    assert pd.read_csv(tmp_path / "renders" / "shard-1.csv").image.tolist() == [
        "shard-1/render-104.png"
    ]
    for whole_image, rel in zip(whole.image, sharded.image, strict=True):
        name = Path(whole_image).name
        # Equal batch shapes (shard 0 = the first batch of 4): pixel-identical. The last shard
        # renders its one image as a batch of 1 where the whole run had it in a batch of 1
        # too (5 = 4 + 1), so it is identical as well.
        assert np.array_equal(pixels(tmp_path / "all" / name), pixels(tmp_path / "renders" / rel))
        assert Image.open(tmp_path / "renders" / rel).text["seed"] == name[7:-4]
    with pytest.raises(SpecError, match="outside"):
        sample_checkpoint(
            tiny_sd, None, SETTINGS, "ohwx", "woman", tmp_path / "x", tmp_path / "x.csv", first=5
        )


def test_prompts_that_fit_are_left_to_the_pipeline(pipe):
    from dreamgrid.sample import long_prompt_embeddings

    assert long_prompt_embeddings(pipe, "photo of ohwx man", "cartoon") is None


def test_long_prompts_are_encoded_in_chunks_not_truncated(pipe, caplog):
    import torch

    from dreamgrid.sample import long_prompt_embeddings

    # A one-letter word is one token (CLIP's BPE): 160 words are 160 tokens.
    long = "a " * 100 + "b " * 60
    prompt_embeds, negative_embeds = long_prompt_embeddings(pipe, long, "cartoon")
    width = pipe.text_encoder.config.hidden_size
    assert prompt_embeds.shape == negative_embeds.shape == (1, 3 * 77, width)
    # Chunk 1 is the first 75 tokens encoded as a prompt of its own, exactly as the pipeline
    # encodes a prompt that fits; chunk 3 holds the last 10 tokens.
    first, _ = pipe.encode_prompt("a " * 75, "cpu", 1, False)
    assert torch.equal(prompt_embeds[:, :77], first)
    last, _ = pipe.encode_prompt("b " * 10, "cpu", 1, False)
    assert torch.equal(prompt_embeds[:, 2 * 77 :], last)
    # The short negative is padded with chunks of the empty prompt.
    negative, _ = pipe.encode_prompt("cartoon", "cpu", 1, False)
    empty, _ = pipe.encode_prompt("", "cpu", 1, False)
    assert torch.equal(negative_embeds[:, :77], negative)
    assert torch.equal(negative_embeds[:, 77:154], empty)


def test_a_long_prompt_renders_without_truncation(pipe, tmp_path, caplog):
    from dreamgrid.sample import generate_images

    def one(prompt: str) -> np.ndarray:
        _seed, image = next(generate_images(pipe, prompt, "x", [3], 2, 8.0, 64, 64, 1))
        return np.asarray(image)

    head = "a " * 75  # the whole window
    with caplog.at_level("WARNING"):
        full = one(head + "in a red hat")
    assert "longer than the specified maximum" not in caplog.text
    # The pipeline alone would cut the prompt to its first 75 tokens; the tail changes the render.
    assert not np.array_equal(full, one(head))


def test_candidates_render_in_one_job_with_one_model_load(tiny_sd, tmp_path, monkeypatch):
    """The token finder's job renders several names after one load of the base model, and
    each name's renders equal that name rendered alone."""
    from dreamgrid import sample

    loads = []
    real = sample.load_pipeline
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: loads.append(a) or real(*a, **k))
    names = {"idris-elba": "Idris Elba", "will-smith": "Will Smith"}
    settings = dataclasses.replace(SETTINGS, count=2)
    table = sample.render_candidates(
        tiny_sd, settings, names, "man", tmp_path / "group-0", tmp_path / "group-0.csv"
    )
    assert len(loads) == 1
    assert list(table.candidate) == ["Idris Elba"] * 2 + ["Will Smith"] * 2
    assert list(table.image[:2]) == ["idris-elba/render-100.png", "idris-elba/render-101.png"]
    assert sorted(p.name for p in (tmp_path / "group-0").iterdir()) == list(names)
    alone = sample_checkpoint(
        tiny_sd, None, settings, "Will Smith", "man", tmp_path / "ws", tmp_path / "ws.csv"
    )
    for image in alone.image:
        assert np.array_equal(
            pixels(tmp_path / image), pixels(tmp_path / "group-0" / "will-smith" / Path(image).name)
        )
