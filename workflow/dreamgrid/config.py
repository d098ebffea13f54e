"""Loading and validating the config, and expanding the grid of arms.

Defaults live only in ``workflow/schemas/config.schema.yaml``; ``validate`` fills them in.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError
from dreamgrid.prompts import AUTO_TOKEN

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"

REGULARIZATION_SLUG = {"none": "noreg", "generated": "genreg", "ground_truth": "gtreg"}
CAPTIONS_SLUG = {"blip": "blip", "none": "nocap"}

TINY = "tiny"

# Upper bounds of DeepFace's distance metrics (euclidean is unbounded).
METRIC_RANGE = {"cosine": 2.0, "euclidean_l2": 2.0, "angular": 1.0}


@dataclass(frozen=True)
class Arm:
    """One training recipe: a point of the grid."""

    arm: str
    token_name: str
    token: str
    regularization: str
    captions: str
    method: str = "full"
    #: Training run of this recipe (1 = the first; its id and params are the recipe's own).
    replicate: int = 1
    #: The recipe's id (the arm id of run 1).
    recipe: str = ""

    def as_params(self) -> dict[str, str | int]:
        """The arm's settings as passed to its jobs (and nothing else, so edits stay local)."""
        params = asdict(self)
        del params["recipe"]
        if self.method == "full":
            del params["method"]  # full arms' params stay as before the method axis
        if self.replicate == 1:
            del params["replicate"]  # run 1's params stay as before replicates existed
        return params


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` against the schema, fill defaults, and check cross-key rules.

    Returns a validated deep copy; raises SpecError naming ``source`` and the key.
    The Snakefile calls snakemake's ``validate`` and :func:`check` itself, the same two steps.
    """
    import jsonschema
    from snakemake.utils import validate as snakemake_validate

    config = copy.deepcopy(config)
    try:
        snakemake_validate(config, str(SCHEMA), set_default=True)
    except Exception as err:  # snakemake wraps jsonschema's error in a WorkflowError
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, jsonschema.ValidationError):
            cause = cause.__cause__ or cause.__context__
        raise SpecError(f"{source}: invalid config: {_describe(cause or err)}") from err
    # snakemake fills nested defaults into the schema's own default dicts; copy them out.
    config = copy.deepcopy(config)
    check(config, source)
    return config


def check(config: dict[str, Any], source: str = "config") -> None:
    """Rules the schema cannot express; raises SpecError naming the keys and the fix."""
    axes = config["axes"]
    if "ground_truth" in axes["regularization"] and not config["subject"]["ground_truth"]:
        raise SpecError(
            f"{source}: axes.regularization lists ground_truth but subject.ground_truth is "
            "not set. Point subject.ground_truth at a folder of photos of other people."
        )
    metric = config["score"]["metric"]
    upper = METRIC_RANGE.get(metric)
    for threshold in config["score"]["thresholds"]:
        if upper is not None and threshold >= upper:
            raise SpecError(
                f"{source}: score.thresholds: {threshold} is outside the range of {metric} "
                f"distances [0, {upper}); every render would fall below it. Use thresholds "
                f"in that range (DeepFace's own for {config['score']['model']} is written "
                "to each scores.meta.json)."
            )
    if "lora" in axes.get("method", []) and config["training"]["train_text_encoder"]:
        raise SpecError(
            f"{source}: axes.method lists lora, which trains UNet adapters only, but "
            "training.train_text_encoder is true. Set it false or drop lora from axes.method."
        )
    training = config["training"]
    if training["aspect_ratio"] == "buckets":
        from dreamgrid.buckets import check_bucket_settings

        problem = check_bucket_settings(
            training["resolution"],
            training["bucket_min_size"],
            training["bucket_max_size"],
            training["bucket_step"],
        )
        if problem:
            raise SpecError(f"{source}: training (aspect_ratio buckets): {problem}")
    expand_arms(config)
    if finder_runs(config):
        from dreamgrid import candidates

        finder = config["token_finder"]
        candidates.read_names(candidates.list_path(finder, config["subject"]["class_word"]))


def finder_runs(config: dict[str, Any]) -> bool:
    """Whether the look-alike finder runs: a token is ``auto`` or it is enabled by hand."""
    tokens = config["axes"]["token"].values()
    return config["token_finder"]["enabled"] or AUTO_TOKEN in tokens


def _describe(err: BaseException) -> str:
    import jsonschema

    if not isinstance(err, jsonschema.ValidationError):
        return str(err).strip().splitlines()[-1]
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = list(err.schema.get("properties", {}))
        hints = []
        for key in sorted(set(err.instance) - set(known)):
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(
                f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            )
        return f"at {where}: {'; '.join(hints)}. Known keys: {', '.join(known)}."
    return f"at {where}: {err.message}"


def load(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: config file not found.")
    try:
        config = yaml.load(path.read_text(), Loader=_unique_key_loader()) or {}
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from err
    return validate(config, source=str(path))


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """Safe YAML loader that refuses a key given twice (plain YAML keeps the last one)."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r}; give each one once",
                        key_node.start_mark,
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def expand_arms(config: dict[str, Any]) -> list[Arm]:
    """Arms as the product of the axes (token × regularization × captions), in config order,
    times ``training.replicates`` training runs (run r > 1 gets the suffix ``-r<r>``).

    Arm ids are readable slugs such as ``celebrity-noreg-blip``; token strings with spaces
    stay in the config, never in paths.
    """
    axes = config["axes"]
    arms = [
        Arm(
            # Full fine-tunes keep the ids they had before the method axis existed.
            arm=f"{name}-{REGULARIZATION_SLUG[reg]}-{CAPTIONS_SLUG[cap]}"
            + ("" if method == "full" else f"-{method}"),
            token_name=name,
            token=token,
            regularization=reg,
            captions=cap,
            method=method,
        )
        for (name, token), reg, cap, method in itertools.product(
            axes["token"].items(),
            axes["regularization"],
            axes["captions"],
            axes.get("method", ["full"]),
        )
    ]
    runs = int(config.get("training", {}).get("replicates", 1))
    arms = [
        replace(arm, arm=arm.arm + ("" if r == 1 else f"-r{r}"), replicate=r, recipe=arm.arm)
        for arm in arms
        for r in range(1, runs + 1)
    ]
    ids = [a.arm for a in arms]
    if len(set(ids)) != len(ids):
        raise SpecError("axes: two arms get the same id; give every token a distinct name.")
    return arms


def is_demo(config: dict[str, Any]) -> bool:
    """The demo runs tiny random-weight models: its numbers mean nothing."""
    return config["base_model"] == TINY


def schema_markdown() -> str:
    """config/README.md, generated from the schema so the two never disagree."""
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())
    defs = schema.get("$defs", {})
    lines = [
        "# Configuration keys",
        "",
        "Generated from `workflow/schemas/config.schema.yaml` by `dreamgrid config-docs`;",
        "edit the schema, not this file. Keys without a default are required.",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]

    def kind(node: dict[str, Any]) -> str:
        node = {**defs.get(node.get("$ref", "").split("/")[-1], {}), **node}
        if "enum" in node:
            return " \\| ".join(f"`{v}`" for v in node["enum"])
        types = node.get("type", "")
        return " or ".join(types) if isinstance(types, list) else str(types)

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, sub in node.get("properties", {}).items():
            name = f"{prefix}{key}"
            default = f"`{json.dumps(sub['default'])}`" if "default" in sub else "required"
            if sub.get("type") == "object" and "properties" in sub:
                default = ""
            text = " ".join(sub.get("description", "").split()).replace("|", "\\|")
            lines.append(f"| `{name}` | {kind(sub)} | {default} | {text} |")
            walk(sub, name + ".")

    walk(schema, "")
    return "\n".join(lines) + "\n"
