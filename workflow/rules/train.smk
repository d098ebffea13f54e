rule train_dreambooth:
    input:
        unpack(GRID.train_inputs),
    output:
        checkpoint=dag.CHECKPOINT,
        meta=dag.CHECKPOINT_META,
        state=dag.OPTIMIZER_STATE,
    params:
        arm=lambda wildcards: GRID.arm_params(wildcards.arm),
        training=GRID.training_params(),
        class_word=config["subject"]["class_word"],
        impl=versions.TRAIN,
    log:
        "results/logs/train_dreambooth/{arm}/epoch-{epoch}.log",
    benchmark:
        "results/benchmarks/train_dreambooth/{arm}/epoch-{epoch}.tsv"
    resources:
        gpu=1,
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train_dreambooth.py"
