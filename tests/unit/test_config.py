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
    assert config["score"]["thresholds"] == [0.6, 0.7]
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
            if here not in {"subject", "base_model", "axes", "axes.token"} and not (
                here.startswith("subject.") and key in {"class_word", "train_images", "references"}
            ):
                assert "default" in sub, here
            walk(sub, here)

    walk(schema, "")


def test_config_readme_is_generated_from_the_schema():
    # Regenerate with `dreamgrid config-docs` after editing the schema.
    assert (ROOT / "config" / "README.md").read_text() == cfg.schema_markdown()


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
