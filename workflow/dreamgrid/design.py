"""Which points of the axes' product a grid trains (``axes.design``).

``full`` is the product itself. ``one_at_a_time`` is a baseline recipe (the first level of
every axis) plus, per axis, one point per other level with every other axis at its baseline:
``1 + sum(len(axis) - 1)`` points instead of ``prod(len(axis))``. Each changed point against
the baseline is that axis's main effect at the baseline of the others; no interaction can be
estimated (the corners are missing).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

DESIGNS = ("full", "one_at_a_time")


def points(levels: Sequence[Sequence[T]], design: str) -> list[tuple[T, ...]]:
    """The grid's points, one tuple per point with one level per axis, in axis order.

    Args:
        levels: the levels of each axis, the baseline level first.
        design: ``full`` (``itertools.product`` order) or ``one_at_a_time`` (the baseline,
            then each axis's other levels in order).

    Returns:
        The points; for ``one_at_a_time`` ``1 + sum(len(l) - 1)`` of them.
    """
    if design == "full":
        return list(itertools.product(*levels))
    if design != "one_at_a_time":
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    if any(len(axis) == 0 for axis in levels):
        return []
    baseline = tuple(axis[0] for axis in levels)
    out = [baseline]
    for i, axis in enumerate(levels):
        for level in axis[1:]:
            out.append(baseline[:i] + (level,) + baseline[i + 1 :])
    return out


def count(sizes: Sequence[int], design: str) -> int:
    """How many points :func:`points` gives for axes of ``sizes`` levels, without building
    them (the arm cap is checked before a runaway grid is expanded)."""
    if design == "one_at_a_time":
        return 0 if any(n == 0 for n in sizes) else 1 + sum(n - 1 for n in sizes)
    return math.prod(sizes)
