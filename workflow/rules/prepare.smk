# Every model a job loads is prepared here once, before any GPU work; these are local rules
# (Snakefile), so on a cluster they run on the submitting node, and every other job runs with
# the hub libraries' offline switches set (dreamgrid.offline).
# One job per base model: results/models/base, or base-<name> for each of axes.base_model.
rule prepare_base_model:
    output:
        directory(paths.PREPARED_MODEL),
    log:
        "results/logs/prepare_base_model/{prepared}.log",
    benchmark:
        "results/benchmarks/prepare_base_model/{prepared}.tsv"
    wildcard_constraints:
        prepared=dag.one_of(GRID.prepared_folders),
    conda:
        "../../envs/train.yaml"
    params:
        source=GRID.get_base_source,
        kind=GRID.get_prepare_kind,
        allow_pickle=config["allow_pickle"],
        impl=versions.MODELS,
    script:
        "../scripts/prepare_model.py"


rule prepare_caption_model:
    output:
        directory(paths.CAPTION_MODEL_DIR),
    log:
        "results/logs/prepare_caption_model/captioner.log",
    benchmark:
        "results/benchmarks/prepare_caption_model/captioner.tsv"
    conda:
        "../../envs/caption.yaml"
    params:
        source=config["caption"]["model"],
        kind="blip",
        allow_pickle=False,
        impl=versions.MODELS,
    script:
        "../scripts/prepare_model.py"


rule check_lora_targets:
    input:
        base=GRID.get_base_dir,
    output:
        paths.LORA_TARGETS_OF,
    log:
        "results/logs/check_lora_targets/{targets}.log",
    benchmark:
        "results/benchmarks/check_lora_targets/{targets}.tsv"
    wildcard_constraints:
        targets=dag.one_of(GRID.lora_target_files),
    conda:
        "../../envs/train.yaml"
    params:
        targets=GRID.get_lora_targets,
        impl=versions.MODELS,
    script:
        "../scripts/check_lora_targets.py"


rule prepare_lavis_model:
    output:
        directory(paths.LAVIS_MODEL_DIR),
    log:
        "results/logs/prepare_lavis_model/lavis.log",
    benchmark:
        "results/benchmarks/prepare_lavis_model/lavis.tsv"
    conda:
        "../../envs/caption.yaml"
    params:
        python=config["caption"]["lavis_python"],
        model=config["caption"]["lavis_model"],
        impl=versions.MODELS,
    script:
        "../scripts/prepare_lavis_model.py"


rule prepare_clip_model:
    output:
        directory(paths.CLIP_MODEL_DIR),
    log:
        "results/logs/prepare_clip_model/clip.log",
    benchmark:
        "results/benchmarks/prepare_clip_model/clip.tsv"
    conda:
        "../../envs/train.yaml"
    params:
        source=config["score"]["clip_model"],
        kind="clip",
        allow_pickle=False,
        impl=versions.MODELS,
    script:
        "../scripts/prepare_model.py"


# DeepFace's weights for one (model, detector), in score.deepface_home, shared by all jobs.
rule prepare_face_models:
    output:
        GRID.face_record_pattern,
    log:
        "results/logs/prepare_face_models/{model}-{detector}.log",
    benchmark:
        "results/benchmarks/prepare_face_models/{model}-{detector}.tsv"
    conda:
        "../../envs/score.yaml"
    params:
        impl=versions.MODELS,
    script:
        "../scripts/prepare_face_models.py"
