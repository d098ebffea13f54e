rule reference_baseline:
    input:
        embeddings=GRID.primary_references,
        references=config["subject"]["references"],
        training=config["subject"]["train_images"],
    output:
        report(
            GRID.reference_baseline_file,
            caption="../report/baseline.rst",
            category="2. Tables",
            labels={"table": "real-photos baseline"},
        ),
    log:
        "results/logs/reference_baseline/all.log",
    benchmark:
        "results/benchmarks/reference_baseline/all.tsv"
    conda:
        "../../envs/score.yaml"
    params:
        metric=config["score"]["metric"],
        multiple_faces=config["score"]["multiple_faces"],
        deepface_home=config["score"]["deepface_home"],
        impl=versions.AGGREGATE,
    script:
        "../scripts/reference_baseline.py"


rule aggregate_scores:
    input:
        scores=GRID.get_checkpoints(paths.SCORES),
        baseline=GRID.reference_baseline_file,
        clip=GRID.get_clip_files,
        ranking=GRID.ranking_files,
        memorization=paths.MEMORIZATION,
        decisions=[paths.SEARCH_DECISIONS] if GRID.adaptive else [],
    output:
        scores=report(
            paths.SCORES_TABLE,
            caption="../report/scores.rst",
            category="2. Tables",
            labels={"table": "all scores"},
        ),
        summary=report(
            paths.SUMMARY,
            caption="../report/summary.rst",
            category="2. Tables",
            labels={"table": "summary"},
        ),
        markdown=report(
            paths.SUMMARY_MD,
            caption="../report/summary_md.rst",
            category="2. Tables",
            labels={"table": "verdict and summary (text)"},
        ),
        comparisons=report(
            paths.COMPARISONS,
            caption="../report/comparisons.rst",
            category="2. Tables",
            labels={"table": "paired comparisons"},
        ),
        effects=report(
            paths.EFFECTS,
            caption="../report/effects.rst",
            category="2. Tables",
            labels={"table": "factorial effects"},
        ),
        verdict=report(
            paths.VERDICT,
            caption="../report/verdict.rst",
            category="2. Tables",
            labels={"table": "verdict (claims and warnings, JSON)"},
        ),
        power=report(
            paths.POWER,
            caption="../report/power.rst",
            category="2. Tables",
            labels={"table": "power of this run"},
        ),
        flexibility=report(
            paths.FLEXIBILITY,
            caption="../report/flexibility.rst",
            category="2. Tables",
            labels={"table": "likeness, class bleed, prompt following"},
        ),
        gpu_time=report(
            paths.GPU_TIME,
            caption="../report/gpu_time.rst",
            category="2. Tables",
            labels={"table": "GPU time (measured)"},
        ),
    log:
        "results/logs/aggregate_scores/all.log",
    benchmark:
        "results/benchmarks/aggregate_scores/all.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        thresholds=config["score"]["thresholds"],
        demo=GRID.demo,
        arms=GRID.arm_axes,
        statistics=GRID.statistics_params,
        model=config["score"]["model"],
        prompt_sets=GRID.prompt_sets,
        tokens=GRID.tokens,
        warnings=dreamgrid_config.threshold_warnings(config),
        budget=GRID.get_budget_plan,
        impl=versions.AGGREGATE,
    script:
        "../scripts/aggregate_scores.py"


rule plot_histogram:
    input:
        scores=paths.SCORES,
        baseline=GRID.reference_baseline_file,
    output:
        report(
            paths.HISTOGRAM,
            caption="../report/histogram.rst",
            category="4. Histograms",
            subcategory="{arm}",
            labels={"arm": "{arm}", "epoch": "{epoch}", "prompt set": "{prompt_set}"},
        ),
    log:
        "results/logs/plot_histogram/{arm}/epoch-{epoch}/{prompt_set}.log",
    benchmark:
        "results/benchmarks/plot_histogram/{arm}/epoch-{epoch}/{prompt_set}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        thresholds=config["score"]["thresholds"],
        model=config["score"]["model"],
        impl=versions.PLOTS,
    script:
        "../scripts/plot_histogram.py"


rule plot_arm_histograms:
    input:
        scores=GRID.get_arm_scores,
        baseline=GRID.reference_baseline_file,
    output:
        report(
            paths.ARM_HISTOGRAMS,
            caption="../report/arm_histograms.rst",
            category="4. Histograms",
            subcategory="{arm}",
            labels={"arm": "{arm}", "epoch": "all", "prompt set": "{prompt_set}"},
        ),
    log:
        "results/logs/plot_arm_histograms/{arm}/{prompt_set}.log",
    benchmark:
        "results/benchmarks/plot_arm_histograms/{arm}/{prompt_set}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        thresholds=config["score"]["thresholds"],
        model=config["score"]["model"],
        impl=versions.PLOTS,
    script:
        "../scripts/plot_arm_histograms.py"


