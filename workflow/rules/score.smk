rule embed_references:
    input:
        references=config["subject"]["references"],
    output:
        GRID.references_file(),
    log:
        GRID.log_for("embed_references"),
    benchmark:
        GRID.benchmark_for("embed_references")
    conda:
        "../../envs/score.yaml"
    params:
        faces=GRID.face_params(),
        impl=versions.SCORE,
    script:
        "../scripts/embed_references.py"


rule score_faces:
    input:
        renders=dag.RENDERS,
        table=dag.RENDERS_TABLE,
        checkpoint_meta=dag.CHECKPOINT_META,
        references=GRID.references_file(),
    output:
        scores=dag.SCORES,
        meta=dag.SCORES_META,
    log:
        "results/logs/score_faces/{arm}/epoch-{epoch}.log",
    benchmark:
        "results/benchmarks/score_faces/{arm}/epoch-{epoch}.tsv"
    conda:
        "../../envs/score.yaml"
    params:
        faces=GRID.face_params(),
        impl=versions.SCORE,
    script:
        "../scripts/score_faces.py"
