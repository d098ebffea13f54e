rule generate_class_images:
    input:
        base=dag.BASE_MODEL_DIR,
        preflight=dag.after_preflight(),
    output:
        directory(dag.REG_IMAGES.format(reg="generated")),
    params:
        settings=GRID.class_image_params(),
        impl=versions.REGULARIZATION,
    log:
        "results/logs/generate_class_images/generated.log",
    benchmark:
        "results/benchmarks/generate_class_images/generated.tsv"
    resources:
        gpu=1,
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/generate_class_images.py"


rule prepare_ground_truth:
    input:
        photos=config["subject"]["ground_truth"] or [],
        preflight=dag.after_preflight(),
    output:
        directory(dag.REG_IMAGES.format(reg="ground_truth")),
    params:
        resolution=config["training"]["resolution"],
        impl=versions.REGULARIZATION,
    log:
        "results/logs/prepare_ground_truth/ground_truth.log",
    benchmark:
        "results/benchmarks/prepare_ground_truth/ground_truth.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/prepare_ground_truth.py"
