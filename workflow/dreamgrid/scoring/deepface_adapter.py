"""The deepface adapter: the only module of dreamgrid that imports deepface.

It imports deepface lazily, after :func:`setup_deepface` has pointed ``DEEPFACE_HOME`` at a
folder holding the weights (deepface writes under that folder on import and looks its weights
up there), and after :func:`hide_gpus` has made no GPU visible: scoring runs on the CPU by
construction (ONNX on the CPU where onnxruntime is installed). GPU jobs hold the cards; a
scoring job's workers would otherwise each open a CUDA context and load a model beside a
training job.

In order: setting deepface up; its weights (prepared once on the submitting node, never
downloaded by a job); names, settings and thresholds checked against deepface's own tables;
the faces of one image detected and embedded exactly as ``DeepFace.verify`` does; deepface's
``find_distance`` of two embeddings.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamgrid import offline
from dreamgrid.errors import DreamgridError, SpecError
from dreamgrid.io import atomic_path, load_rgb
from dreamgrid.scoring.settings import EmbedSettings, FaceSettings

logger = logging.getLogger(__name__)

#: For the standalone commands (``dreamgrid score``...): the user's cache, never a folder of the
#: installed package. The workflow passes ``score.deepface_home`` (results/models/deepface).
DEFAULT_HOME = (
    Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "dreamgrid" / "deepface"
)

# Weight files deepface's Dlib recognition model and dlib detector look for, and which
# the face_recognition_models package ships (same files as dlib.net's .dat.bz2 downloads).
DLIB_WEIGHTS = (
    "dlib_face_recognition_resnet_model_v1.dat",
    "shape_predictor_5_face_landmarks.dat",
)

# Fixed as DeepFace.verify has them by default; part of "the same numbers as verify".
_EXPAND_PERCENTAGE = 0
_NORMALIZATION = "base"


# ---- setting deepface up: its home, its weights folder, the CPU ----------------------------


def setup_deepface(home: str | Path | None = None) -> Path:
    """Point deepface at a weights folder and make sure the offline Dlib weights are in it.

    Sets ``DEEPFACE_HOME`` (``home``, else the existing environment variable, else
    :data:`DEFAULT_HOME`); deepface must be imported only after this. Copies the Dlib weights
    from the ``face_recognition_models`` package into ``<home>/.deepface/weights`` where they
    are missing; existing files are never overwritten. Also quiets deepface's own logger (it
    prints) to warnings unless ``DEEPFACE_LOG_LEVEL`` is set. Idempotent.

    Args:
        home: folder for deepface's ``.deepface/weights``.

    Returns:
        The home folder (absolute).

    Raises:
        DreamgridError: weights are missing and ``face_recognition_models`` is not installed.
    """
    if home is None:
        home = os.environ.get("DEEPFACE_HOME") or DEFAULT_HOME
    home = Path(home).expanduser().resolve()
    weights = home / ".deepface" / "weights"
    try:
        weights.mkdir(parents=True, exist_ok=True)
        if not os.access(weights, os.W_OK | os.X_OK):
            raise PermissionError(f"{weights} is not writable")
    except OSError as err:
        raise DreamgridError(
            f"DEEPFACE_HOME {home}: cannot hold DeepFace's weights ({err}). Point "
            "score.deepface_home (or the DEEPFACE_HOME variable) at a folder you can write."
        ) from err
    os.environ["DEEPFACE_HOME"] = str(home)
    os.environ.setdefault("DEEPFACE_LOG_LEVEL", str(logging.WARNING))
    missing = [name for name in DLIB_WEIGHTS if not (weights / name).is_file()]
    if missing:
        source = _bundled_weights_dir()
        for name in missing:
            with atomic_path(weights / name) as tmp:
                shutil.copyfile(source / name, tmp)
            logger.info("copied %s into %s", name, weights)
    return home


def _bundled_weights_dir() -> Path:
    """The ``models`` folder of the face_recognition_models package, found without importing
    it (its ``__init__`` imports ``pkg_resources``, which recent setuptools no longer has)."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        models = Path(location) / "models"
        if all((models / name).is_file() for name in DLIB_WEIGHTS):
            return models
    raise DreamgridError(
        "The Dlib face weights are missing and the package face-recognition-models, which "
        "ships them, is not installed. Install it (pip install face-recognition-models) or "
        f"put {', '.join(DLIB_WEIGHTS)} into $DEEPFACE_HOME/.deepface/weights."
    )


