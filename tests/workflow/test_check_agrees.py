"""`dreamgrid check` and Snakemake refuse the same config files with the same message, before
any job (and before Snakemake builds its job graph: a runaway `count` is refused at once)."""

import subprocess
import sys

import pytest
from conftest import snakemake

pytestmark = pytest.mark.slow

BASE = """\
subject:
  class_word: woman
  train_images: data/subject/train
  references: data/subject/references
base_model: tiny
caption: {model: tiny}
axes: {token: {rare: ohwx}}
"""

CASES = {
    "epochs written as a decimal": (
        BASE + "training: {epochs: 2.0}\n",
        "training.epochs is 2.0, a decimal number",
    ),
    "a billion renders": (BASE + "sample: {count: 1000000000}\n", "above limits.max_renders"),
    "more arms than limits.max_arms": (
        BASE.replace(
            "{rare: ohwx}}", "{rare: ohwx, other: sks}, regularization: [none, generated]}"
        )
        + "training: {replicates: 3}\nlimits: {max_arms: 10}\n",
        "this grid has 12 arms (training runs, replicates included; axes.design: full), above"
        + " limits.max_arms (10). To fix: use `axes.design: one_at_a_time`",
    ),
    "count as an exponent": (BASE + "sample: {count: 1.0e+9}\n", "sample.count is 1000000000.0"),
    "NaN guidance": (BASE + "sample: {cfg: .nan}\n", "sample.cfg is nan"),
    "main prompt without the token": (
        BASE + "sample: {prompt: 'photo of a {class}'}\n",
        "lacks {token}",
    ),
    "a misspelt placeholder": (
        BASE + "sample: {prompt: 'photo of {Token} {class}'}\n",
        "has {Token}, which nothing fills in",
    ),
    "shards that split a batch": (
        BASE + "sample: {shard_size: 6, batch_size: 4}\n",
        "must be a multiple of sample.batch_size",
    ),
    # Built only by the training job's spec before: the schema lets it through.
    "a text-encoder rate without the text encoder": (
        BASE + "training: {text_encoder_lr: 1.0e-5}\n",
        "config key training.text_encoder_lr (arm rare-noreg-nocap, epoch 1)",
    ),
    "a LoRA target typo": (
        BASE.replace("axes: {token: {rare: ohwx}}", "axes: {token: {rare: ohwx}, method: [lora]}")
        + "lora: {target_modules: [to_k, to_qq]}\n",
        "lora.target_modules: 'to_qq' (did you mean to_q",
    ),
    "a LoRA target that is a block": (
        BASE.replace("axes: {token: {rare: ohwx}}", "axes: {token: {rare: ohwx}, method: [lora]}")
        + "lora: {target_modules: [attn1]}\n",
        "'attn1' (Attention) is a block",
    ),
    # The rest of the cases that a job used to refuse after hours of training.
    "an adaptive search of one arm": (
        BASE + "search: {method: successive_halving}\n",
        "search.method successive_halving compares arms, but the axes make 1 arm",
    ),
    "sampling steps written as a decimal": (
        BASE + "sample: {steps: 10.0}\n",
        "sample.steps is 10.0, a decimal number",
    ),
    "a NaN threshold": (BASE + "score: {thresholds: [.nan]}\n", "score.thresholds[0] is nan"),
    "a face model typo": (
        BASE + "score: {models: [Facenet5122]}\n",
        "'Facenet5122' is not a DeepFace name (did you mean 'Facenet512'?)",
    ),
    "a negative training seed": (
        BASE + "training: {seed: -1}\n",
        "at training.seed: -1 is less than the minimum of 0",
    ),
    "Adam beta1 of 5": (
        BASE + "training: {adam_beta1: 5}\n",
        "at training.adam_beta1: 5 is greater than or equal to the maximum of 1",
    ),
    "Adam epsilon of 0": (
        BASE + "training: {adam_epsilon: 0}\n",
        "at training.adam_epsilon: 0 is less than or equal to the minimum of 0",
    ),
    "an infinite learning rate": (
        BASE + "training: {learning_rate: .inf}\n",
        "training.learning_rate is inf",
    ),
    # Ranges the jobs' settings classes re-checked (and got wrong: the sampler took cfg 0);
    # the schema is their one source.
    "a guidance scale of 0": (
        BASE + "sample: {cfg: 0}\n",
        "at sample.cfg: 0 is less than or equal to the minimum of 0",
    ),
    "a LoRA rank of 0": (
        BASE.replace("axes: {token: {rare: ohwx}}", "axes: {token: {rare: ohwx}, method: [lora]}")
        + "lora: {rank: 0}\n",
        "at lora.rank: 0 is less than the minimum of 1",
    ),
    "a key given twice": (BASE + "base_model: other\n", "duplicate key 'base_model'"),
    "aliases": (BASE + "x: &a [1]\ny: [*a, *a]\n", "aliases (*name) are not allowed"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_and_snakemake_give_the_same_message(study_dir, case):
    text, message = CASES[case]
    path = study_dir / "case.yaml"
    path.write_text(text)
    check = subprocess.run(
        [sys.executable, "-m", "dreamgrid", "check", "case.yaml"],
        cwd=study_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode != 0
    assert message in check.stderr, check.stderr
    plan = snakemake(
        study_dir, "--dry-run", "--cores", "1", "--configfile", "case.yaml", timeout=120
    )
    assert plan.returncode != 0
    assert message in plan.stdout + plan.stderr, plan.stderr[-3000:]
    assert not (study_dir / "results").exists()
