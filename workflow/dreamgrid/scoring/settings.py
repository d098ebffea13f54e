"""What faces are found and compared with: the score settings of the config, as dataclasses.

:class:`FaceSettings` is the ``score`` section's part that scoring uses; :class:`EmbedSettings`
the part embeddings depend on (not the metric), so one embedding serves every metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
