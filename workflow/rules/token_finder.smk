rule render_candidate:
    input:
        base=dag.BASE_MODEL_DIR,
    output:
        renders=directory(dag.CANDIDATE_RENDERS),
        table=dag.CANDIDATE_TABLE,
    log:
        "results/logs/render_candidate/{candidate}.log",
    benchmark:
        "results/benchmarks/render_candidate/{candidate}.tsv"
    wildcard_constraints:
        candidate=GRID.candidate_pattern(),
    conda:
        "../../envs/train.yaml"
    resources:
        gpu=1,
    params:
        name=lambda wildcards: GRID.candidate_names()[wildcards.candidate],
        class_word=config["subject"]["class_word"],
        settings=GRID.candidate_settings(),
        impl=versions.SAMPLE,
    script:
        "../scripts/render_candidate.py"


checkpoint rank_candidates:
    input:
        renders=GRID.candidate_render_dirs(),
        references=GRID.primary_references(),
    output:
        report(
            dag.RANKING,
            caption="../report/ranking.rst",
            category="7. Token finder",
            labels={"table": "look-alike ranking"},
        ),
    log:
        "results/logs/rank_candidates/all.log",
    benchmark:
        "results/benchmarks/rank_candidates/all.tsv"
    conda:
        "../../envs/score.yaml"
    threads: config["score"]["threads"]
    params:
        ranking=GRID.ranking_params(),
        cache=dag.FACE_CACHE,
        impl=[versions.SCORE, versions.FINDER],
    script:
        "../scripts/rank_candidates.py"


rule plot_candidates:
    input:
        ranking=dag.RANKING,
        renders=GRID.candidate_render_dirs(),
    output:
        report(
            dag.CANDIDATE_SHEET,
            caption="../report/candidates.rst",
            category="7. Token finder",
            labels={"figure": "top candidates"},
        ),
    log:
        "results/logs/plot_candidates/all.log",
    benchmark:
        "results/benchmarks/plot_candidates/all.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        names=list(GRID.candidate_names().values()),
        top=config["token_finder"]["top"],
        impl=versions.PLOTS,
    script:
        "../scripts/plot_candidates.py"


rule render_ranking_page:
    input:
        dag.RANKING,
    output:
        report(
            dag.RANKING_PAGE,
            caption="../report/ranking.rst",
            category="1. Verdict and statistics",
            labels={"page": "6. token finder ranking"},
        ),
    log:
        "results/logs/render_ranking_page/all.log",
    benchmark:
        "results/benchmarks/render_ranking_page/all.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        impl=versions.PLOTS,
    script:
        "../scripts/render_ranking_page.py"
