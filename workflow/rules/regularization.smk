rule generate_class_images:
    input:
        base=paths.BASE_MODEL_DIR,
    output:
        directory(paths.REG_IMAGES.format(reg="generated")),
    log:
        "results/logs/generate_class_images/generated.log",
    benchmark:
        "results/benchmarks/generate_class_images/generated.tsv"
    conda:
        "../../envs/train.yaml"
    resources:
        gpu=1,
    params:
        settings=GRID.class_image_params,
        impl=versions.REGULARIZATION,
    script:
        "../scripts/generate_class_images.py"


rule prepare_ground_truth:
    input:
        photos=config["subject"]["ground_truth"] or [],
    output:
        directory(paths.REG_IMAGES.format(reg="ground_truth")),
    log:
        "results/logs/prepare_ground_truth/ground_truth.log",
    benchmark:
        "results/benchmarks/prepare_ground_truth/ground_truth.tsv"
    conda:
        "../../envs/train.yaml"
    params:
        fit=GRID.ground_truth_params,
        impl=versions.REGULARIZATION,
    script:
        "../scripts/prepare_ground_truth.py"
