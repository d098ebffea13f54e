"""CLIPScore on a tiny random-weight CLIP (the code path; real CLIP weights are the user's)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dreamgrid import clip_score
from dreamgrid.errors import SpecError
from dreamgrid.io import load_rgb
from dreamgrid.tiny import build_tiny_clip

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
IMAGES = [
    DEMO / "train" / "obama.jpg",
    DEMO / "ground_truth" / "biden.jpg",
    DEMO / "train" / "obama2.jpg",
]
PROMPTS = ["headshot photo of ohwx man", "oil painting of ohwx man", "ohwx man in sunglasses"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return clip_score.load(build_tiny_clip(tmp_path_factory.mktemp("clip")), device="cpu")


def test_scores_equal_clips_own_logits(clip):
    model, processor = clip
    got = clip_score.scores(model, processor, IMAGES, PROMPTS, batch_size=2)
    inputs = processor(
        text=PROMPTS, images=[load_rgb(p) for p in IMAGES], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        logits = model(**inputs).logits_per_image  # logit_scale.exp() * cosine, all pairs
    cosine = torch.diagonal(logits) / model.logit_scale.exp().detach()
    expected = (100 * cosine.clamp(min=0)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert got.shape == (3,) and (got >= 0).all() and (got <= 100).all()
    single = clip_score.scores(model, processor, IMAGES, PROMPTS, batch_size=1)
    np.testing.assert_allclose(single, got, atol=1e-4)


def test_run_reads_the_shards_and_writes_one_row_per_render(clip, tmp_path):
    renders = tmp_path / "renders"
    for k, (image, prompt) in enumerate(zip(IMAGES[:2], PROMPTS[:2], strict=True)):
        (renders / f"shard-{k}").mkdir(parents=True)
        load_rgb(image).save(renders / f"shard-{k}" / f"render-{k}.png")
        row = {"seed": [k], "image": [f"shard-{k}/render-{k}.png"], "prompt_set": ["main"]}
        pd.DataFrame({**row, "prompt": [prompt]}).to_csv(renders / f"shard-{k}.csv", index=False)
    model_dir = Path(clip[0].name_or_path)
    out = tmp_path / "clip.csv"
    table = clip_score.clip_score(
        model_dir,
        [renders / "shard-0.csv", renders / "shard-1.csv"],
        [renders / "shard-0", renders / "shard-1"],
        out,
        arm="rare-noreg-nocap",
        epoch=2,
    )
    assert list(pd.read_csv(out).columns) == list(clip_score.COLUMNS)
    assert list(table["seed"]) == [0, 1]
    direct = clip_score.scores(*clip, IMAGES[:2], PROMPTS[:2])
    np.testing.assert_allclose(table["clip_score"], direct, atol=1e-4)
    summary = clip_score.summarize([out])
    assert summary.to_dict("records") == [
        {"arm": "rare-noreg-nocap", "epoch": 2, "prompt_set": "main",
         "clip_score": pytest.approx(direct.mean())},
    ]  # fmt: skip


def test_a_folder_without_clip_is_refused(tmp_path):
    with pytest.raises(SpecError, match="score.clip_model"):
        clip_score.load(tmp_path)