#: What a process that scores faces sets before deepface starts: no visible GPU (CUDA and
#: ROCm builds of torch, TensorFlow) and ONNX graphs on the CPU execution provider.
CPU_ENV = {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": "", "DEEPFACE_ONNX_PROVIDERS": "cpu"}
BACKEND_VAR = "DEEPFACE_BACKEND_ENGINE"


def hide_gpus(environ: dict[str, str] | None = None) -> None:
    """Make this process (and the workers it forks) score on the CPU.

    Sets :data:`CPU_ENV`, and deepface's backend to ``onnx`` when onnxruntime is installed
    (it is in every scoring environment; torch would be deepface's choice where installed, so
    the venv and the conda env would run different graphs), unless ``DEEPFACE_BACKEND_ENGINE``
    is set. Must run before CUDA starts in the process: a process whose torch already holds
    a CUDA context is only warned about.
    """
    import importlib.util
    import sys

    environ = os.environ if environ is None else environ
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        logger.warning("CUDA was started in this process before deepface; it may use the GPU.")
    environ.update(CPU_ENV)
    if not environ.get(BACKEND_VAR) and importlib.util.find_spec("onnxruntime") is not None:
        environ[BACKEND_VAR] = "onnx"


@contextlib.contextmanager
def on_cpu() -> Any:
    """Score on the CPU inside the block, then give the process its environment back.

    For the preflight, which embeds the references in Snakemake's own process: the GPU jobs
    it starts afterwards must see the GPUs again (CUDA itself, started inside the block,
    keeps seeing none in this process).
    """
    keys = (*CPU_ENV, BACKEND_VAR)
    saved = {key: os.environ.get(key) for key in keys}
    hide_gpus()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _deepface():
    """Import and return ``deepface.DeepFace`` once the home is set up and the GPUs hidden.

    deepface calls ``warnings.filterwarnings("ignore")`` on import, which would silence every
    warning in the process; the filters are restored afterwards. In a job that runs offline
    (:func:`dreamgrid.offline.is_on`), a weight download is refused with the prepare step's
    name (:func:`_refuse_downloads`).
    """
    setup_deepface()
    hide_gpus()
    with warnings.catch_warnings():
        from deepface import DeepFace
    if offline.is_on():
        _refuse_downloads()
    return DeepFace


def deepface_version() -> str:
    """The installed deepface's version (read without importing it): distances differ across
    versions, so every stored embedding and score records it."""
    return importlib.metadata.version("deepface")


def compute_info() -> dict[str, str]:
    """The backend deepface runs on in this process and the device its models use
    (deepface's own rule: its torch models take ``cuda:0`` when CUDA is available)."""
    _deepface()
    from deepface.commons import backend_utils

    backend = backend_utils.get_backend_engine()
    device = "cpu"
    if backend == "pytorch":
        import torch

        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    elif backend == "onnx":
        device = os.environ.get("DEEPFACE_ONNX_PROVIDERS", "cuda,cpu").split(",")[0].strip()
    elif backend == "tensorflow":
        import tensorflow as tf

        device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return {"deepface_backend": backend, "device": device}


# ---- weights: prepared once on the submitting node, never downloaded by a job ---------------

#: The one function through which deepface (and retina-face, its retinaface detector) fetches
#: every weight file: ``download_weights_if_necessary(file_name, url(s), ...)``.
_DOWNLOADERS = ("deepface.commons.weight_utils", "retinaface.commons.weight_utils")


def _download_modules() -> list[Any]:
    import importlib

    found = []
    for name in _DOWNLOADERS:
        try:
            found.append(importlib.import_module(name))
        except ImportError:  # retina-face is optional, or needs a missing backend
            continue
    return found


@contextlib.contextmanager
def _wrapped_downloads(wrap: Any) -> Any:
    """Replace each library's download function by ``wrap(original)`` inside the block."""
    modules = _download_modules()
    saved = [module.download_weights_if_necessary for module in modules]
    for module, original in zip(modules, saved, strict=True):
        module.download_weights_if_necessary = wrap(original)
    try:
        yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.download_weights_if_necessary = original


def _weights_dir() -> Path:
    return Path(os.environ["DEEPFACE_HOME"]) / ".deepface" / "weights"


def offline_help(problem: str, home: str | Path) -> str:
    """The message of a job that would need DeepFace weights it does not have."""
    return (
        f"{problem}. Jobs run offline (compute nodes often have no network): DeepFace's "
        f"weights are downloaded once, before any job, by the local rule "
        f"{offline.FACE_PREPARE_RULE} into score.deepface_home ({home}). Run snakemake again "
        "from a node with network (it runs that rule there), or on a machine without any "
        "network run `dreamgrid fetch CONFIG --to DIR` where there is one, copy DIR here and "
        "set score.deepface_home to DIR/deepface."
    )


def _refuse_downloads() -> None:
    """From now on in this process, a weight file deepface does not find fails at once with
    :func:`offline_help` instead of a connection traceback."""

    def wrap(original: Any) -> Any:
        if getattr(original, "_dreamgrid_refuses", False):
            return original

        def download(file_name: str, *args: Any, **kwargs: Any) -> str:
            if (_weights_dir() / file_name).is_file():
                return original(file_name, *args, **kwargs)
            raise DreamgridError(
                offline_help(f"DeepFace needs {file_name}, which is not in {_weights_dir()}",
                             os.environ["DEEPFACE_HOME"])
            )  # fmt: skip

        download._dreamgrid_refuses = True  # type: ignore[attr-defined]
        return download

    for module in _download_modules():
        module.download_weights_if_necessary = wrap(module.download_weights_if_necessary)


def face_weights_problem(model: str, detector: str, home: str | Path) -> str | None:
    """Why ``home`` cannot score with (model, detector) offline, or None if it can: the
    prepare step's record (:func:`prepare_face_weights`) and every file it lists exist."""
    home = Path(home).expanduser().resolve()
    record = offline.face_record(home, model, detector)
    if not record.is_file():
        return f"DeepFace model {model} with detector {detector} was never prepared in {home}"
    try:
        files = json.loads(record.read_text())["files"]
    except (OSError, ValueError, KeyError) as err:
        return f"{record}: unreadable ({err})"
    weights = home / ".deepface" / "weights"
    missing = [name for name in files if not (weights / name).is_file()]
    if missing:
        return f"{', '.join(missing)} of DeepFace model {model}/{detector} missing in {weights}"
    return None


_READY: set[tuple[str, str, str]] = set()


def require_face_weights(settings: FaceSettings | EmbedSettings) -> None:
    """Fail at once, naming the model and the prepare step, when this offline process's
    deepface home lacks the weights of ``settings``."""
    home = os.environ.get("DEEPFACE_HOME") or str(DEFAULT_HOME)
    key = (settings.model, settings.detector, home)
    if key in _READY:
        return
    problem = face_weights_problem(settings.model, settings.detector, home)
    if problem:
        raise DreamgridError(offline_help(problem, home))
    _READY.add(key)


def prepare_face_weights(model: str, detector: str, home: str | Path) -> Path:
    """Put the weights of a recognition model and a detector into ``home`` by building both
    once, and record which files they loaded (the only step that downloads face weights).

    Downloads go through deepface's own download function; weight URLs on huggingface.co
    (deepface's backup source) are tried first at ``HF_ENDPOINT`` when that names a mirror.
    Files already present are not fetched again.

    Args:
        model: deepface recognition model, e.g. ``VGG-Face``.
        detector: deepface detector backend, e.g. ``retinaface``.
        home: the deepface home every job uses (``score.deepface_home``).

    Returns:
        The record (:func:`dreamgrid.offline.face_record`): model, detector, deepface
        version and the weight files with their sizes.
    """
    home = setup_deepface(home)
    hide_gpus()
    with warnings.catch_warnings():
        from deepface.modules import modeling
    files: list[str] = []

    def wrap(original: Any) -> Any:
        def download(file_name: str, *args: Any, **kwargs: Any) -> str:
            files.append(file_name)
            if args:
                args = (offline.mirrored(args[0]), *args[1:])
            for key in ("source_url", "source_urls"):
                if key in kwargs:
                    kwargs[key] = offline.mirrored(kwargs[key])
            return original(file_name, *args, **kwargs)

        return download

    with _wrapped_downloads(wrap):
        modeling.build_model(task="facial_recognition", model_name=model)
        if detector != "skip":
            modeling.build_model(task="face_detector", model_name=detector)
    weights = home / ".deepface" / "weights"
    record = offline.face_record(home, model, detector)
    record.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model,
        "detector": detector,
        "deepface": deepface_version(),
        "files": {name: (weights / name).stat().st_size for name in sorted(set(files))},
    }
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    logger.info("%s/%s: %s ready in %s", model, detector, ", ".join(payload["files"]), weights)
    return record


