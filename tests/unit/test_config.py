import copy
from pathlib import Path

import pytest
import yaml

from dreamgrid import config as cfg
from dreamgrid.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "subject": {"class_word": "woman", "train_images": "a", "references": "b"},
    "base_model": "tiny",
    "axes": {"token": {"rare": "ohwx"}},
}


def minimal(**overrides):
    config = copy.deepcopy(MINIMAL)
    for dotted, value in overrides.items():
        node = config
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return config


def test_defaults_come_from_the_schema():
    config = cfg.validate(minimal())
    assert config["training"]["repeats"] == 25
    assert config["training"]["epochs"] == 6
    assert config["sample"]["cfg"] == 8.0
    assert config["sample"]["scheduler"] == "euler"
    assert config["axes"]["regularization"] == ["none"]
    assert config["subject"]["ground_truth"] is None


def test_validate_does_not_mutate_input_nor_share_defaults():
    original = minimal()
    first = cfg.validate(original)
    assert "training" not in original
    first["training"]["epochs"] = 99
    assert cfg.validate(minimal())["training"]["epochs"] == 6


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"training__epochs": -1}, "training.epochs"),
        ({"sample__cfg": 0}, "sample.cfg"),
        ({"sample__width": 500}, "sample.width"),
        ({"training__resolution": 100}, "training.resolution"),
        ({"score__thresholds": [0]}, "score.thresholds"),
        ({"axes__regularization": ["sometimes"]}, "axes.regularization"),
        ({"axes__captions": ["gpt"]}, "axes.captions"),
        ({"axes__token": {"rare": "oh\nwx"}}, "axes.token.rare"),
        ({"axes__token": {"Bad-Name": "ohwx"}}, "axes.token"),
        ({"trainig": {}}, "top level"),
    ],
)
def test_bad_values_name_the_key(overrides, where):
    with pytest.raises(SpecError, match=where.replace(".", r"\.")):
        cfg.validate(minimal(**overrides), source="my.yaml")


def test_bucket_settings_are_checked_before_any_job():
    with pytest.raises(SpecError, match=r"my\.yaml: training \(aspect_ratio buckets\).*within"):
        cfg.validate(
            minimal(training__aspect_ratio="buckets", training__bucket_max_size=448),
            source="my.yaml",
        )
    # The same sizes are fine while center-cropping (they are not used).
    cfg.validate(minimal(training__bucket_max_size=448))


def test_ground_truth_axis_needs_folder():
    with pytest.raises(SpecError, match="subject.ground_truth"):
        cfg.validate(minimal(axes__regularization=["none", "ground_truth"]))


def test_expand_arms_is_the_product_of_axes_in_config_order():
    config = cfg.validate(
        minimal(
            axes__token={"celebrity": "alexa davalos", "rare": "ohwx"},
            axes__regularization=["none", "generated"],
            axes__captions=["blip", "none"],
        )
    )
    arms = cfg.expand_arms(config)
    assert [a.arm for a in arms] == [
        "celebrity-noreg-blip",
        "celebrity-noreg-nocap",
        "celebrity-genreg-blip",
        "celebrity-genreg-nocap",
        "rare-noreg-blip",
        "rare-noreg-nocap",
        "rare-genreg-blip",
        "rare-genreg-nocap",
    ]
    assert arms[0].token == "alexa davalos"
    assert arms[-1].as_params() == {
        "arm": "rare-genreg-nocap",
        "token_name": "rare",
        "token": "ohwx",
        "regularization": "generated",
        "captions": "none",
    }


@pytest.mark.parametrize("name", ["config/config.yaml", "config/experiment.yaml"])
def test_shipped_configs_are_valid(name):
    config = cfg.load(ROOT / name)
    assert cfg.expand_arms(config)


def test_demo_config_is_the_issue_grid():
    config = cfg.load(ROOT / "config/config.yaml")
    assert cfg.is_demo(config)
    assert len(config["axes"]["token"]) == 2
    assert config["axes"]["regularization"] == ["none", "generated"]
    assert config["axes"]["captions"] == ["blip", "none"]
    assert config["training"]["epochs"] == 2
    assert not cfg.is_demo(cfg.load(ROOT / "config/experiment.yaml"))


