rule prepare_base_model:
    output:
        directory(dag.BASE_MODEL_DIR),
    log:
        "results/logs/prepare_base_model/base.log",
    benchmark:
        "results/benchmarks/prepare_base_model/base.tsv"
    conda:
        "../../envs/train.yaml"
    params:
        source=config["base_model"],
        allow_pickle=config["allow_pickle"],
        impl=versions.MODELS,
    script:
        "../scripts/prepare_model.py"


rule prepare_caption_model:
    output:
        directory(dag.CAPTION_MODEL_DIR),
    log:
        "results/logs/prepare_caption_model/captioner.log",
    benchmark:
        "results/benchmarks/prepare_caption_model/captioner.tsv"
    conda:
        "../../envs/caption.yaml"
    params:
        source=config["caption"]["model"],
        allow_pickle=False,
        impl=versions.MODELS,
    script:
        "../scripts/prepare_model.py"


rule check_lora_targets:
    input:
        base=dag.BASE_MODEL_DIR,
    output:
        dag.LORA_TARGETS,
    log:
        "results/logs/check_lora_targets/lora_targets.log",
    benchmark:
        "results/benchmarks/check_lora_targets/lora_targets.tsv"
    conda:
        "../../envs/train.yaml"
    params:
        targets=config["lora"]["target_modules"],
        impl=versions.MODELS,
    script:
        "../scripts/check_lora_targets.py"
