rule train_dreambooth:
    input:
        unpack(GRID.train_inputs),
    output:
        checkpoint=dag.CHECKPOINT,
        meta=dag.CHECKPOINT_META,
        state=dag.OPTIMIZER_STATE,
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
        training=GRID.training_params(),
        class_word=config["subject"]["class_word"],
        impl=versions.TRAIN,
    script:
        "../scripts/train_dreambooth.py"
