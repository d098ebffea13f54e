rule render_candidates:
    input:
        base=paths.BASE_MODEL_DIR,
    output:
        renders=directory(paths.CANDIDATE_GROUP),
        table=paths.CANDIDATE_GROUP_TABLE,
    log:
        "results/logs/render_candidates/group-{group}.log",
    benchmark:
        "results/benchmarks/render_candidates/group-{group}.tsv"
    wildcard_constraints:
        group="[0-9]+",
    conda:
        "../../envs/train.yaml"
    resources:
        gpu=1,
    params:
        names=GRID.get_candidate_group_names,
        class_word=config["subject"]["class_word"],
        settings=GRID.candidate_settings,
        impl=versions.SAMPLE,
    script:
        "../scripts/render_candidates.py"


checkpoint rank_candidates:
    input:
        renders=GRID.candidate_group_dirs,
        references=GRID.primary_references,
    output:
        report(
            paths.RANKING,
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
        ranking=GRID.ranking_params,
        folders=GRID.candidate_render_dirs,
        cache=paths.FACE_CACHE,
        impl=[versions.SCORE, versions.FINDER],
    script:
        "../scripts/rank_candidates.py"


rule plot_candidates:
    input:
        ranking=paths.RANKING,
        renders=GRID.candidate_group_dirs,
    output:
        report(
            paths.CANDIDATE_SHEET,
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
        names=list(GRID.candidate_names.values()),
        folders=GRID.candidate_render_dirs,
        top=config["token_finder"]["top"],
        impl=versions.PLOTS,
    script:
        "../scripts/plot_candidates.py"


rule render_ranking_page:
    input:
        paths.RANKING,
    output:
        report(
            paths.RANKING_PAGE,
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