# ---- names, settings and thresholds, checked against deepface's own tables -----------------


def check_settings(settings: FaceSettings | EmbedSettings) -> None:
    """Raise SpecError for a model, detector or metric deepface does not know; offline, a
    DreamgridError when the weights were not prepared (:func:`require_face_weights`)."""
    _deepface()
    from deepface.config.threshold import thresholds
    from deepface.modules.modeling import AVAILABLE_MODELS

    if settings.model not in thresholds:
        raise SpecError(
            f"score model {settings.model!r} is not a deepface model. "
            f"Use one of: {', '.join(thresholds)}."
        )
    metric = getattr(settings, "metric", None)
    if metric is not None and metric not in thresholds[settings.model]:
        raise SpecError(
            f"score metric {settings.metric!r} is not a deepface metric. "
            f"Use one of: {', '.join(thresholds[settings.model])}."
        )
    detectors = AVAILABLE_MODELS["face_detector"]
    if settings.detector not in detectors:
        hint = (
            " ('skip' embeds the whole image and cannot tell whether a face is there)"
            if settings.detector == "skip"
            else ""
        )
        raise SpecError(
            f"score detector {settings.detector!r} is not a deepface face detector{hint}. "
            f"Use one of: {', '.join(detectors)}."
        )
    if offline.is_on():
        require_face_weights(settings)


