"""``dreamgrid fetch``: everything a config downloads, into one folder for a machine with no
network at all.

The workflow's prepare rules download each model once on the node that submits the jobs. A
site whose every machine is offline runs this where there is network instead, copies the
folder, and points the config at it with the values :func:`fetch` returns; ``dreamgrid check``
then passes there without network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dreamgrid import models, offline
from dreamgrid.dag import Grid
from dreamgrid.errors import DreamgridError
from dreamgrid.scoring import deepface_adapter

logger = logging.getLogger(__name__)

#: Sub-folders of the fetched folder.
BASE, CAPTIONER, CLIP, DEEPFACE, LAVIS = "base", "captioner", "clip", "deepface", "lavis"


def _model(
    source: str, kind: str, out: Path, allow_pickle: bool = False, family: str | None = None
) -> str | None:
    """Prepare a hub id or single file into ``out`` (a diffusers/transformers folder); None for
    a source that needs no network (tiny, or a local folder the user copies themselves)."""
    source_kind = models.classify(source, allow_pickle)
    if source_kind in ("tiny", "dir"):
        return None
    if not out.is_dir():
        models.prepare_model(source, kind, out, allow_pickle=allow_pickle, family=family)
    logger.info("%s: %s", source, out)
    return str(out)


def fetch(config: dict[str, Any], to: str | Path) -> dict[str, str]:
    """Download every model ``config`` loads into ``to``.

    Base model (a hub id, or a single file whose configs come from the hub: converted to a
    diffusers folder), the captioner (transformers; or LAVIS, through its venv), CLIPScore's
    model, and DeepFace's weights for every scored model with the detector (the token finder
    uses the same models).

    Args:
        config: a validated config.
        to: the folder to fill (created; what is already there is kept).

    Returns:
        The config keys (dotted) and the values that point at ``to``; a key starting with
        ``#`` is a step to do by hand.

    Raises:
        DreamgridError: the hub's offline switches are set here, or a download failed.
    """
    if offline.is_on():
        raise DreamgridError(
            "dreamgrid fetch downloads models, but this shell has the hub's offline switches "
            f"set ({', '.join(offline.SWITCHES)}). Unset them, or run it on a machine with "
            "network."
        )
    to = Path(to).expanduser().resolve()
    to.mkdir(parents=True, exist_ok=True)
    values: dict[str, str] = {}
    from dreamgrid.config import base_models

    for name, entry in base_models(config).items():
        # The one base_model in base/, each of axes.base_model in base-<name>/.
        folder = to / (f"{BASE}-{name}" if name else BASE)
        base = _model(entry["source"], "sd", folder, config["allow_pickle"], entry["family"])
        if base:
            key = f"axes.base_model.{name}" if name else "base_model"
            # A folder tells its family itself.
            values[key] = base
    caption = config["caption"]
    if "blip" in config["axes"]["captions"]:
        if caption["backend"] == "lavis" and caption["lavis_model"] != "tiny":
            from dreamgrid import lavis_caption

            if not (to / LAVIS).is_dir():
                lavis_caption.prepare_lavis_model(
                    caption["lavis_python"], caption["lavis_model"], to / LAVIS
                )
            # Not a config value: the workflow reads it where prepare_lavis_model puts it.
            values["#lavis"] = f"copy {to / LAVIS} to results/models/lavis in the workdir"
        if caption["backend"] == "transformers":
            captioner = _model(caption["model"], "blip", to / CAPTIONER)
            if captioner:
                values["caption.model"] = captioner
    if config["score"]["clip_model"]:
        clip = _model(config["score"]["clip_model"], "clip", to / CLIP)
        if clip:
            values["score.clip_model"] = clip
    home = to / DEEPFACE
    for model in Grid(config).face_models:
        deepface_adapter.prepare_face_weights(model, config["score"]["detector"], home)
    values["score.deepface_home"] = str(home)
    return values


def config_lines(values: dict[str, str]) -> str:
    """``values`` as the YAML a user pastes into the config (nested by the dotted keys)."""
    import yaml

    notes = [f"# {value}\n" for key, value in values.items() if key.startswith("#")]
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith("#"):
            continue
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return yaml.safe_dump(nested, sort_keys=False) + "".join(notes)
