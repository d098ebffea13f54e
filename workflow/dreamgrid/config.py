"""Loading and validating the config, and expanding the grid of arms.

Defaults live only in ``workflow/schemas/config.schema.yaml``; ``validate`` fills them in.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dreamgrid import design
from dreamgrid.errors import SpecError
from dreamgrid.prompts import AUTO_TOKEN

log = logging.getLogger(__name__)

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"

REGULARIZATION_SLUG = {"none": "noreg", "generated": "genreg", "ground_truth": "gtreg"}
CAPTIONS_SLUG = {"blip": "blip", "none": "nocap"}

TINY = "tiny"
#: The tiny random-weight models (dreamgrid.tiny) a base model may name, and their family.
TINY_FAMILIES = {TINY: "sd15", "tiny-sdxl": "sdxl", "tiny-flux": "flux"}
#: Sections whose keys may differ per base model (``<section>.by_base_model.<name>``), and
#: the keys that may not: they shape the grid, or pair renders across base models.
BY_BASE_MODEL = {
    "training": ("epochs", "replicates", "keep_checkpoints", "keep_resume_state"),
    "lora": (),
    "sample": ("prompt", "prompt_sets", "prompt_sets_count", "count", "seed", "shard_size"),
}

#: Names of an axes.settings value (given, or derived from the key and the value).
SETTING_NAME = r"^[a-z0-9_.]+$"

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
    #: Its base model's name in axes.base_model ("" for the one ``base_model``).
    base_model: str = ""
    #: Its ``axes.settings`` levels: (dotted key, value name, value) per axis, in config
    #: order; lists frozen to tuples so the arm stays hashable.
    settings: tuple[tuple[str, str, Any], ...] = ()
    #: The arm whose training (checkpoints, loss, resume state) this one renders: itself,
    #: unless it differs from that arm only in ``sample.*`` settings ("" = itself).
    trained_as: str = ""

    @property
    def trainer(self) -> str:
        """:attr:`trained_as`, or the arm's own id."""
        return self.trained_as or self.arm

    @property
    def setting_levels(self) -> dict[str, str]:
        """Dotted key -> value name of each settings axis."""
        return {key: name for key, name, _ in self.settings}

    def as_params(self) -> dict[str, str | int]:
        """The arm's settings as passed to its jobs (and nothing else, so edits stay local)."""
        params = asdict(self)
        del params["recipe"]
        # The base model reaches a job as its input folder and its settings, not by name.
        del params["base_model"]
        # Settings reach jobs through their training, lora and sample params (the arm's
        # view), and an arm without settings axes keeps the params it had before them.
        del params["settings"], params["trained_as"]
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
    check_base_models(config, source)
    check_paths(config, source)
    check_numbers(config, source)
    check_by_base_model(config, source)
    check_settings(config, source)
    check_limits(config, source)
    fit_thresholds(config, source)
    fit_search_margin(config, source)
    check(config, source)
    for warning in threshold_warnings(config):
        log.warning("%s: %s", source, warning)
    return config


def _schema() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(SCHEMA.read_text())


