rule sample_checkpoint:
    input:
        base=dag.BASE_MODEL_DIR,
        checkpoint=dag.CHECKPOINT,
    output:
        renders=directory(dag.RENDERS),
        table=dag.RENDERS_TABLE,
    log:
        "results/logs/sample_checkpoint/{arm}/epoch-{epoch}.log",
    benchmark:
        "results/benchmarks/sample_checkpoint/{arm}/epoch-{epoch}.tsv"
    conda:
        "../../envs/train.yaml"
    resources:
        gpu=1,
    params:
        token=lambda wildcards: GRID.arm_params(wildcards.arm)["token"],
        class_word=config["subject"]["class_word"],
        settings=GRID.section("sample"),
        impl=versions.SAMPLE,
    script:
        "../scripts/sample_checkpoint.py"
