"""Score stage: face detection, embeddings and distances with DeepFace.

This is the only module that imports deepface, and it does so lazily, after
:func:`setup_deepface` has pointed ``DEEPFACE_HOME`` at a folder holding the weights (deepface
writes under that folder on import and looks its weights up there).

Every image is detected and embedded once; distances to the references are then computed with
deepface's own ``find_distance``, one pair at a time, so each number is bit-for-bit the
``distance`` that ``DeepFace.verify(image, reference, ...)`` returns for the same model,
detector, metric and alignment (including verify's rounding to 6 decimals and its choice of the
closest pair when an image shows several faces). An image without a detected face is recorded as
``face_found=False`` with NaN distances: never as distance 0, never silently dropped, and never
embedded whole (deepface's ``enforce_detection=False`` would do that and give an
ordinary-looking distance).

Scoring runs on the CPU by construction: before deepface is imported, :func:`hide_gpus` makes
no GPU visible to the process (and its worker processes) and picks deepface's backend (ONNX
on the CPU where onnxruntime is installed). GPU jobs hold the cards; a scoring job's workers
would otherwise each open a CUDA context and load a model beside a training job.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamgrid import offline
from dreamgrid.errors import DreamgridError, NoFaceError, SpecError
from dreamgrid.io import atomic_path, file_hash, list_images, load_rgb
from dreamgrid.prompts import MAIN_PROMPT_SET

if TYPE_CHECKING:
    import pandas

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

COLUMNS = ("image", "face_found", "n_faces", "mean_distance")
DISTANCE_PREFIX = "d:"


@dataclass(frozen=True)
class FaceSettings:
    """How faces are found and compared (defaults live in the config schema).

    Attributes:
        model: deepface recognition model, e.g. ``Dlib``, ``VGG-Face``, ``ArcFace``.
        detector: deepface detector backend, e.g. ``dlib``, ``retinaface``.
        metric: ``cosine``, ``euclidean``, ``euclidean_l2`` or ``angular``.
        align: align faces on the eyes before embedding (deepface's ``align``).
    """

    model: str
    detector: str
    metric: str
    align: bool

    @property
    def embedding(self) -> EmbedSettings:
        """The part of the settings embeddings depend on (not the metric)."""
        return EmbedSettings(model=self.model, detector=self.detector, align=self.align)


@dataclass(frozen=True)
class EmbedSettings:
    """What an embedding depends on: recognition model, detector and alignment.

    Embeddings made with these settings serve every metric, so changing the metric only
    recomputes distances.
    """

    model: str
    detector: str
    align: bool


#: How to score an image in which several faces were found: ``closest`` is what
#: ``DeepFace.verify`` does (the smallest distance over the image's faces, per reference),
#: ``largest`` scores only the face with the largest detected box.
MULTIPLE_FACES = ("closest", "largest")


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
        "deepface": importlib.metadata.version("deepface"),
        "files": {name: (weights / name).stat().st_size for name in sorted(set(files))},
    }
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    logger.info("%s/%s: %s ready in %s", model, detector, ", ".join(payload["files"]), weights)
    return record


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


def _check(settings: FaceSettings | EmbedSettings) -> None:
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
    _check(settings)
    from deepface.modules.verification import find_threshold

    return float(find_threshold(settings.model, settings.metric))


def metadata(settings: FaceSettings, thresholds: Sequence[float]) -> dict[str, Any]:
    """What a score file's numbers depend on (distances differ across deepface versions).

    Args:
        settings: the face settings used.
        thresholds: the distance cut-offs the report uses.

    Returns:
        deepface_version, model, detector, metric, align, deepface_threshold, thresholds.
    """
    return {
        "deepface_version": importlib.metadata.version("deepface"),
        **asdict(settings),
        **compute_info(),
        "deepface_threshold": deepface_threshold(settings),
        "thresholds": [float(t) for t in thresholds],
    }


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
    _check(settings)
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


def embed_references(paths: Sequence[Path], settings: FaceSettings) -> dict[str, np.ndarray]:
    """Embed the reference photos of the subject, one face each.

    Args:
        paths: reference images; their file names must be distinct.
        settings: face settings.

    Returns:
        file name -> embedding, in the order given.

    Raises:
        NoFaceError: a reference shows no face (the message names the file).
        SpecError: a reference shows several faces, or two references share a file name.
    """
    embeddings: dict[str, np.ndarray] = {}
    for path in map(Path, paths):
        if path.name in embeddings:
            raise SpecError(
                f"{path}: another reference has the file name {path.name!r}. "
                "Rename one; scores are keyed by reference file name."
            )
        faces = embed_faces(path, settings)
        if not faces:
            raise NoFaceError(
                f"{path}: no face found by the {settings.detector!r} detector. References must "
                "each show the subject's face clearly; replace or remove this photo."
            )
        if len(faces) > 1:
            raise SpecError(
                f"{path}: {len(faces)} faces found; references must each show the subject "
                "alone. Crop the photo to the subject or remove it."
            )
        embeddings[path.name] = faces[0]
    logger.info(
        "embedded %d reference(s) with %s/%s", len(embeddings), settings.model, settings.detector
    )
    return embeddings


def embedding_metadata(settings: FaceSettings | EmbedSettings) -> dict[str, Any]:
    """What an embedding depends on: deepface version, model, detector, alignment, and the
    backend and device that ran it (:func:`compute_info`)."""
    return {
        "deepface_version": importlib.metadata.version("deepface"),
        "model": settings.model,
        "detector": settings.detector,
        "align": settings.align,
        **compute_info(),
    }


def save_references(
    embeddings: dict[str, np.ndarray], settings: FaceSettings | EmbedSettings, out: Path
) -> None:
    """Write reference embeddings and their metadata (:func:`embedding_metadata`) as JSON,
    atomically.

    Floats are written by ``json`` (shortest repr), so :func:`load_references` gets back
    exactly the same float64 values.
    """
    payload = {
        "metadata": embedding_metadata(settings),
        "embeddings": {
            name: np.asarray(e, dtype=np.float64).tolist() for name, e in embeddings.items()
        },
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")


def load_references(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_references`.

    Returns:
        (file name -> embedding, metadata).

    Raises:
        SpecError: the file is missing or not a references file.
    """
    try:
        payload = json.loads(Path(path).read_text())
        embeddings = {
            name: np.asarray(values, dtype=np.float64)
            for name, values in payload["embeddings"].items()
        }
        meta = payload["metadata"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SpecError(
            f"{path}: not a reference-embeddings file ({err}). Recreate it from the references."
        ) from err
    return embeddings, meta


def check_references_match(meta: dict[str, Any], settings: FaceSettings | EmbedSettings) -> None:
    """Raise SpecError if saved embeddings were made with other embedding settings or another
    deepface version."""
    expected = embedding_metadata(settings)
    wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in wrong.items())
        raise SpecError(
            f"embeddings were made with other settings ({details}). Embed the images again."
        )


# ---- embedding many images: content-hash cache, worker processes -------------------------


class EmbeddingCache:
    """Embeddings of image files keyed by content hash, one small JSON file per image.

    Files live under ``<folder>/<model>-<detector>-align<0|1>-deepface<version>/<hash[:2]>/``,
    so other settings or another deepface version never reuse them. Each file is written
    atomically (temp name, then rename), so concurrent jobs can share one cache folder.
    """

    def __init__(self, folder: str | Path, settings: FaceSettings | EmbedSettings):
        meta = embedding_metadata(settings)
        name = (
            f"{meta['model']}-{meta['detector']}-align{int(meta['align'])}"
            f"-deepface{meta['deepface_version']}"
        )
        self.folder = Path(folder) / name

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.json"

    def get(self, digest: str) -> list[Face] | None:
        """The cached faces of the image with this hash, or None."""
        try:
            payload = json.loads(self._path(digest).read_text())
        except (OSError, ValueError):
            return None
        return [Face(np.asarray(f["embedding"], dtype=np.float64), f["area"]) for f in payload]

    def put(self, digest: str, found: Sequence[Face]) -> None:
        payload = [{"embedding": f.embedding.tolist(), "area": f.area} for f in found]
        with atomic_path(self._path(digest)) as tmp:
            tmp.write_text(json.dumps(payload))


_WORKER_SETTINGS: EmbedSettings | None = None
#: Fewer images than this per worker process are embedded in this process instead.
MIN_IMAGES_PER_WORKER = 4


def die_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """End this (worker) process when ``parent`` dies, even by SIGKILL.

    A killed job cannot shut its pool down, and its workers would wait forever on the pool's
    pipe (~100 MB each). Linux delivers SIGKILL to the worker when its parent dies
    (``PR_SET_PDEATHSIG``); elsewhere, or if prctl fails, a thread watches the parent pid.
    """
    import signal
    import threading
    import time

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(poll_s)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()
    # The parent may have died before prctl took effect: then no signal comes.
    if os.getppid() != parent:
        os._exit(1)


def _init_worker(home: str, settings: EmbedSettings, parent: int) -> None:
    global _WORKER_SETTINGS
    die_with_parent(parent)
    setup_deepface(home)
    _WORKER_SETTINGS = settings


def _embed_in_worker(path: Path) -> list[Face]:
    assert _WORKER_SETTINGS is not None
    return detect_and_embed(path, _WORKER_SETTINGS)


def default_workers() -> int:
    """CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def embed_images(
    images: Sequence[Path],
    settings: FaceSettings | EmbedSettings,
    *,
    cache: EmbeddingCache | None = None,
    workers: int = 1,
    progress: bool = True,
) -> list[list[Face]]:
    """Detect and embed every image once: the faces of each image, in order.

    Images already in ``cache`` (same bytes, same settings, same deepface version) are not
    embedded again; the others are embedded in ``workers`` processes (dlib holds the GIL, so
    threads do not help; see benchmarks/RESULTS.md) and added to the cache.
    """
    from tqdm.auto import tqdm

    images = [Path(p) for p in images]
    _check(settings)
    embed = settings if isinstance(settings, EmbedSettings) else settings.embedding
    digests = [file_hash(p) for p in images] if cache is not None else [None] * len(images)
    results: list[list[Face] | None] = [
        cache.get(d) if cache is not None else None for d in digests
    ]
    todo = [i for i, r in enumerate(results) if r is None]
    if len(todo) < len(images):
        logger.info("%d of %d image(s) found in the cache", len(images) - len(todo), len(images))
    # A worker process costs a deepface import and model load (seconds): only worth it for
    # a few images each.
    workers = max(1, min(workers, len(todo) // MIN_IMAGES_PER_WORKER))
    bar = tqdm(total=len(todo), desc=f"embed {embed.model}", unit="img", disable=not progress)
    with bar:
        if workers == 1:
            done = ((i, detect_and_embed(images[i], embed)) for i in todo)
            for i, found in done:
                results[i] = found
                if cache is not None:
                    cache.put(digests[i], found)
                bar.update(1)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork, not spawn: spawn re-runs __main__, which in a Snakemake job is the script
            # shim (it fails without its `snakemake` object).
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            from concurrent.futures.process import BrokenProcessPool

            home = os.environ["DEEPFACE_HOME"]
            try:
                with ProcessPoolExecutor(
                    workers,
                    mp_context=context,
                    initializer=_init_worker,
                    initargs=(home, embed, os.getpid()),
                ) as pool:
                    done = zip(todo, pool.map(_embed_in_worker, [images[i] for i in todo]))
                    for i, found in done:
                        results[i] = found
                        if cache is not None:
                            cache.put(digests[i], found)
                        bar.update(1)
            except BrokenProcessPool:
                # A worker died (killed, out of memory): finish in this process instead.
                logger.warning("embedding worker died; embedding the rest in one process")
                for i in todo:
                    if results[i] is None:
                        results[i] = detect_and_embed(images[i], embed)
                        if cache is not None:
                            cache.put(digests[i], results[i])
                        bar.update(1)
    return [r if r is not None else [] for r in results]


def distance(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    """deepface's own ``find_distance`` of two embeddings, rounded to 6 decimals as
    ``DeepFace.verify`` rounds it (call :func:`setup_deepface` first)."""
    from deepface.modules.verification import find_distance

    return float(np.round(float(find_distance(np.asarray(a), np.asarray(b), metric)), 6))


def face_distances(
    found: Sequence[Face],
    references: dict[str, np.ndarray],
    metric: str,
    multiple_faces: str,
) -> list[float]:
    """Distance of one image to each reference; NaN for each when no face was found.

    With ``closest`` (``DeepFace.verify``'s rule) the distance to a reference is the smallest
    over the image's faces; with ``largest`` only the face with the largest box counts (ties:
    the first detected). Each distance is deepface's own ``find_distance`` of one pair, in
    verify's argument order, rounded to 6 decimals as verify rounds it: the 2-D batched path
    normalises with an epsilon and can differ in the 6th decimal after rounding.
    """
    from deepface.modules.verification import find_distance

    if multiple_faces not in MULTIPLE_FACES:
        raise SpecError(
            f"multiple_faces must be one of {', '.join(MULTIPLE_FACES)}, got {multiple_faces!r}."
        )
    if not found:
        return [math.nan] * len(references)
    if multiple_faces == "largest" and len(found) > 1:
        found = [max(found, key=lambda f: f.area)]
    return [
        min(float(find_distance(f.embedding, ref, metric)) for f in found)
        for ref in references.values()
    ]


def score_table(
    names: Sequence[str],
    found: Sequence[Sequence[Face]],
    references: dict[str, np.ndarray],
    metric: str,
    multiple_faces: str,
) -> pandas.DataFrame:
    """Rows ``image, face_found, n_faces, mean_distance, d:<reference>...`` from faces."""
    import pandas as pd

    columns = [DISTANCE_PREFIX + name for name in references]
    rows = []
    for name, faces_ in zip(names, found, strict=True):
        distances = face_distances(faces_, references, metric, multiple_faces)
        rows.append(
            {
                "image": name,
                "face_found": bool(faces_),
                "n_faces": len(faces_),
                "mean_distance": float(np.mean(distances)) if faces_ else math.nan,
                **dict(zip(columns, distances, strict=True)),
            }
        )
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *columns])
    return frame.astype({"face_found": bool, "n_faces": int, "mean_distance": float})


def score_images(
    images: Sequence[Path],
    references: dict[str, np.ndarray],
    settings: FaceSettings,
    progress: bool = True,
    *,
    multiple_faces: str = "closest",
    cache: EmbeddingCache | None = None,
    workers: int = 1,
) -> pandas.DataFrame:
    """Distance of every image to every reference.

    Args:
        images: images to score (renders, or real photos).
        references: reference file name -> embedding (from :func:`embed_references`).
        settings: face settings (the ones the references were embedded with).
        progress: show a tqdm bar.
        multiple_faces: ``closest`` (as ``DeepFace.verify``) or ``largest``; see
            :func:`face_distances`.
        cache: reuse and store embeddings by file content (:class:`EmbeddingCache`).
        workers: processes that detect and embed.

    Returns:
        One row per image: ``image`` (file name), ``face_found``, ``n_faces``,
        ``mean_distance`` (mean over references) and ``d:<reference>`` per reference. With
        ``closest`` the distance to a reference equals
        ``DeepFace.verify(image, reference)["distance"]``. NaN where no face was found.
    """
    if not references:
        raise SpecError("no reference embeddings given; add reference photos of the subject.")
    _check(settings)
    images = [Path(p) for p in images]
    found = embed_images(images, settings, cache=cache, workers=workers, progress=progress)
    frame = score_table(
        [p.name for p in images], found, references, settings.metric, multiple_faces
    )
    logger.info(
        "scored %d image(s); a face was found in %d", len(frame), int(frame["face_found"].sum())
    )
    return frame


def meta_path(out: str | Path) -> Path:
    """The metadata sidecar of a score file: ``scores.csv`` -> ``scores.meta.json``."""
    return Path(out).with_suffix(".meta.json")


def write_scores(frame: pandas.DataFrame, meta: dict[str, Any], out: Path) -> None:
    """Write a score table as CSV (``face_found`` as true/false, empty cells for NaN) and its
    metadata sidecar (:func:`meta_path`), each atomically."""
    table = frame.assign(face_found=frame["face_found"].map({True: "true", False: "false"}))
    with atomic_path(meta_path(out)) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, na_rep="")


#: Metadata keys that must agree for two score tables' distances to be comparable.
COMPARABLE_KEYS = ("deepface_version", "model", "detector", "metric", "align")


def compare_metadata(metas: dict[str, dict[str, Any]]) -> list[str]:
    """Warn (log and return the messages) where score tables were made differently.

    Distances change across deepface versions, models, detectors, metrics and alignment, so
    comparing such tables is misleading.

    Args:
        metas: a label per table (e.g. its path) -> its metadata (``scores.meta.json``).

    Returns:
        One message per key whose values differ; empty when all agree.
    """
    messages = []
    for key in COMPARABLE_KEYS:
        values: dict[str, list[str]] = {}
        for label, meta in metas.items():
            values.setdefault(repr(meta.get(key)), []).append(str(label))
        if len(values) > 1:
            detail = "; ".join(
                f"{value} in {', '.join(labels[:3])}{' ...' if len(labels) > 3 else ''}"
                for value, labels in values.items()
            )
            messages.append(f"score tables differ in {key} ({detail}): distances not comparable")
    for message in messages:
        logger.warning(message)
    return messages


def run_score_cli(
    references: Path,
    images: Path,
    model: str,
    detector: str,
    metric: str,
    out: Path,
    *,
    align: bool = True,
    thresholds: Sequence[float] = (),
    multiple_faces: str = "closest",
    workers: int | None = None,
    cache: Path | None = None,
) -> pandas.DataFrame:
    """``dreamgrid score``: distances of a folder of images to a folder of reference photos.

    Writes ``out`` (CSV: image, face_found, n_faces, mean_distance, d:<reference>...) and
    ``out`` with suffix ``.meta.json`` (:func:`metadata`). Images are embedded in ``workers``
    processes (default: every CPU); with ``cache``, embeddings are reused by file content.

    Raises:
        SpecError: a folder is missing or empty, a setting is unknown, or a reference shows
            several faces.
        NoFaceError: a reference shows no face.
    """
    settings = FaceSettings(model=model, detector=detector, metric=metric, align=align)
    _check(settings)
    image_paths = list_images(images)
    embeddings = embed_references(list_images(references), settings)
    frame = score_images(
        image_paths,
        embeddings,
        settings,
        multiple_faces=multiple_faces,
        cache=EmbeddingCache(cache, settings) if cache is not None else None,
        workers=workers or default_workers(),
    )
    meta = {**metadata(settings, thresholds), "multiple_faces": multiple_faces}
    write_scores(frame, meta, Path(out))
    return frame


def settings_from(params: dict[str, Any]) -> FaceSettings:
    """FaceSettings from the config's ``score`` section (extra keys are ignored)."""
    return FaceSettings(
        model=params["model"],
        detector=params["detector"],
        metric=params["metric"],
        align=params["align"],
    )


def embed_settings_from(params: dict[str, Any]) -> EmbedSettings:
    """EmbedSettings from job params (``model``, ``detector``, ``align``; others ignored)."""
    return EmbedSettings(model=params["model"], detector=params["detector"], align=params["align"])


def run_embed_references(
    references: Path, settings: FaceSettings | EmbedSettings, out: Path
) -> None:
    """Workflow step: embed the subject's reference photos once per (model, detector)."""
    embeddings = embed_references(list_images(references), settings)
    save_references(embeddings, settings, out)


# ---- workflow steps on shards ---------------------------------------------------------------


def save_faces(
    names: Sequence[str],
    digests: Sequence[str],
    found: Sequence[Sequence[Face]],
    settings: EmbedSettings,
    out: Path,
) -> None:
    """Write the faces of a shard's renders (embeddings, box areas, content hashes) as JSON."""
    payload = {
        "metadata": embedding_metadata(settings),
        "images": [
            {
                "image": name,
                "sha256": digest,
                "faces": [{"embedding": f.embedding.tolist(), "area": f.area} for f in faces_],
            }
            for name, digest, faces_ in zip(names, digests, found, strict=True)
        ],
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload) + "\n")


