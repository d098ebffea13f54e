rule sample_checkpoint:
    input:
        GRID.wait_for_token,
        base=dag.BASE_MODEL_DIR,
        checkpoint=dag.CHECKPOINT,
    output:
        renders=directory(dag.RENDER_SHARD),
        table=dag.RENDER_SHARD_TABLE,
    log:
        "results/logs/sample_checkpoint/{arm}/epoch-{epoch}/{prompt_set}/shard-{shard}.log",
    benchmark:
        "results/benchmarks/sample_checkpoint/{arm}/epoch-{epoch}/{prompt_set}/shard-{shard}.tsv"
    wildcard_constraints:
        shard="[0-9]+",
    conda:
        "../../envs/train.yaml"
    resources:
        gpu=1,
    params:
        token=lambda wildcards: GRID.arm_params(wildcards.arm)["token"],
        class_word=config["subject"]["class_word"],
        settings=GRID.shard_settings,
        first=GRID.shard_first,
        impl=versions.SAMPLE,
    script:
        "../scripts/sample_checkpoint.py"