def test_load_missing_file(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        cfg.load(tmp_path / "nope.yaml")


def test_every_schema_key_has_description_and_default():
    schema = yaml.safe_load(cfg.SCHEMA.read_text())

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            here = f"{path}.{key}".lstrip(".")
            assert "description" in sub, here
            # Exactly one of base_model and axes.base_model; by_base_model keys are optional.
            optional = {"base_model", "axes.base_model"} | {
                f"{s}.by_base_model" for s in cfg.BY_BASE_MODEL
            }
            if here not in {"subject", "axes", "axes.token", *optional} and not (
                here.startswith("subject.") and key in {"class_word", "train_images", "references"}
            ):
                assert "default" in sub, here
            walk(sub, here)

    walk(schema, "")


def test_config_readme_is_generated_from_the_schema():
    # Regenerate with `dreamgrid config-docs` after editing the schema.
    assert (ROOT / "config" / "README.md").read_text() == cfg.schema_markdown()


@pytest.mark.parametrize(
    ("model", "own", "stricter"),
    # DeepFace 0.0.103's same-person thresholds for cosine: Dlib 0.07, VGG-Face 0.68.
    [("Dlib", 0.07, 0.06), ("VGG-Face", 0.68, 0.58)],
)
def test_unset_thresholds_fit_the_face_model(model, own, stricter):
    config = cfg.validate(minimal(score__model=model))
    assert config["score"]["thresholds"] == [stricter, own]
    assert config["token_finder"]["threshold"] == stricter


def test_thresholds_set_by_hand_are_kept():
    config = cfg.validate(minimal(score__thresholds=[0.05], token_finder__threshold=0.04))
    assert config["score"]["thresholds"] == [0.05]
    assert config["token_finder"]["threshold"] == 0.04


def test_thresholds_far_above_the_models_own_are_warned_about(caplog):
    with caplog.at_level("WARNING", logger="dreamgrid.config"):
        config = cfg.validate(minimal(score__thresholds=[0.6, 0.7]), source="mine.yaml")
    assert config["score"]["thresholds"] == [0.6, 0.7]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and all(m.startswith("mine.yaml: score.thresholds") for m in warned)
    assert "8.6x DeepFace's same-person threshold for Dlib/cosine (0.07)" in warned[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="dreamgrid.config"):
        cfg.validate(minimal(score__model="VGG-Face", score__thresholds=[0.6, 0.7]))
    assert caplog.records == []  # the seed study's thresholds fit VGG-Face


# ---- what a job would refuse is refused by validate, before any job --------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"training__epochs": 2.0}, "training.epochs is 2.0, a decimal number"),
        ({"sample__count": 1e9}, r"sample.count is 1000000000.0, a decimal number.*\(1000000000\)"),
        ({"training__seed": 4.5}, "training.seed: 4.5 is not of type .integer."),
        ({"sample__cfg": float("nan")}, "sample.cfg is nan; give a finite number"),
        ({"training__learning_rate": float("inf")}, "training.learning_rate is inf"),
        ({"score__thresholds": [0.05, float("nan")]}, r"score.thresholds\[1\] is nan"),
        ({"sample__count": 1_000_000_000}, "sample.count is 1000000000, above limits.max_renders"),
        ({"training__epochs": 1_000_000}, "above limits.max_epochs"),
        (
            {"sample__count": 9000, "sample__shard_size": 1, "sample__batch_size": 1},
            "about 108024 jobs .* above limits.max_jobs",
        ),
        ({"sample__prompt": "photo of a {class}"}, r"sample.prompt .* lacks \{token\}"),
        ({"sample__prompt": "photo of {Token} {class}"}, r"has \{Token\}, which nothing fills in"),
        (
            {"sample__prompt_sets": {"x": "{token} at {place}"}},
            r"sample.prompt_sets.x .* \{place\}",
        ),
        ({"sample__negative": "ugly {thing}"}, r"sample.negative .* \{thing\}"),
        ({"token_finder__prompt": "{name} {token}"}, r"token_finder.prompt .* \{token\}"),
        ({"sample__shard_size": 6, "sample__batch_size": 4}, "multiple of sample.batch_size"),
    ],
)
def test_values_a_job_would_refuse_are_refused_up_front(overrides, message):
    with pytest.raises(SpecError, match=message):
        cfg.validate(minimal(**overrides), source="mine.yaml")


def test_limits_can_be_raised_on_purpose():
    config = cfg.validate(minimal(training__epochs=200, limits__max_epochs=500))
    assert config["training"]["epochs"] == 200


