import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import aggregate, gpu_time, logs

statistics = snakemake.params.statistics
with logs.snakemake_job(snakemake):
    aggregate.aggregate_scores(
        score_files=[Path(p) for p in snakemake.input.scores],
        thresholds=snakemake.params.thresholds,
        best_margin=statistics["best_margin"],
        best_margin_relative=statistics["best_margin_relative"],
        min_faces=statistics["min_faces"],
        out_scores=Path(snakemake.output.scores),
        out_summary=Path(snakemake.output.summary),
        out_markdown=Path(snakemake.output.markdown),
        demo=snakemake.params.demo,
        baseline=Path(snakemake.input.baseline),
        arms=snakemake.params.arms,
        out_comparisons=Path(snakemake.output.comparisons),
        out_effects=Path(snakemake.output.effects),
        out_verdict=Path(snakemake.output.verdict),
        out_power=Path(snakemake.output.power),
        confidence=statistics["confidence"],
        resamples=statistics["bootstrap_resamples"],
        seed=statistics["seed"],
        primary_model=snakemake.params.model,
        prompt_sets=snakemake.params.prompt_sets,
        out_flexibility=Path(snakemake.output.flexibility),
        clip_files=[Path(p) for p in snakemake.input.clip],
        tokens=snakemake.params.tokens,
        ranking=Path(snakemake.input.ranking[0]) if snakemake.input.ranking else None,
        warnings=snakemake.params.warnings,
        memorization=Path(snakemake.input.memorization),
        decisions=Path(snakemake.input.decisions[0]) if snakemake.input.decisions else None,
    )
    gpu_time.write_measured(snakemake.params.budget, snakemake.output.gpu_time)
