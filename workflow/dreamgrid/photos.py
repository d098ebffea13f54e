"""Which reference close-ups were cut from which training photo.

Users often make their reference close-ups by cropping their own training photos. A training
photo scored against its own crop is a near self-match, so the training-photo baseline must
leave those pairs out. Face embeddings cannot tell "same photo" from "same person" (a crop and
another photo of the person can be equally close), but the pixels can: a crop is the same
image under a scale and shift, so ORB keypoints match under one similarity transform with
many RANSAC inliers, while two different photos of the person agree on a handful at most.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dreamgrid.io import load_rgb

log = logging.getLogger(__name__)

#: Inliers of one similarity transform from which two images count as cut from one photo.
#: Measured on the demo photos: crops of the same photo 68-374, different photos 2-6.
MIN_INLIERS = 20
_FEATURES = 2000
_RATIO = 0.75  # Lowe's ratio test
_REPROJECTION_PX = 3.0


def _keypoints(path: Path):
    import cv2

    gray = np.asarray(load_rgb(path).convert("L"))
    return cv2.ORB_create(nfeatures=_FEATURES).detectAndCompute(gray, None)


def _inliers(first, second) -> int:
    """Keypoint matches of ``first`` in ``second`` consistent with one similarity transform."""
    import cv2

    (points_a, descriptors_a), (points_b, descriptors_b) = first, second
    if descriptors_a is None or descriptors_b is None or len(points_b) < 2:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(descriptors_a, descriptors_b, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < _RATIO * p[1].distance]
    if len(good) < 3:
        return 0
    source = np.float32([points_a[m.queryIdx].pt for m in good])
    target = np.float32([points_b[m.trainIdx].pt for m in good])
    _, mask = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=_REPROJECTION_PX
    )
    return 0 if mask is None else int(mask.sum())


def cut_from(
    references: Sequence[Path], photos: Sequence[Path], min_inliers: int = MIN_INLIERS
) -> dict[str, list[str]]:
    """For each photo (by file name), the references (file names) cut from it.

    Args:
        references: the reference close-ups.
        photos: the training photos.
        min_inliers: RANSAC inliers from which a reference counts as a crop of a photo.

    Returns:
        photo name -> sorted reference names that share its pixels (empty list when none).
    """
    reference_points = {Path(r).name: _keypoints(Path(r)) for r in references}
    found: dict[str, list[str]] = {}
    for photo in map(Path, photos):
        points = _keypoints(photo)
        found[photo.name] = sorted(
            name
            for name, ref_points in reference_points.items()
            if _inliers(ref_points, points) >= min_inliers
        )
        if found[photo.name]:
            log.info("%s: reference(s) %s were cut from it", photo.name, found[photo.name])
    return found
