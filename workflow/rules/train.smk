rule train_dreambooth:
    input:
        unpack(GRID.train_inputs),
    output:
        # keep_checkpoints none: Snakemake deletes each checkpoint once its renders exist.
        checkpoint=(
            temp(dag.CHECKPOINT) if GRID.keep_checkpoints == "none" else dag.CHECKPOINT
        ),
        meta=dag.CHECKPOINT_META,
        loss=dag.LOSS_LOG,
    log:
        "results/logs/train_dreambooth/{arm}/epoch-{epoch}.log",
    benchmark:
        "results/benchmarks/train_dreambooth/{arm}/epoch-{epoch}.tsv"
    conda:
        "../../envs/train.yaml"
    resources:
        gpu=1,
    params:
        arm=lambda wildcards: GRID.arm_params(wildcards.arm),
        state=lambda wildcards: dag.RESUME_STATE.format(arm=wildcards.arm),
        passes=lambda wildcards: GRID.train_passes(wildcards.arm),
        cache_dir=dag.LATENT_CACHE,
        method=lambda wildcards: GRID.method_params(wildcards.arm),
        training=GRID.training_params(),
        class_word=config["subject"]["class_word"],
        impl=versions.TRAIN,
    script:
        "../scripts/train_dreambooth.py"


rule release_resume_state:
    input:
        metas=GRID.arm_checkpoint_metas,
    output:
        dag.STATE_RELEASED,
    log:
        "results/logs/release_resume_state/{arm}.log",
    benchmark:
        "results/benchmarks/release_resume_state/{arm}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        state=lambda wildcards: dag.RESUME_STATE.format(arm=wildcards.arm),
        impl=versions.TRAIN,
    script:
        "../scripts/release_resume_state.py"


rule keep_best_checkpoint:
    input:
        summary=dag.SUMMARY,
    output:
        dag.CHECKPOINTS_KEPT,
    log:
        "results/logs/keep_best_checkpoint/{arm}.log",
    benchmark:
        "results/benchmarks/keep_best_checkpoint/{arm}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        checkpoints=lambda wildcards: GRID.arm_checkpoints(wildcards.arm),
        recipe=lambda wildcards: GRID.recipe(wildcards.arm),
        model=config["score"]["model"],
        impl=versions.TRAIN,
    script:
        "../scripts/keep_best_checkpoint.py"


rule plot_loss_curve:
    input:
        losses=GRID.arm_loss_logs,
    output:
        report(
            dag.LOSS_CURVE,
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
