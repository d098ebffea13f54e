"""Train stage: one DreamBooth epoch of one arm per job (rule ``train_dreambooth``).

The rule's shim builds the job's :class:`~dreamgrid.train.spec.TrainSpec` from its params
(:func:`~dreamgrid.train.spec.job_spec`) and calls :func:`train_dreambooth`. The modules, in the order a
job uses them: ``spec`` (settings), ``data`` (items, batches, step counts), ``cache`` (latents),
``state`` (resume file), ``loop`` (the epoch), the family's trainer (``sd15``, ``sdxl``),
``export`` (checkpoint files; ``export_sdxl`` for SDXL's layout); ``targets``
checks LoRA targets, ``kohya`` imports Kohya datasets, ``testing`` builds specs for tests.

``train_dreambooth`` imports torch and diffusers when called, so ``dreamgrid.train.spec`` and
``dreamgrid.train.data.steps_per_epoch`` stay importable with the standard library alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dreamgrid.train.spec import TrainSpec

__all__ = ["train_dreambooth"]


def train_dreambooth(spec: TrainSpec) -> dict[str, Any]:
    """Train epoch ``spec.epoch`` of arm ``spec.arm``; see :func:`dreamgrid.train.loop.run`."""
    from dreamgrid.train.loop import run as run_epoch

    return run_epoch(spec)