def _integer_keys(node: dict[str, Any], defs: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys the schema types as integers (alone or with null)."""
    found = []
    for key, sub in node.get("properties", {}).items():
        sub = {**defs.get(sub.get("$ref", "").split("/")[-1], {}), **sub}
        kind = sub.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if "integer" in kinds:
            found.append(f"{prefix}{key}")
        found += _integer_keys(sub, defs, f"{prefix}{key}.")
    return found


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


#: Config keys that name a file or folder of the user's.
PATH_KEYS = (
    "subject.train_images",
    "subject.references",
    "subject.ground_truth",
    "subject.caption_overrides",
    "base_model",
    "base_model.source",
    "token_finder.candidates",
    "score.deepface_home",
)


def check_paths(config: dict[str, Any], source: str = "config") -> None:
    """Expand ``~`` in paths (in place), and refuse braces, which Snakemake would read as
    wildcards in a rule's input."""
    import os

    keys = list(PATH_KEYS)
    for name, entry in (config["axes"].get("base_model") or {}).items():
        keys.append(f"axes.base_model.{name}" + (".source" if isinstance(entry, dict) else ""))
    for key in keys:
        *parents, last = key.split(".")
        node = _lookup(config, ".".join(parents)) if parents else config
        value = node.get(last) if isinstance(node, dict) else None
        if not isinstance(value, str):
            continue
        if "{" in value or "}" in value:
            raise SpecError(
                f"{source}: {key} {value!r} contains {{ or }}, which Snakemake reads as a "
                "wildcard. Rename the folder or file without braces."
            )
        node[last] = os.path.expanduser(value)


def check_numbers(config: dict[str, Any], source: str = "config") -> None:
    """Numbers the schema lets through but a job would choke on: NaN or infinity anywhere,
    and a float (``2.0``, ``1e9``) where an integer belongs (JSON Schema counts 2.0 as one)."""
    import math

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")
        elif isinstance(node, float) and not math.isfinite(node):
            raise SpecError(f"{source}: {where} is {node}; give a finite number.")

    walk(config, "")
    schema = _schema()
    keys = _integer_keys(schema, schema.get("$defs", {}))
    for section in BY_BASE_MODEL:
        for name in (config.get(section) or {}).get("by_base_model") or {}:
            keys += [
                f"{section}.by_base_model.{name}.{k.removeprefix(section + '.')}"
                for k in keys
                if k.startswith(section + ".")
            ]
    for key in keys:
        value = _lookup(config, key)
        if isinstance(value, float):
            hint = f" ({int(value)})" if value.is_integer() else ""
            raise SpecError(
                f"{source}: {key} is {value!r}, a decimal number; it must be a whole number "
                f"written without a point or exponent{hint}."
            )


def base_models(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Base model name -> ``{"source", "family"}`` (family: the stated one, or None), in
    config order: ``axes.base_model``'s entries, or the one ``base_model`` under the name ""."""
    entries = config["axes"].get("base_model") or {"": config.get("base_model")}
    out = {}
    for name, entry in entries.items():
        if isinstance(entry, dict):
            out[name] = {"source": entry["source"], "family": entry.get("family")}
        else:
            out[name] = {"source": entry, "family": None}
    return out


def base_model_axis(config: dict[str, Any]) -> bool:
    """Whether arm ids name their base model: ``axes.base_model`` has more than one."""
    return len(config["axes"].get("base_model") or {}) > 1


def stated_family(entry: dict[str, Any]) -> str | None:
    """The family a base model entry states, or its tiny source's; None when only the model
    can tell (read by the jobs from the prepared model)."""
    return entry["family"] or TINY_FAMILIES.get(entry["source"])


def check_base_models(config: dict[str, Any], source: str = "config") -> None:
    """Exactly one of ``base_model`` and ``axes.base_model``."""
    axis = config["axes"].get("base_model")
    if axis is not None and config.get("base_model") is not None:
        raise SpecError(
            f"{source}: both base_model and axes.base_model are set. Give one model as "
            "base_model, or several as axes.base_model (name -> source), not both."
        )
    if axis is None and config.get("base_model") is None:
        raise SpecError(
            f"{source}: no base model. Set base_model (e.g. base_model: tiny, a diffusers "
            "folder, a .safetensors file or a hub id), or axes.base_model for several."
        )
    for name, entry in base_models(config).items():
        family = stated_family(entry)
        tiny = TINY_FAMILIES.get(entry["source"])
        if tiny is not None and family != tiny:
            key = f"axes.base_model.{name}" if name else "base_model"
            raise SpecError(
                f"{source}: {key}: {entry['source']} is a {tiny} model, but family: {family} "
                f"is stated. Remove family: or use the tiny model of {family} "
                f"({', '.join(k for k, v in TINY_FAMILIES.items() if v == family)})."
            )


def base_model_config(config: dict[str, Any], name: str) -> dict[str, Any]:
    """``config`` as seen by one base model's arms: ``base_model`` is that model's entry,
    ``axes.base_model`` is gone, and each section's ``by_base_model.<name>`` is merged into
    it (the ``by_base_model`` keys removed). For the one ``base_model`` (name ""), the config
    without ``by_base_model`` keys."""
    view = copy.deepcopy(config)
    entry = base_models(config)[name]
    view["base_model"] = entry["source"] if entry["family"] is None else dict(entry)
    view["axes"].pop("base_model", None)
    for section in BY_BASE_MODEL:
        settings = view.get(section)
        if isinstance(settings, dict):
            override = (settings.pop("by_base_model", None) or {}).get(name) or {}
            settings.update(copy.deepcopy(override))
    return view


def check_by_base_model(config: dict[str, Any], source: str = "config") -> None:
    """Each ``<section>.by_base_model.<name>`` names a base model of the axis, sets only keys
    that may differ per base model, and gives, merged into the section, a section the schema
    accepts (did-you-mean errors naming the key)."""
    import jsonschema

    schema = _schema()
    names = [n for n in base_models(config) if n]
    for section, fixed in BY_BASE_MODEL.items():
        overrides = (config.get(section) or {}).get("by_base_model") or {}
        for name, override in overrides.items():
            key = f"{section}.by_base_model.{name}"
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                known = (
                    f"axes.base_model names {', '.join(names)}"
                    if names
                    else "there is no axes.base_model (base_model is one model: put its "
                    f"settings in {section} itself)"
                )
                raise SpecError(f"{source}: {key}: no base model {name!r}{hint}; {known}.")
            for field in override:
                if field in fixed or field == "by_base_model":
                    raise SpecError(
                        f"{source}: {key}.{field}: {section}.{field} is the same for every "
                        f"base model; set it in {section} itself."
                    )
            merged = base_model_config(config, name)[section]
            node = {**schema["properties"][section], "$defs": schema["$defs"]}
            node["properties"] = {
                k: v for k, v in node["properties"].items() if k != "by_base_model"
            }
            error = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(node).iter_errors(merged)
            )
            if error is not None:
                raise SpecError(f"{source}: invalid config: {_describe(error, key)}")


def settings_axes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``axes.settings`` as dotted key -> {value name: value}, in config order; a list's
    values are named by :func:`value_names`."""
    out = {}
    for key, values in (config["axes"].get("settings") or {}).items():
        out[key] = dict(values) if isinstance(values, dict) else value_names(key, list(values))
    return out


def value_names(key: str, values: list[Any]) -> dict[str, Any]:
    """Readable, path-safe, distinct names of an axis's values: the key's last part and the
    value (``learning_rate1e-06``, ``rank8``, ``cfg5``, ``schedulerddim``); values that
    would share a name get their position appended (``_1``, ``_2``, ...)."""
    import re

    last = key.rsplit(".", 1)[-1]

    def text(value: Any) -> str:
        if isinstance(value, bool) or value is None:
            return json.dumps(value)  # true, false, null
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return format(value, "g").replace("+", "")  # 1e-06, 0.05, 1e06
        if isinstance(value, list | tuple):
            return "_".join(text(v) for v in value)
        return re.sub(r"[^a-z0-9_.]+", "_", str(value).lower()).strip("_")

    names = [f"{last}{text(v)}" for v in values]
    if len(set(names)) < len(names):
        clashing = {n for n in names if names.count(n) > 1}
        names = [f"{n}_{i + 1}" if n in clashing else n for i, n in enumerate(names)]
    return dict(zip(names, values, strict=True))


def check_settings(config: dict[str, Any], source: str = "config") -> None:
    """Each ``axes.settings`` key is a key of training, lora or sample that may differ per
    arm, with at least two distinct values (names matching :data:`SETTING_NAME`), each of
    which the key itself accepts: the section with the value merged in passes the schema."""
    import re

    import jsonschema

    axes = config["axes"].get("settings") or {}
    if not axes:
        return
    schema = _schema()
    integers = set(_integer_keys(schema, schema.get("$defs", {})))
    for key, values in axes.items():
        where = f"axes.settings.{key}"
        section, _, field = key.partition(".")
        if section not in BY_BASE_MODEL or not field:
            raise SpecError(
                f"{source}: {where}: an axis is a key of training, lora or sample written "
                "<section>.<key>, e.g. training.learning_rate, lora.rank or sample.cfg."
            )
        known = [k for k in schema["properties"][section]["properties"] if k != "by_base_model"]
        if field in BY_BASE_MODEL[section] or field == "by_base_model":
            raise SpecError(
                f"{source}: {where}: {key} shapes the grid or pairs renders across arms, so it "
                f"cannot be an axis; set one value in {section} itself."
            )
        if field not in known:
            close = difflib.get_close_matches(field, known, n=1)
            hint = f" (did you mean {section}.{close[0]}?)" if close else ""
            raise SpecError(
                f"{source}: {where}: {section} has no key {field!r}{hint}. Keys of {section}: "
                f"{', '.join(k for k in known if k not in BY_BASE_MODEL[section])}."
            )
        overrides = (config[section].get("by_base_model") or {}).items()
        for name, override in overrides:
            if field in override:
                raise SpecError(
                    f"{source}: {where} sets {key} for every arm, but "
                    f"{section}.by_base_model.{name}.{field} sets it too; drop one of them."
                )
        items = list(values.values()) if isinstance(values, dict) else list(values)
        if len(items) < 2:
            raise SpecError(
                f"{source}: {where}: give at least two values (with one, set {key} in "
                f"{section} itself)."
            )
        if isinstance(values, dict):
            for name in values:
                if not re.fullmatch(SETTING_NAME, str(name)):
                    raise SpecError(
                        f"{source}: {where}: value name {name!r} goes into arm ids and paths; "
                        "use lower-case letters, digits, _ and . only (e.g. low, high, lr1e.6)."
                    )
        texts = [json.dumps(v, sort_keys=True) for v in items]
        for text in texts:
            if texts.count(text) > 1:
                raise SpecError(f"{source}: {where}: the value {text} is given twice.")
        node = {**schema["properties"][section], "$defs": schema["$defs"]}
        node["properties"] = {k: v for k, v in node["properties"].items() if k != "by_base_model"}
        validator = jsonschema.Draft202012Validator(node)
        for index, (name, value) in enumerate(settings_axes(config)[key].items()):
            label = f"{where}.{name}" if isinstance(values, dict) else f"{where}[{index}]"
            if key in integers and isinstance(value, float):
                raise SpecError(
                    f"{source}: {label} is {value!r}, a decimal number; {key} takes a whole "
                    "number written without a point or exponent."
                )
            section_values = {k: v for k, v in config[section].items() if k != "by_base_model"}
            error = jsonschema.exceptions.best_match(
                validator.iter_errors({**section_values, field: value})
            )
            if error is not None:
                text = _describe(error, section).split(": ", 1)[-1]
                raise SpecError(
                    f"{source}: {label}: {value!r} is not a value {key} accepts: {text} "
                    "(see config/README.md)."
                )


def arm_config(config: dict[str, Any], arm: Arm) -> dict[str, Any]:
    """``config`` as ``arm``'s jobs see it: its base model's view
    (:func:`base_model_config`) with the arm's ``axes.settings`` values merged in."""
    view = base_model_config(config, arm.base_model) if arm.base_model else copy.deepcopy(config)
    for key, _, value in arm.settings:
        section, field = key.split(".", 1)
        view[section][field] = json.loads(json.dumps(value))  # tuples back to lists
    return view


def _frozen(value: Any) -> Any:
    """A settings value as a hashable one (lists as tuples)."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def check_limits(config: dict[str, Any], source: str = "config") -> None:
    """Refuse a grid too big to plan before Snakemake builds its job graph (a typo such as
    ``count: 1000000000`` would otherwise fill the memory while planning); ``limits.*``
    raise the bounds on purpose."""
    limits, sample = config["limits"], config["sample"]
    checks = [
        ("training.epochs", config["training"]["epochs"], "max_epochs"),
        ("sample.count", sample["count"], "max_renders"),
        ("sample.prompt_sets_count", sample["prompt_sets_count"] or 0, "max_renders"),
        ("token_finder.renders", config["token_finder"]["renders"], "max_renders"),
    ]
    for key, value, limit in checks:
        if value > limits[limit]:
            raise SpecError(
                f"{source}: {key} is {value}, above limits.{limit} ({limits[limit]}). Lower it, "
                f"or raise limits.{limit} if you mean it."
            )
    # Every training run: the design's points x replicates, counted without expanding them.
    axes = config["axes"]
    sizes = [len(v) for k, v in axes.items() if k not in ("settings", "design")]
    sizes += [len(levels) for levels in (axes.get("settings") or {}).values()]
    arms = design.count(sizes, axes.get("design", "full")) * config["training"]["replicates"]
    if arms > limits["max_arms"]:
        design_now = config["axes"].get("design", "full")
        fixes = (
            []
            if design_now == "one_at_a_time"
            else ["use `axes.design: one_at_a_time` (a baseline plus one arm per changed value)"]
        )
        fixes += ["give the axes fewer values (or fewer training.replicates)"]
        raise SpecError(
            f"{source}: this grid has {arms} arms (training runs, replicates included; "
            f"axes.design: {design_now}), above limits.max_arms ({limits['max_arms']}). To fix: "
            + "; or ".join([*fixes, "raise limits.max_arms if you mean it"])
            + "."
        )
    sets = 1 + len(sample.get("prompt_sets") or {})
    shards = -(-sample["count"] // sample["shard_size"])
    # Per checkpoint and prompt set: sampling, embedding, scoring and figures.
    jobs = arms * config["training"]["epochs"] * (1 + sets * (2 * shards + 3))
    if jobs > limits["max_jobs"]:
        raise SpecError(
            f"{source}: this grid plans about {jobs} jobs ({arms} arms x "
            f"{config['training']['epochs']} epochs x {sets} prompt sets, {shards} sampling "
            f"shards each), above limits.max_jobs ({limits['max_jobs']}). Shrink the grid or "
            "raise sample.shard_size, or raise limits.max_jobs if you mean it."
        )


def check_prompts(config: dict[str, Any], source: str = "config") -> None:
    """Prompt templates use only the placeholders that are filled in, and the main prompt
    names the token (else every arm renders the same prompt)."""
    import re

    sample, finder = config["sample"], config["token_finder"]
    templates = {
        "sample.prompt": (sample["prompt"], {"{token}", "{class}"}),
        "sample.negative": (sample["negative"], {"{token}", "{class}"}),
        "regularization.prompt": (config["regularization"]["prompt"], {"{class}"}),
        "regularization.negative": (config["regularization"]["negative"], {"{class}"}),
        "token_finder.prompt": (finder["prompt"], {"{name}", "{class}"}),
    }
    for name, template in (sample.get("prompt_sets") or {}).items():
        templates[f"sample.prompt_sets.{name}"] = (template, {"{token}", "{class}"})
    for key, (template, allowed) in templates.items():
        unknown = sorted(set(re.findall(r"\{[^{}]*\}", template)) - allowed)
        if unknown:
            raise SpecError(
                f"{source}: {key} {template!r} has {', '.join(unknown)}, which nothing fills "
                f"in; it may use {' and '.join(sorted(allowed))} (lower case)."
            )
    if "{token}" not in sample["prompt"]:
        raise SpecError(
            f"{source}: sample.prompt {sample['prompt']!r} lacks {{token}}, so every arm would "
            "render the same prompt. Put {token} where the instance token goes, e.g. "
            "'headshot photo of {token} {class}'."
        )


def fit_thresholds(config: dict[str, Any], source: str = "config") -> None:
    """Check the face model and detector names, then fill unset distance thresholds with
    ones that fit ``score.model`` (in place).

    ``score.thresholds`` null: DeepFace's same-person threshold for the model and metric and
    a stricter one (:func:`dreamgrid.scoring.deepface_adapter.fitted_thresholds`);
    ``token_finder.threshold`` null: the stricter of those.
    """
    from dreamgrid.scoring.deepface_adapter import check_names, fitted_thresholds

    score, finder = config["score"], config["token_finder"]
    check_names([score["model"], *score["models"]], score["detector"], source)
    if score["thresholds"] is None or finder["threshold"] is None:
        fitted = fitted_thresholds(score["model"], score["metric"])
        if score["thresholds"] is None:
            score["thresholds"] = fitted
        if finder["threshold"] is None:
            finder["threshold"] = fitted[0]


def fit_search_margin(config: dict[str, Any], source: str = "config") -> None:
    """Fill an unset ``search.margin`` of an adaptive search with the default on the scale
    of ``score.model`` and ``score.metric`` (in place)."""
    search, score = config["search"], config["score"]
    if search["method"] == "full" or search["margin"] is not None:
        return
    from dreamgrid.adaptive import default_margin

    margin = default_margin(score["model"], score["metric"])
    if margin is None:
        raise SpecError(
            f"{source}: search.margin is unset and score.model {score['model']!r} with "
            f"score.metric {score['metric']!r} has no DeepFace threshold to scale the default "
            "to; set search.margin (a distance difference on that scale) yourself."
        )
    search["margin"] = margin


def threshold_warnings(config: dict[str, Any]) -> list[str]:
    """Sentences for thresholds set far above DeepFace's own for ``score.model``."""
    from dreamgrid.scoring.deepface_adapter import threshold_warnings as warnings_for

    score = config["score"]
    return warnings_for(score["model"], score["metric"], score["thresholds"])


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
    for name in base_models(config):
        # Each base model's arms see their own training and sample settings.
        where = f"{source} (base model {name})" if name else source
        _check_sections(base_model_config(config, name) if name else config, where)
    arms = expand_arms(config)
    # Each settings combination's cross-key rules, as its arms see them (one arm each).
    seen = set()
    for arm in arms:
        point = (arm.base_model, arm.settings)
        if arm.settings and point not in seen:
            seen.add(point)
            levels = ", ".join(f"axes.settings.{k}: {n}" for k, n, _ in arm.settings)
            _check_sections(arm_config(config, arm), f"{source} (arm {arm.arm}: {levels})")
    check_prompts(config, source)
    check_search(config, source)
    if finder_runs(config):
        from dreamgrid import candidates

        finder = config["token_finder"]
        candidates.read_names(candidates.list_path(finder, config["subject"]["class_word"]))


def check_search(config: dict[str, Any], source: str = "config") -> None:
    """An adaptive search needs looks before the last epoch, arms to compare, and one
    training run per arm (a look stops a run; the runs of a recipe must stop together)."""
    search = config.get("search") or {}
    if search.get("method", "full") != "successive_halving":
        return
    epochs = config["training"]["epochs"]
    late = [e for e in search.get("looks") or [] if e >= epochs]
    if late:
        raise SpecError(
            f"{source}: search.looks {late} are not below training.epochs ({epochs}); a look "
            "is made after an epoch that still has epochs to save. Give looks below "
            f"{epochs}, or raise training.epochs."
        )
    if epochs < 2:
        raise SpecError(
            f"{source}: search.method successive_halving with training.epochs 1 has no epoch "
            "to stop before; raise training.epochs or use search.method full."
        )
    from dreamgrid import adaptive

    if not adaptive.look_epochs(search, epochs):
        raise SpecError(
            f"{source}: search.method successive_halving has no look: by default the looks are "
            f"epochs 2 to {epochs - 1} (the first has no rate of improvement to judge by). "
            "Give search.looks (e.g. [1]), raise training.epochs, or use search.method full."
        )
    arms = expand_arms(config)
    if len(arms) < 2:
        raise SpecError(
            f"{source}: search.method successive_halving compares arms, but the axes make "
            f"{len(arms)} arm; add a value to an axis or use search.method full."
        )
    if config["training"].get("replicates", 1) > 1:
        raise SpecError(
            f"{source}: search.method successive_halving with training.replicates "
            f"{config['training']['replicates']} is not supported (a look would stop one run "
            "of a recipe and not the others); use training.replicates 1 or search.method full."
        )


def _check_sections(config: dict[str, Any], source: str) -> None:
    """The cross-key rules of training, lora and sample (one base model's settings)."""
    if "lora" in config["axes"].get("method", []) and config["training"]["train_text_encoder"]:
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
    sample = config["sample"]
    try:
        shard_ranges(sample["count"], sample["shard_size"], sample["batch_size"])
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from err


def shard_ranges(count: int, shard_size: int, batch_size: int) -> list[tuple[int, int]]:
    """Render index ranges ``[start, stop)`` of a checkpoint's shards.

    Shard ``k`` holds renders ``k * shard_size`` up to ``(k + 1) * shard_size`` (the last one
    fewer), so raising ``count`` adds shards and leaves the full ones untouched. ``shard_size``
    must be a multiple of ``batch_size``, so that shard boundaries fall on batch boundaries.

    Raises:
        SpecError: a size is not a positive integer, or shards and batches do not align.
    """
    for name, value in (("count", count), ("shard_size", shard_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"sample.{name} must be a positive integer, got {value!r}.")
    if shard_size % batch_size:
        raise SpecError(
            f"sample.shard_size ({shard_size}) must be a multiple of sample.batch_size "
            f"({batch_size}) so that shards split at batch boundaries; e.g. shard_size "
            f"{max(batch_size, shard_size - shard_size % batch_size)}."
        )
    return [(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def finder_runs(config: dict[str, Any]) -> bool:
    """Whether the look-alike finder runs: a token is ``auto`` or it is enabled by hand."""
    tokens = config["axes"]["token"].values()
    return config["token_finder"]["enabled"] or AUTO_TOKEN in tokens


def _describe(err: BaseException, prefix: str = "") -> str:
    """One sentence for a schema error; ``prefix``: the dotted key of the validated node."""
    import jsonschema

    if not isinstance(err, jsonschema.ValidationError):
        return str(err).strip().splitlines()[-1]
    where = ".".join(
        [prefix, *map(str, err.absolute_path)] if prefix else map(str, err.absolute_path)
    )
    where = where or "(top level)"
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
    """Read a YAML config file (:func:`read_file`) and validate it."""
    return validate(read_file(path), source=str(path))


def read_file(path: str | Path) -> dict[str, Any]:
    """Read a config file strictly: UTF-8, plain YAML without aliases, every key once, a
    mapping at the top, and no ``__use_yte__`` (which would make Snakemake evaluate Python
    expressions written in the config).

    Raises:
        SpecError: naming the file and what to change.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: config file not found.")
    from dreamgrid.io import read_text

    try:
        config = yaml.load(read_text(path, "config file"), Loader=_strict_loader())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from err
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise SpecError(
            f"{path}: the top level is a {type(config).__name__}, not a mapping of keys "
            "(subject:, base_model:, axes:, ...); see config/config.yaml."
        )
    if "__use_yte__" in config:
        raise SpecError(
            f"{path}: __use_yte__ asks Snakemake to evaluate Python expressions written in the "
            "config; dreamgrid configs are plain data. Remove the key and write the values out."
        )
    return config


def check_files(paths: list[str | Path]) -> None:
    """Read each config file Snakemake loaded with :func:`read_file` (Snakemake keeps the
    last of duplicate keys silently), so both paths refuse the same files."""
    for path in paths:
        read_file(path)


def _strict_loader():
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """Safe YAML loader that refuses a key given twice (plain YAML keeps the last one) and
        aliases (``*name``: a few nested ones expand to gigabytes)."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.events.AliasEvent):
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    "YAML aliases (*name) are not allowed in a dreamgrid config; write the "
                    "values out",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)

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

    return StrictLoader


def expand_arms(config: dict[str, Any]) -> list[Arm]:
    """Arms as the points of the axes (token × regularization × captions × method × base
    model × each ``axes.settings`` key) that ``axes.design`` picks
    (:func:`dreamgrid.design.points`), in config order,
    times ``training.replicates`` training runs (run r > 1 gets the suffix ``-r<r>``).

    Arm ids are readable slugs such as ``celebrity-noreg-blip``; token strings with spaces
    stay in the config, never in paths.
    """
    axes = config["axes"]
    named = base_model_axis(config)
    # Settings axes last: (key, name, value) per level; each adds -<name> to the ids.
    levels = [
        [(key, name, _frozen(value)) for name, value in values.items()]
        for key, values in settings_axes(config).items()
    ]
    arms = [
        Arm(
            # Full fine-tunes keep the ids they had before the method axis existed, and a
            # grid of one base model the ids it had before the base-model axis.
            arm=f"{name}-{REGULARIZATION_SLUG[reg]}-{CAPTIONS_SLUG[cap]}"
            + ("" if method == "full" else f"-{method}")
            + (f"-{base}" if named else "")
            + "".join(f"-{level[1]}" for level in settings),
            token_name=name,
            token=token,
            regularization=reg,
            captions=cap,
            method=method,
            base_model=base,
            settings=tuple(settings),
        )
        for (name, token), reg, cap, method, base, *settings in design.points(
            [
                list(axes["token"].items()),
                axes["regularization"],
                axes["captions"],
                axes.get("method", ["full"]),
                list(base_models(config)),
                *levels,
            ],
            axes.get("design", "full"),
        )
    ]
    # Arms that differ only in sample.* levels share the training of the one at each sample
    # axis's first level (its checkpoints are rendered again, never retrained).
    firsts = {values[0][0]: values[0] for values in levels if values[0][0].startswith("sample.")}
    by_point = {
        (a.token_name, a.regularization, a.captions, a.method, a.base_model, a.settings): a.arm
        for a in arms
    }
    arms = [
        replace(
            arm,
            trained_as=by_point[
                (
                    arm.token_name,
                    arm.regularization,
                    arm.captions,
                    arm.method,
                    arm.base_model,
                    tuple(firsts.get(level[0], level) for level in arm.settings),
                )
            ],
        )
        for arm in arms
    ]
    runs = int(config.get("training", {}).get("replicates", 1))
    arms = [
        replace(
            arm,
            arm=arm.arm + ("" if r == 1 else f"-r{r}"),
            replicate=r,
            recipe=arm.arm,
            trained_as=arm.trained_as + ("" if r == 1 else f"-r{r}"),
        )
        for arm in arms
        for r in range(1, runs + 1)
    ]
    ids = [a.arm for a in arms]
    if len(set(ids)) != len(ids):
        raise SpecError(
            "axes: two arms get the same id; give every token and base model a distinct name."
        )
    return arms


def is_demo(config: dict[str, Any]) -> bool:
    """The demo runs tiny random-weight models: its numbers mean nothing."""
    return all(e["source"] in TINY_FAMILIES for e in base_models(config).values())


def schema_markdown() -> str:
    """config/README.md, generated from the schema so the two never disagree."""
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())
    defs = schema.get("$defs", {})
    lines = [
        "# Configuration keys",
        "",
        "Generated from `workflow/schemas/config.schema.yaml` by `dreamgrid config-docs`;",
        "edit the schema, not this file. Keys without a default are required; give exactly one",
        "of `base_model` and `axes.base_model`.",
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

    # Keys that may be left out although they have no default (one of the two base model
    # forms; per-base-model settings; a base model's family).
    optional = {"base_model", "axes.base_model", "base_model.family"}
    optional |= {f"{section}.by_base_model" for section in BY_BASE_MODEL}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, sub in node.get("properties", {}).items():
            name = f"{prefix}{key}"
            default = f"`{json.dumps(sub['default'])}`" if "default" in sub else "required"
            if name in optional:
                default = "optional"
            # A $ref'd object (base_model) lists its own keys.
            sub = {**defs.get(sub.get("$ref", "").split("/")[-1], {}), **sub}
            if sub.get("type") == "object" and "properties" in sub:
                default = ""
            text = " ".join(sub.get("description", "").split()).replace("|", "\\|")
            lines.append(f"| `{name}` | {kind(sub)} | {default} | {text} |")
            walk(sub, name + ".")

    walk(schema, "")
    return "\n".join(lines) + "\n"