#: A threshold this many times DeepFace's own for the model is "far above" it: nearly every
#: face, a stranger's too, falls below it.
FAR_ABOVE = 1.5
#: The stricter of the two thresholds fitted to a model, as a fraction of DeepFace's own (the
#: seed study's 0.6 is 88% of VGG-Face's 0.68).
STRICTER = 0.85


def verification_threshold(model: str, metric: str) -> float | None:
    """DeepFace's pretuned "same person" threshold for ``model`` and ``metric`` (None if it
    has none). Reads deepface's table only: no weights, no ``DEEPFACE_HOME`` needed."""
    from deepface.config.threshold import thresholds

    value = thresholds.get(model, {}).get(metric)
    return None if value is None else float(value)


def check_names(models: Sequence[str], detector: str, source: str = "config") -> None:
    """Refuse a face model or detector deepface does not know, naming the config key (reads
    deepface's tables only, so the config check stays fast).

    Raises:
        SpecError: with the known names.
    """
    import difflib

    from deepface.config.threshold import thresholds
    from deepface.modules.modeling import AVAILABLE_MODELS

    for key, name, known in [
        *[("score.model" if i == 0 else "score.models", m, list(thresholds)) for i, m in
          enumerate(models)],
        ("score.detector", detector, list(AVAILABLE_MODELS["face_detector"])),
    ]:  # fmt: skip
        if name not in known:
            same_case = {k.lower(): k for k in known}
            close = [same_case[name.lower()]] if name.lower() in same_case else []
            close = close or difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(
                f"{source}: {key}: {name!r} is not a DeepFace name{hint}. Use one of: "
                f"{', '.join(known)}."
            )


def fitted_thresholds(model: str, metric: str) -> list[float]:
    """Report thresholds that fit a face model: ``STRICTER`` x DeepFace's threshold (two
    significant digits) and the threshold itself, e.g. [0.06, 0.07] for Dlib/cosine and
    [0.58, 0.68] for VGG-Face/cosine.

    Raises:
        SpecError: deepface has no threshold for this model and metric.
    """
    own = verification_threshold(model, metric)
    if own is None:
        raise SpecError(
            f"score.model {model!r} with score.metric {metric!r} has no DeepFace threshold to "
            "fit score.thresholds to; set score.thresholds yourself."
        )
    stricter = float(f"{STRICTER * own:.2g}")
    return sorted({stricter, own})