def load_faces(path: Path) -> tuple[dict[str, list[Face]], dict[str, Any]]:
    """Read :func:`save_faces` output: (image name -> faces, metadata)."""
    try:
        payload = json.loads(Path(path).read_text())
        found = {
            item["image"]: [
                Face(np.asarray(f["embedding"], dtype=np.float64), int(f["area"]))
                for f in item["faces"]
            ]
            for item in payload["images"]
        }
        meta = payload["metadata"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SpecError(f"{path}: not a faces file ({err}). Embed the renders again.") from err
    return found, meta


def run_embed_renders(
    renders_table: Path,
    renders_dir: Path,
    settings: EmbedSettings,
    out: Path,
    *,
    cache_dir: Path | None,
    workers: int,
) -> None:
    """Workflow step: detect and embed one shard's renders once for one (model, detector).

    ``cache_dir`` holds embeddings by file content (:class:`EmbeddingCache`), so a re-rendered
    shard whose images did not change, or any other job seeing the same bytes, is not
    embedded again.
    """
    import pandas as pd

    names = list(pd.read_csv(renders_table)["image"])
    paths = [Path(renders_dir) / name for name in names]
    cache = EmbeddingCache(cache_dir, settings) if cache_dir is not None else None
    found = embed_images(paths, settings, cache=cache, workers=workers)
    save_faces(names, [file_hash(p) for p in paths], found, settings, out)
    logger.info(
        "%d render(s), %d with a face, %s/%s -> %s",
        len(names),
        sum(bool(f) for f in found),
        settings.model,
        settings.detector,
        out,
    )


def run_score_checkpoint(
    renders_tables: Sequence[Path],
    faces_files: dict[str, Sequence[Path]],
    references: dict[str, Path],
    checkpoint_meta: Path,
    settings: FaceSettings,
    multiple_faces: str,
    arm: str,
    epoch: int,
    out: Path,
    prompt_set: str = MAIN_PROMPT_SET,
) -> pandas.DataFrame:
    """Workflow step: merge one checkpoint's shards and score them with every model.

    Args:
        renders_tables: the shards' render tables (``image`` relative to ``renders/``).
        faces_files: model -> that model's faces file per shard, in the order of
            ``renders_tables``.
        references: model -> its reference embeddings file.
        checkpoint_meta: the checkpoint's JSON (``steps``).
        settings: detector, metric, alignment (``model`` is the primary model, listed first).
        multiple_faces: ``closest`` or ``largest``.
        arm: arm id.
        epoch: epoch number.
        prompt_set: the renders' prompt set (a column of the table).
        out: ``scores.csv``; its sidecar ``scores.meta.json`` records for every model the
            deepface version, detector, metric, alignment and DeepFace's own threshold.

    Returns:
        One row per render and model: ``arm, epoch, steps, seed, image, model, prompt_set,
        face_found, n_faces, mean_distance, d:<reference>...``, sorted by model (as listed)
        then seed.
    """
    import dataclasses

    import pandas as pd

    renders = pd.concat([pd.read_csv(t) for t in renders_tables], ignore_index=True)
    steps = json.loads(Path(checkpoint_meta).read_text())["steps"]
    tables, models_meta = [], {}
    for model, files in faces_files.items():
        model_settings = dataclasses.replace(settings, model=model)
        embeddings, ref_meta = load_references(references[model])
        check_references_match(ref_meta, model_settings)
        found: dict[str, list[Face]] = {}
        for path in files:
            shard_faces, meta = load_faces(path)
            check_references_match(meta, model_settings)
            found.update(shard_faces)
        scores = score_table(
            list(renders["image"]),
            [found[name] for name in renders["image"]],
            embeddings,
            settings.metric,
            multiple_faces,
        )
        head = pd.DataFrame({"arm": arm, "epoch": epoch, "steps": steps, "seed": renders["seed"]})
        frame = pd.concat([head, scores], axis=1)
        frame.insert(frame.columns.get_loc("image") + 1, "model", model)
        frame.insert(frame.columns.get_loc("model") + 1, "prompt_set", prompt_set)
        tables.append(frame.sort_values("seed", kind="stable"))
        models_meta[model] = {
            "deepface_threshold": deepface_threshold(model_settings),
            "face_rate": float(scores["face_found"].mean()) if len(scores) else math.nan,
        }
        logger.info(
            "%s: %d render(s), face rate %.3f", model, len(scores), models_meta[model]["face_rate"]
        )
    frame = pd.concat(tables, ignore_index=True)
    meta = {
        **metadata(settings, ()),
        "multiple_faces": multiple_faces,
        "models": models_meta,
    }
    write_scores(frame, meta, out)
    return frame


# ---- the real-photos baseline ------------------------------------------------------------------

#: Columns of the baseline table (:func:`run_baseline`).
BASELINE_COLUMNS = ("source", "photo", "face_found", "mean_distance", "n_compared", "excluded")


def reference_rows(embeddings: dict[str, np.ndarray], metric: str) -> pandas.DataFrame:
    """Each reference scored against the *other* references (leave-one-out)."""
    import pandas as pd

    from dreamgrid.baseline import reference_baseline

    loo = reference_baseline(embeddings, metric)
    return pd.DataFrame(
        {
            "source": "reference",
            "photo": loo["reference"],
            "face_found": True,
            "mean_distance": loo["mean_distance"],
            "n_compared": loo["n_others"],
            "excluded": "",
        },
        columns=list(BASELINE_COLUMNS),
    )


def training_rows(
    photos: Sequence[Path],
    embeddings: dict[str, np.ndarray],
    settings: FaceSettings | EmbedSettings,
    metric: str,
    multiple_faces: str,
    cut_from: dict[str, list[str]],
) -> pandas.DataFrame:
    """Each training photo scored like a render against the references, leaving out the
    references cut from that photo (``cut_from``: photo name -> reference names).

    A photo without a face, or whose only references were cut from it, gets no distance.
    """
    import pandas as pd

    photos = list(map(Path, photos))
    found = [detect_and_embed(photo, settings) for photo in photos]
    table = score_table([p.name for p in photos], found, embeddings, metric, multiple_faces)
    rows = []
    for _, row in table.iterrows():
        excluded = [r for r in cut_from.get(row["image"], []) if r in embeddings]
        distances = [row[DISTANCE_PREFIX + name] for name in embeddings if name not in excluded]
        face = bool(row["face_found"])
        rows.append(
            {
                "source": "training",
                "photo": row["image"],
                "face_found": face,
                "mean_distance": float(np.mean(distances)) if face and distances else math.nan,
                "n_compared": len(distances) if face else 0,
                "excluded": ";".join(excluded),
            }
        )
    return pd.DataFrame(rows, columns=list(BASELINE_COLUMNS))
