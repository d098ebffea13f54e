rule embed_references:
    input:
        references=config["subject"]["references"],
        weights=GRID.face_record,
    output:
        dag.REFERENCES,
    log:
        "results/logs/embed_references/{model}-{detector}.log",
    benchmark:
        "results/benchmarks/embed_references/{model}-{detector}.tsv"
    wildcard_constraints:
        model=GRID.model_pattern(),
        detector=config["score"]["detector"],
    conda:
        "../../envs/score.yaml"
    params:
        faces=GRID.embed_params,
        impl=versions.SCORE,
    script:
        "../scripts/embed_references.py"


rule embed_renders:
    input:
        renders=dag.RENDER_SHARD,
        table=dag.RENDER_SHARD_TABLE,
        weights=GRID.face_record,
    output:
        dag.FACES_SHARD,
    log:
        "results/logs/embed_renders/{arm}/epoch-{epoch}/{prompt_set}/{model}-{detector}/shard-{shard}.log",
    benchmark:
        "results/benchmarks/embed_renders/{arm}/epoch-{epoch}/{prompt_set}/{model}-{detector}/shard-{shard}.tsv"
    wildcard_constraints:
        model=GRID.model_pattern(),
        detector=config["score"]["detector"],
        shard="[0-9]+",
    conda:
        "../../envs/score.yaml"
    threads: config["score"]["threads"]
    params:
        faces=GRID.embed_params,
        cache=dag.FACE_CACHE,
        impl=versions.SCORE,
    script:
        "../scripts/embed_renders.py"


rule score_faces:
    input:
        unpack(GRID.score_inputs),
    output:
        scores=dag.SCORES,
        meta=dag.SCORES_META,
    log:
        "results/logs/score_faces/{arm}/epoch-{epoch}/{prompt_set}.log",
    benchmark:
        "results/benchmarks/score_faces/{arm}/epoch-{epoch}/{prompt_set}.tsv"
    conda:
        "../../envs/score.yaml"
    params:
        faces=GRID.scoring_params(),
        impl=versions.SCORE,
    script:
        "../scripts/score_faces.py"


rule clip_score:
    input:
        tables=lambda wildcards: GRID.score_inputs(wildcards)["tables"],
        renders=GRID.render_dirs,
        model=GRID.clip_model_input(),
    output:
        dag.CLIP_SCORES,
    log:
        "results/logs/clip_score/{arm}/epoch-{epoch}/{prompt_set}.log",
    benchmark:
        "results/benchmarks/clip_score/{arm}/epoch-{epoch}/{prompt_set}.tsv"
    conda:
        "../../envs/train.yaml"
    resources:
        gpu=1,
    params:
        impl=versions.SCORE,
    script:
        "../scripts/clip_score.py"


rule memorization:
    input:
        training=config["subject"]["train_images"],
        references=GRID.primary_references(),
        faces=GRID.memorization_faces(),
    output:
        renders=dag.MEMORIZATION_RENDERS,
        summary=report(
            dag.MEMORIZATION,
            caption="../report/memorization.rst",
            category="2. Tables",
            labels={"table": "memorization (renders against training photos)"},
        ),
        pairs=dag.MEMORIZATION_PAIRS,
    log:
        "results/logs/memorization/all.log",
    benchmark:
        "results/benchmarks/memorization/all.tsv"
    conda:
        "../../envs/score.yaml"
    params:
        checkpoints=GRID.memorization_checkpoints(),
        metric=config["score"]["metric"],
        multiple_faces=config["score"]["multiple_faces"],
        deepface_home=config["score"]["deepface_home"],
        impl=versions.MEMORIZATION,
    script:
        "../scripts/memorization.py"