rule plot_curves:
    input:
        summary=paths.SUMMARY,
        baseline=GRID.reference_baseline_file,
    output:
        by_epoch=report(
            paths.CURVES_EPOCH,
            caption="../report/curves.rst",
            category="3. Curves",
            labels={"prompt set": "{prompt_set}", "x": "epoch"},
        ),
        by_steps=report(
            paths.CURVES_STEPS,
            caption="../report/curves.rst",
            category="3. Curves",
            labels={"prompt set": "{prompt_set}", "x": "training steps"},
        ),
    log:
        "results/logs/plot_curves/{prompt_set}.log",
    benchmark:
        "results/benchmarks/plot_curves/{prompt_set}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        model=config["score"]["model"],
        confidence=config["report"]["confidence"],
        impl=versions.PLOTS,
    script:
        "../scripts/plot_curves.py"


rule plot_chosen_histograms:
    input:
        scores=paths.SCORES_TABLE,
        summary=paths.SUMMARY,
        baseline=GRID.reference_baseline_file,
    output:
        report(
            paths.CHOSEN_HISTOGRAMS,
            caption="../report/chosen_histograms.rst",
            category="4. Histograms",
            labels={"prompt set": "{prompt_set}"},
        ),
    log:
        "results/logs/plot_chosen_histograms/{prompt_set}.log",
    benchmark:
        "results/benchmarks/plot_chosen_histograms/{prompt_set}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        thresholds=config["score"]["thresholds"],
        model=config["score"]["model"],
        impl=versions.PLOTS,
    script:
        "../scripts/plot_chosen_histograms.py"


rule plot_contact_sheet:
    input:
        scores=paths.SCORES,
        renders=GRID.get_render_dirs,
    output:
        report(
            paths.CONTACT_SHEET,
            caption="../report/contact_sheet.rst",
            category="5. Contact sheets",
            subcategory="{arm}",
            labels={"arm": "{arm}", "epoch": "{epoch}", "prompt set": "{prompt_set}"},
        ),
    log:
        "results/logs/plot_contact_sheet/{arm}/epoch-{epoch}/{prompt_set}.log",
    benchmark:
        "results/benchmarks/plot_contact_sheet/{arm}/epoch-{epoch}/{prompt_set}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        per_row=config["report"]["contact_sheet_renders"],
        model=config["score"]["model"],
        impl=versions.PLOTS,
    script:
        "../scripts/plot_contact_sheet.py"


rule plot_tradeoff:
    input:
        paths.FLEXIBILITY,
    output:
        report(
            paths.TRADEOFF,
            caption="../report/tradeoff.rst",
            category="3. Curves",
            labels={"x": "likeness vs bleed and prompt following"},
        ),
    log:
        "results/logs/plot_tradeoff/all.log",
    benchmark:
        "results/benchmarks/plot_tradeoff/all.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        model=config["score"]["model"],
        impl=versions.PLOTS,
    script:
        "../scripts/plot_tradeoff.py"


rule render_report_pages:
    input:
        markdown=paths.SUMMARY_MD,
        summary=paths.SUMMARY,
        comparisons=paths.COMPARISONS,
        effects=paths.EFFECTS,
        flexibility=paths.FLEXIBILITY,
        description=paths.WORKFLOW_DESCRIPTION,
    output:
        verdict=report(
            paths.VERDICT_PAGE,
            caption="../report/verdict_page.rst",
            category="1. Verdict and statistics",
            labels={"page": "1. verdict and summary"},
        ),
        summary=report(
            paths.TABLE_PAGES["summary"],
            caption="../report/summary.rst",
            category="1. Verdict and statistics",
            labels={"page": "2. per checkpoint"},
        ),
        comparisons=report(
            paths.TABLE_PAGES["comparisons"],
            caption="../report/comparisons.rst",
            category="1. Verdict and statistics",
            labels={"page": "3. paired comparisons"},
        ),
        effects=report(
            paths.TABLE_PAGES["effects"],
            caption="../report/effects.rst",
            category="1. Verdict and statistics",
            labels={"page": "4. factorial effects"},
        ),
        flexibility=report(
            paths.TABLE_PAGES["flexibility"],
            caption="../report/flexibility.rst",
            category="1. Verdict and statistics",
            labels={"page": "5. likeness, bleed, prompt following"},
        ),
        landing=paths.LANDING_PAGE,
    log:
        "results/logs/render_report_pages/all.log",
    benchmark:
        "results/benchmarks/render_report_pages/all.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        impl=versions.PLOTS,
    script:
        "../scripts/render_report_pages.py"
