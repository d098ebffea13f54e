"""Jobs run offline by construction: the hub libraries' switches, and where prepared weights live.

Every model a job loads is prepared once, before any GPU work, by a local rule on the node that
submits the jobs (``prepare_base_model``, ``prepare_caption_model``, ``prepare_clip_model``,
``prepare_face_models``); compute nodes often have no network. Every other job turns on the
hub libraries' offline switches (:func:`switch_on`, from :func:`dreamgrid.logs.job`), so a
model that was not prepared fails at once instead of after a connection timeout.

Standard library only: the Snakefile and the preflight import it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence
from pathlib import Path

#: Offline switches of huggingface_hub, transformers and datasets (diffusers and peft use
#: huggingface_hub's).
SWITCHES = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
_TRUE = {"1", "true", "yes", "on"}

HUB = "https://huggingface.co"

#: Where the prepare step records which weight files a (model, detector) pair loads, under
#: the deepface home; it is also that rule's output.
FACE_RECORD = ".deepface/prepared/{model}-{detector}.json"
FACE_PREPARE_RULE = "prepare_face_models"


def switch_on(environ: MutableMapping[str, str] | None = None) -> None:
    """Set the offline switches (in this process's environment by default); must run before
    huggingface_hub is imported, which reads them once."""
    (os.environ if environ is None else environ).update(SWITCHES)


def is_on(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether the hub libraries are told not to use the network (any switch set)."""
    environ = os.environ if environ is None else environ
    return any(environ.get(name, "").strip().lower() in _TRUE for name in SWITCHES)


def hub_endpoint(environ: MutableMapping[str, str] | None = None) -> str:
    """The hub's address: ``HF_ENDPOINT`` (huggingface_hub's own setting, e.g. a mirror)."""
    environ = os.environ if environ is None else environ
    return (environ.get("HF_ENDPOINT") or HUB).rstrip("/")


def mirrored(urls: str | Sequence[str], environ: MutableMapping[str, str] | None = None) -> list:
    """``urls`` with those on huggingface.co also tried at ``HF_ENDPOINT`` first.

    DeepFace serves each weight file from GitHub and, as a backup, from the hub
    (``huggingface.co/serengil/deepface``): a site's hub mirror then serves DeepFace too.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    endpoint = hub_endpoint(environ)
    if endpoint == HUB:
        return urls
    moved = [endpoint + url[len(HUB) :] for url in urls if url.startswith(HUB + "/")]
    return [*moved, *urls]


def face_record(home: str | Path, model: str, detector: str) -> Path:
    """The prepare step's record of a (model, detector) pair in a deepface home."""
    return Path(home) / FACE_RECORD.format(model=model, detector=detector)


def record_home(record: str | Path) -> Path:
    """The deepface home a :func:`face_record` path lies in."""
    return Path(record).parents[len(Path(FACE_RECORD).parts) - 1]
