rule aggregate_scores:
    input:
        GRID.checkpoints(dag.SCORES),
    output:
        scores=report(
            dag.SCORES_TABLE,
            caption="../report/scores.rst",
            category="Tables",
            labels={"table": "all scores"},
        ),
        summary=report(
            dag.SUMMARY,
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary"},
        ),
        markdown=dag.SUMMARY_MD,
    log:
        "results/logs/aggregate_scores/all.log",
    benchmark:
        "results/benchmarks/aggregate_scores/all.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        thresholds=config["score"]["thresholds"],
        best_within=config["score"]["best_within"],
        demo=GRID.demo,
        impl=versions.AGGREGATE,
    script:
        "../scripts/aggregate_scores.py"


rule plot_histogram:
    input:
        dag.SCORES,
    output:
        report(
            dag.HISTOGRAM,
            caption="../report/histogram.rst",
            category="Histograms",
            subcategory="{arm}",
            labels={"arm": "{arm}", "epoch": "{epoch}"},
        ),
    log:
        "results/logs/plot_histogram/{arm}/epoch-{epoch}.log",
    benchmark:
        "results/benchmarks/plot_histogram/{arm}/epoch-{epoch}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        thresholds=config["score"]["thresholds"],
        impl=versions.PLOTS,
    script:
        "../scripts/plot_histogram.py"
