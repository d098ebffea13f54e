rule embed_references:
    input:
        references=config["subject"]["references"],
        weights=GRID.get_face_record,
    output:
        paths.REFERENCES,
    log:
        "results/logs/embed_references/{model}-{detector}.log",
    benchmark:
        "results/benchmarks/embed_references/{model}-{detector}.tsv"
    conda:
        "../../envs/score.yaml"
    params:
        faces=GRID.get_embed_params,
        impl=versions.SCORE,
    script:
        "../scripts/embed_references.py"


rule embed_renders:
    input:
        renders=paths.RENDER_SHARD,
        table=paths.RENDER_SHARD_TABLE,
        weights=GRID.get_face_record,
    output:
        paths.FACES_SHARD,
    log:
        "results/logs/embed_renders/{arm}/epoch-{epoch}/{prompt_set}/{model}-{detector}/shard-{shard}.log",
    benchmark:
        "results/benchmarks/embed_renders/{arm}/epoch-{epoch}/{prompt_set}/{model}-{detector}/shard-{shard}.tsv"
    conda:
        "../../envs/score.yaml"
    threads: config["score"]["threads"]
    params:
        faces=GRID.get_embed_params,
        cache=paths.FACE_CACHE,
        impl=versions.SCORE,
    script:
        "../scripts/embed_renders.py"


rule score_faces:
    input:
        unpack(GRID.get_score_inputs),
    output:
        scores=paths.SCORES,
        meta=paths.SCORES_META,
    log:
        "results/logs/score_faces/{arm}/epoch-{epoch}/{prompt_set}.log",
    benchmark:
        "results/benchmarks/score_faces/{arm}/epoch-{epoch}/{prompt_set}.tsv"
    conda:
        "../../envs/score.yaml"
    params:
        faces=GRID.scoring_params,
        impl=versions.SCORE,
    script:
        "../scripts/score_faces.py"


rule clip_score:
    input:
        tables=GRID.get_render_tables,
        renders=GRID.get_render_dirs,
        model=GRID.clip_model_input,
    output:
        paths.CLIP_SCORES,
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
        references=GRID.primary_references,
        faces=GRID.get_memorization_faces,
        looks=GRID.look_files,
    output:
        renders=paths.MEMORIZATION_RENDERS,
        summary=report(
            paths.MEMORIZATION,
            caption="../report/memorization.rst",
            category="2. Tables",
            labels={"table": "memorization (renders against training photos)"},
        ),
        pairs=paths.MEMORIZATION_PAIRS,
    log:
        "results/logs/memorization/all.log",
    benchmark:
        "results/benchmarks/memorization/all.tsv"
    conda:
        "../../envs/score.yaml"
    params:
        checkpoints=GRID.get_memorization_checkpoints,
        metric=config["score"]["metric"],
        multiple_faces=config["score"]["multiple_faces"],
        deepface_home=config["score"]["deepface_home"],
        impl=versions.MEMORIZATION,
    script:
        "../scripts/memorization.py"
