rule train_dreambooth:
    input:
        unpack(GRID.get_train_inputs),
    output:
        # keep_checkpoints none: Snakemake deletes each checkpoint once its renders exist.
        checkpoint=(
            temp(paths.CHECKPOINT)
            if GRID.keep_checkpoints == "none"
            else paths.CHECKPOINT
        ),
        meta=paths.CHECKPOINT_META,
        loss=paths.LOSS_LOG,
    log:
        "results/logs/train_dreambooth/{arm}/epoch-{epoch}.log",
    benchmark:
        "results/benchmarks/train_dreambooth/{arm}/epoch-{epoch}.tsv"
    conda:
        "../../envs/train.yaml"
    resources:
        gpu=1,
    params:
        arm=GRID.get_arm_params,
        state=GRID.get_resume_state,
        passes=GRID.get_train_passes,
        cache_dir=paths.LATENT_CACHE,
        method=GRID.get_method_params,
        training=GRID.get_training_params,
        class_word=GRID.class_word,
        family=GRID.get_family,
        impl=versions.TRAIN,
    script:
        "../scripts/train_dreambooth.py"


rule release_resume_state:
    input:
        metas=GRID.get_arm_checkpoint_metas,
    output:
        paths.STATE_RELEASED,
    log:
        "results/logs/release_resume_state/{arm}.log",
    benchmark:
        "results/benchmarks/release_resume_state/{arm}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        state=GRID.get_resume_state,
        impl=versions.TRAIN,
    script:
        "../scripts/release_resume_state.py"


rule keep_best_checkpoint:
    input:
        summary=paths.SUMMARY,
        looks=GRID.look_files,
    output:
        paths.CHECKPOINTS_KEPT,
    log:
        "results/logs/keep_best_checkpoint/{arm}.log",
    benchmark:
        "results/benchmarks/keep_best_checkpoint/{arm}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        checkpoints=GRID.get_arm_checkpoints,
        recipe=GRID.get_recipe,
        model=config["score"]["model"],
        impl=versions.TRAIN,
    script:
        "../scripts/keep_best_checkpoint.py"


rule plot_loss_curve:
    input:
        losses=GRID.get_arm_loss_logs,
    output:
        report(
            paths.LOSS_CURVE,
            caption="../report/loss_curve.rst",
            category="3. Curves",
            labels={"arm": "{arm}", "figure": "training loss"},
        ),
    log:
        "results/logs/plot_loss_curve/{arm}.log",
    benchmark:
        "results/benchmarks/plot_loss_curve/{arm}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        demo=GRID.demo,
        impl=versions.TRAIN,
    script:
        "../scripts/plot_loss_curve.py"