def test_a_prompt_set_may_leave_out_the_token():
    config = cfg.validate(minimal(sample__prompt_sets={"bleed": "photo of a {class}"}))
    assert config["sample"]["prompt_sets"] == {"bleed": "photo of a {class}"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"base_model: tiny\nbase_model: other\n", "duplicate key 'base_model'"),
        (b"a: &x [1, 2]\nb: [*x, *x]\n", r"aliases \(\*name\) are not allowed"),
        (b"- subject\n- axes\n", "the top level is a list, not a mapping"),
        (b"just words\n", "the top level is a str"),
        (b"__use_yte__: true\nbase_model: tiny\n", "__use_yte__ asks Snakemake to evaluate"),
        ("base_model: caf\u00e9\n".encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_config_files_are_read_strictly(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_bytes(text)
    with pytest.raises(SpecError, match=message) as err:
        cfg.read_file(path)
    assert str(path) in str(err.value)


def test_a_billion_laughs_file_is_refused_at_once(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError, match="aliases"):
        cfg.load(path)


def test_replicates_add_runs_and_leave_run_one_as_it_was():
    base = minimal(axes__token={"rare": "ohwx"}, axes__regularization=["none"])
    one = cfg.expand_arms(cfg.validate(base))
    three = cfg.expand_arms(cfg.validate({**base, "training": {"replicates": 3}}))
    first = one[0].arm
    assert [a.arm for a in three][:3] == [first, f"{first}-r2", f"{first}-r3"]
    assert three[0].as_params() == one[0].as_params()  # run 1 reruns nothing
    assert three[2].as_params()["replicate"] == 3
    assert {a.recipe for a in three[:3]} == {first}
    assert len(three) == 3 * len(one)


# ---- the schema owns every setting's type and range ----------------------------------------
# TrainSpec, SampleSettings and the class-image generator re-checked these (and disagreed: the
# sampler took sample.cfg 0); they keep only the rules between settings, and each case below,
# once a spec's, sampler's or generator's, is refused by validate (so by `dreamgrid check` and
# `snakemake -n`) before any job, naming the key.
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # TrainSpec's (tests/unit/test_train_spec.py keeps the rules between settings)
        ({"training__repeats": 0}, "at training.repeats: 0 is less than the minimum of 1"),
        ({"training__repeats": 1.5}, "at training.repeats: 1.5 is not of type 'integer'"),
        ({"training__batch_size": 0}, "at training.batch_size: 0 is less than the minimum of 1"),
        ({"training__learning_rate": 0.0}, "at training.learning_rate: 0.0 is less than or equal"),
        ({"lora__learning_rate": 0}, "at lora.learning_rate: 0 is less than or equal"),
        ({"training__mixed_precision": "fp8"}, "at training.mixed_precision: 'fp8' is not one of"),
        ({"training__save_precision": "fp8"}, "at training.save_precision: 'fp8' is not one of"),
        ({"training__lr_scheduler": "cosine"}, "at training.lr_scheduler: 'cosine' is not one of"),
        ({"training__resolution": 60}, "at training.resolution: 60 is not a multiple of 8"),
        ({"training__adam_beta1": 1.0}, "at training.adam_beta1: 1.0 is greater than or equal"),
        ({"training__adam_beta2": 1.0}, "at training.adam_beta2: 1.0 is greater than or equal"),
        ({"training__adam_weight_decay": -0.1}, "at training.adam_weight_decay: -0.1 is less"),
        ({"training__adam_epsilon": 0}, "at training.adam_epsilon: 0 is less than or equal"),
        ({"training__max_grad_norm": 0}, "at training.max_grad_norm: 0 is less than or equal"),
        ({"training__prior_loss_weight": -1}, "at training.prior_loss_weight: -1 is less"),
        ({"training__reg_mode": "mixed"}, "at training.reg_mode: 'mixed' is not one of"),
        ({"training__seed": -1}, "at training.seed: -1 is less than the minimum of 0"),
        ({"training__optimizer": "sgd"}, "at training.optimizer: 'sgd' is not one of"),
        ({"training__noise_offset": -0.1}, "at training.noise_offset: -0.1 is less than"),
        ({"training__min_snr_gamma": 0}, "at training.min_snr_gamma: 0 is less than or equal"),
        ({"training__text_encoder_lr": 0}, "at training.text_encoder_lr: 0 is less than or equal"),
        ({"training__text_encoder_stop_epoch": 0}, "at training.text_encoder_stop_epoch: 0 is"),
        ({"training__gradient_checkpointing": "yes"}, "at training.gradient_checkpointing: 'yes'"),
        ({"training__cache_latents": 1}, "at training.cache_latents: 1 is not of type 'boolean'"),
        ({"training__aspect_ratio": "pad"}, "at training.aspect_ratio: 'pad' is not one of"),
        ({"training__bucket_step": 60}, "at training.bucket_step: 60 is not a multiple of 8"),
        ({"axes__method": ["dora"]}, "at axes.method.0: 'dora' is not one of"),
        ({"lora__rank": 0}, "at lora.rank: 0 is less than the minimum of 1"),
        ({"lora__rank": 2.5}, "at lora.rank: 2.5 is not of type 'integer'"),
        ({"lora__alpha": 0}, "at lora.alpha: 0 is less than or equal to the minimum of 0"),
        ({"lora__target_modules": []}, "at lora.target_modules: [] should be non-empty"),
        (
            {"lora__target_modules": ["to_q", ""]},
            "at lora.target_modules.1: '' should be non-empty",
        ),
        ({"subject__class_word": ""}, "at subject.class_word: '' does not match"),
        ({"axes__token": {"rare": " "}}, "at axes.token.rare: ' ' does not match"),
        # SampleSettings' (renders of checkpoints and of look-alike candidates)
        ({"sample__width": 60}, "at sample.width: 60 is not a multiple of 8"),
        ({"sample__height": 0}, "at sample.height: 0 is less than the minimum of 8"),
        ({"sample__count": 0}, "at sample.count: 0 is less than the minimum of 1"),
        ({"sample__batch_size": 0}, "at sample.batch_size: 0 is less than the minimum of 1"),
        ({"sample__steps": 0}, "at sample.steps: 0 is less than the minimum of 1"),
        ({"sample__seed": -1}, "at sample.seed: -1 is less than the minimum of 0"),
        ({"sample__cfg": -1.0}, "at sample.cfg: -1.0 is less than or equal to the minimum of 0"),
        ({"sample__cfg": 0}, "at sample.cfg: 0 is less than or equal to the minimum of 0"),
        ({"token_finder__renders": 0}, "at token_finder.renders: 0 is less than the minimum"),
        ({"token_finder__seed": -1}, "at token_finder.seed: -1 is less than the minimum of 0"),
        # generate_class_images' and prepare_ground_truth's (size = training.resolution)
        ({"regularization__count": 0}, "at regularization.count: 0 is less than the minimum"),
        ({"regularization__steps": 0}, "at regularization.steps: 0 is less than the minimum"),
        ({"regularization__batch_size": 0}, "at regularization.batch_size: 0 is less than"),
        ({"training__resolution": 4}, "at training.resolution: 4 is less than the minimum of 8"),
    ],
)
def test_the_schema_owns_the_ranges_the_jobs_settings_had(overrides, message):
    with pytest.raises(SpecError, match=r"^mine\.yaml: invalid config: ") as err:
        cfg.validate(minimal(**overrides), source="mine.yaml")
    assert message in str(err.value)


def test_an_unknown_sampler_is_refused_with_the_names():
    with pytest.raises(SpecError, match=r"at sample\.scheduler: 'lms' is not one of") as err:
        cfg.validate(minimal(sample__scheduler="lms"), source="mine.yaml")
    from dreamgrid.sample import SCHEDULERS

    for name in SCHEDULERS:
        assert name in str(err.value)


def test_the_codes_choices_are_the_schemas():
    """Names the code looks up (sampler classes, precisions, regularization modes) are the
    ones the schema allows, so a value the schema lets through is one the job knows."""
    from dreamgrid.sample import SCHEDULERS
    from dreamgrid.train.loop import DTYPES
    from dreamgrid.train.spec import REG_MODES, SAVE_PRECISIONS

    properties = cfg._schema()["properties"]
    training = properties["training"]["properties"]
    assert properties["sample"]["properties"]["scheduler"]["enum"] == list(SCHEDULERS)
    assert training["mixed_precision"]["enum"] == list(DTYPES)
    assert training["save_precision"]["enum"] == list(SAVE_PRECISIONS)
    assert training["reg_mode"]["enum"] == list(REG_MODES)