def threshold_warnings(model: str, metric: str, thresholds: Sequence[float]) -> list[str]:
    """One sentence per threshold far above DeepFace's own for the model (empty if none)."""
    own = verification_threshold(model, metric)
    if own is None:
        return []
    return [
        f"score.thresholds {t:g} is {t / own:.1f}x DeepFace's same-person threshold for "
        f"{model}/{metric} ({own:g}): nearly every face, even a stranger's, falls below it, "
        "so its share says little. Leave score.thresholds unset to use thresholds that fit "
        "the model."
        for t in thresholds
        if t > FAR_ABOVE * own
    ]


def deepface_threshold(settings: FaceSettings) -> float:
    """DeepFace's own pretuned "same person" threshold for the model and metric."""
    check_settings(settings)
    from deepface.modules.verification import find_threshold

    return float(find_threshold(settings.model, settings.metric))


# ---- detecting and embedding the faces of one image ------------------------------------------


def _read_bgr(image: Path) -> np.ndarray:
    """The image as deepface reads a path (``cv2.imread``, BGR), so embeddings match verify's.

    Files OpenCV cannot decode go through :func:`dreamgrid.io.load_rgb`, which names the file
    in a SpecError when Pillow cannot read it either.
    """
    import cv2

    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if bgr is None:
        bgr = np.ascontiguousarray(np.asarray(load_rgb(image))[:, :, ::-1])
    return bgr


def embed_faces(image: str | Path, settings: FaceSettings | EmbedSettings) -> list[np.ndarray]:
    """One embedding per face deepface detects in ``image``; ``[]`` when it finds none.

    These are exactly the embeddings ``DeepFace.verify`` computes for the image: detection with
    ``enforce_detection=True`` and ``expand_percentage=0``, then ``represent`` on each face crop
    with ``detector_backend="skip"`` and ``normalization="base"``.

    Raises:
        SpecError: the file is not a readable image, or a setting is unknown to deepface.
    """
    return [face.embedding for face in detect_and_embed(image, settings)]


@dataclass(frozen=True)
class Face:
    """One detected face: its embedding and the area (pixels) of its detected box."""

    embedding: np.ndarray
    area: int


def detect_and_embed(image: str | Path, settings: FaceSettings | EmbedSettings) -> list[Face]:
    """Every face deepface detects in ``image`` with its embedding and box area (see
    :func:`embed_faces`); ``[]`` when it finds none."""
    check_settings(settings)
    deepface = _deepface()
    from deepface.modules.exceptions import FaceNotDetected, ImgNotFound

    image = Path(image)
    bgr = _read_bgr(image)
    try:
        detected = deepface.extract_faces(
            img_path=bgr,
            detector_backend=settings.detector,
            enforce_detection=True,
            align=settings.align,
            expand_percentage=_EXPAND_PERCENTAGE,
        )
    except (FaceNotDetected, ImgNotFound):
        # ImgNotFound here means every detected box was empty: verify raises it too.
        logger.debug("%s: no face detected", image)
        return []
    found = []
    for face in detected:
        result = deepface.represent(
            img_path=face["face"][:, :, ::-1],  # RGB back to BGR, as verify does
            model_name=settings.model,
            enforce_detection=True,
            detector_backend="skip",
            align=settings.align,
            normalization=_NORMALIZATION,
        )
        area = int(face["facial_area"]["w"]) * int(face["facial_area"]["h"])
        found.append(Face(np.asarray(result[0]["embedding"], dtype=np.float64), area))
    logger.debug("%s: %d face(s)", image, len(found))
    return found


def embedding_metadata(settings: FaceSettings | EmbedSettings) -> dict[str, Any]:
    """What an embedding depends on: deepface version, model, detector, alignment, and the
    backend and device that ran it (:func:`compute_info`)."""
    return {
        "deepface_version": deepface_version(),
        "model": settings.model,
        "detector": settings.detector,
        "align": settings.align,
        **compute_info(),
    }


def find_distance(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    """deepface's own ``find_distance`` of two embeddings (not rounded; call
    :func:`setup_deepface` first)."""
    from deepface.modules.verification import find_distance as deepface_distance

    return float(deepface_distance(np.asarray(a), np.asarray(b), metric))
