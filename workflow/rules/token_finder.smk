# One finder per base model ({finder}: token_finder, or token_finder/<name> on the axis).
rule render_candidates:
    input:
        base=GRID.get_base_dir,
    output:
        renders=directory(paths.CANDIDATE_GROUP_OF),
        table=paths.CANDIDATE_GROUP_TABLE_OF,
    log:
        "results/logs/render_candidates/{finder}/group-{group}.log",
    benchmark:
        "results/benchmarks/render_candidates/{finder}/group-{group}.tsv"
    wildcard_constraints:
        group="[0-9]+",
        finder=dag.one_of(GRID.finder_folders),
    conda:
        "../../envs/train.yaml"
    resources:
        gpu=1,
    params:
        names=GRID.get_candidate_group_names,
        class_word=config["subject"]["class_word"],
        settings=GRID.get_candidate_settings,
        family=GRID.get_family,
        impl=versions.SAMPLE,
    script:
        "../scripts/render_candidates.py"


checkpoint rank_candidates:
    input:
        renders=GRID.get_candidate_group_dirs,
        references=GRID.primary_references,
    output:
        report(
            paths.RANKING_OF,
            caption="../report/ranking.rst",
            category="7. Token finder",
            labels={"table": "look-alike ranking", "finder": "{finder}"},
        ),
    log:
        "results/logs/rank_candidates/{finder}.log",
    benchmark:
        "results/benchmarks/rank_candidates/{finder}.tsv"
    wildcard_constraints:
        finder=dag.one_of(GRID.finder_folders),
    conda:
        "../../envs/score.yaml"
    threads: config["score"]["threads"]
    params:
        ranking=GRID.ranking_params,
        folders=GRID.get_candidate_render_dirs,
        cache=paths.FACE_CACHE,
        impl=[versions.SCORE, versions.FINDER],
    script:
        "../scripts/rank_candidates.py"


rule plot_candidates:
    input:
        ranking=paths.RANKING_OF,
        renders=GRID.get_candidate_group_dirs,
    output:
        report(
            paths.CANDIDATE_SHEET_OF,
            caption="../report/candidates.rst",
            category="7. Token finder",
            labels={"figure": "top candidates", "finder": "{finder}"},
        ),
    log:
        "results/logs/plot_candidates/{finder}.log",
    benchmark:
        "results/benchmarks/plot_candidates/{finder}.tsv"
    wildcard_constraints:
        finder=dag.one_of(GRID.finder_folders),
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        names=list(GRID.candidate_names.values()),
        folders=GRID.get_candidate_render_dirs,
        top=config["token_finder"]["top"],
        impl=versions.PLOTS,
    script:
        "../scripts/plot_candidates.py"


rule render_ranking_page:
    input:
        GRID.get_ranking_of_page,
    output:
        report(
            paths.RANKING_PAGE_OF,
            caption="../report/ranking.rst",
            category="1. Verdict and statistics",
            labels={"page": "6. token finder ranking", "ranking": "{page}"},
        ),
    log:
        "results/logs/render_ranking_page/{page}.log",
    benchmark:
        "results/benchmarks/render_ranking_page/{page}.tsv"
    wildcard_constraints:
        page=dag.one_of(GRID.ranking_pages),
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        impl=versions.PLOTS,
    script:
        "../scripts/render_ranking_page.py"
