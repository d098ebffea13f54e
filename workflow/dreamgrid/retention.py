"""Which epoch checkpoints stay on disk (``training.keep_checkpoints``).

``all`` keeps them; ``none`` is Snakemake's ``temp()`` on the checkpoint output (deleted once
its renders exist); ``best`` is :func:`keep_best_checkpoint`, run once aggregation has flagged each arm's
best epoch. Snakemake does not regenerate a missing intermediate file while everything
downstream of it is up to date, so a removed checkpoint is not retrained unless a job needs it
again (e.g. more renders), and then deterministically from the base model. Only files at the
workflow's own checkpoint paths are ever removed; their ``.json`` and ``.loss.csv`` stay.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path
from dreamgrid.prompts import MAIN_PROMPT_SET

logger = logging.getLogger(__name__)

KEEP = ("all", "best", "none")


def best_epochs(summary: Path, arm: str | list[str], model: str | None = None) -> set[int]:
    """Epochs flagged ``best`` for ``arm`` in summary.csv (rows of ``model`` and of prompt
    set ``main`` where it has those columns). A list of arms (those that render one shared
    training with different ``sample.*`` settings): every epoch best for any of them."""
    import pandas as pd

    table = pd.read_csv(summary)
    missing = {"arm", "epoch", "best"} - set(table.columns)
    if missing:
        raise SpecError(f"{summary}: no column(s) {sorted(missing)}; rerun aggregate_scores.")
    arms = [arm] if isinstance(arm, str) else list(arm)
    rows = table[table["arm"].astype(str).isin(arms)]
    if model is not None and "model" in rows.columns:
        rows = rows[rows["model"] == model]
    if "prompt_set" in rows.columns:  # the best epoch is read from the likeness prompt
        rows = rows[rows["prompt_set"] == MAIN_PROMPT_SET]
    flags = rows["best"].astype(str).str.lower().isin(("true", "1"))
    return {int(e) for e in rows.loc[flags, "epoch"]}


def keep_best_checkpoint(
    summary: Path,
    arm: str | list[str],
    checkpoints: dict[int, Path],
    out: Path,
    model: str | None = None,
) -> dict[str, Any]:
    """Delete the arm's checkpoints except its best epoch's; record what was done in ``out``.

    Args:
        summary: summary.csv with ``arm, epoch, best`` (and optionally ``model``).
        arm: the arm id, or the arms that share its training (each one's best is kept).
        checkpoints: epoch -> checkpoint path (the workflow's paths for this arm).
        out: JSON record (``kept``, ``removed`` epochs; ``missing``: already gone).
        model: the primary face model, when the summary has one row per model.

    Returns:
        The record written to ``out``.
    """
    best = best_epochs(summary, arm, model)
    if not best:
        logger.warning("%s: no best epoch in %s; keeping every checkpoint.", arm, summary)
        best = set(checkpoints)
    record: dict[str, Any] = {"arm": arm, "kept": [], "removed": [], "missing": []}
    for epoch, path in sorted(checkpoints.items()):
        path = Path(path)
        if epoch in best:
            record["kept" if path.exists() else "missing"].append(epoch)
            if not path.exists():
                logger.warning(
                    "%s: best epoch %d's checkpoint %s was removed earlier; rerun its "
                    "train job (snakemake --forcerun) to get it back.",
                    arm,
                    epoch,
                    path,
                )
        elif path.exists():
            path.unlink()
            record["removed"].append(epoch)
            logger.info("%s: removed %s (not the best epoch)", arm, path)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record


def release_resume_state(state: Path, epochs: list[Path], out: Path) -> dict[str, Any]:
    """Delete an arm's resume state once its last planned epoch is trained
    (``training.keep_resume_state: false``), with any temporary copy a killed write left.

    Runs once ``epochs`` (the checkpoint JSONs of every planned epoch, in order) all exist,
    so no planned job needs the state any more; an epoch added later replays the earlier
    ones from the base model instead (the same checkpoint, more time).

    Returns:
        What ``out`` records: the state's path, the epoch it held, and the bytes freed.
    """
    import glob
    import shutil

    last = json.loads(Path(epochs[-1]).read_text())["epoch"]
    freed = 0
    if state.exists():
        freed += state.stat().st_size
        state.unlink()
    for stale in state.parent.glob(f".{glob.escape(state.name)}.*"):
        freed += sum(p.stat().st_size for p in stale.rglob("*") if p.is_file())
        shutil.rmtree(stale, ignore_errors=True)
    record = {"state": str(state), "epoch": last, "bytes_freed": freed}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    logger.info("deleted %s after epoch %d: %.2f GB freed", state, last, freed / 1e9)
    return record
