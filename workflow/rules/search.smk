# The adaptive grid (search.method: successive_halving). A look compares the arms still
# training at its epoch; the plan reads its table (GRID.arm_epochs) to train only the arms
# that continue. Neither rule uses a GPU (aggregation-like jobs, run anywhere on a cluster).
checkpoint decide_look:
    input:
        scores=GRID.get_look_scores,
        previous=GRID.get_previous_look,
    output:
        paths.SEARCH_LOOK,
    log:
        "results/logs/decide_look/epoch-{epoch}.log",
    benchmark:
        "results/benchmarks/decide_look/epoch-{epoch}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        active=GRID.get_look_active,
        search=GRID.search_params,
        impl=versions.SEARCH,
    script:
        "../scripts/decide_look.py"


rule collect_decisions:
    input:
        looks=GRID.look_files,
    output:
        report(
            paths.SEARCH_DECISIONS,
            caption="../report/search_decisions.rst",
            category="2. Tables",
            labels={"table": "adaptive search decisions"},
        ),
    log:
        "results/logs/collect_decisions/all.log",
    benchmark:
        "results/benchmarks/collect_decisions/all.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        impl=versions.SEARCH,
    script:
        "../scripts/collect_decisions.py"
