# Per base model: each generates its own arms' class images (generated-<name> on the axis).
rule generate_class_images:
    input:
        base=GRID.get_base_dir,
    output:
        directory(paths.REG_IMAGES),
    log:
        "results/logs/generate_class_images/{reg}.log",
    benchmark:
        "results/benchmarks/generate_class_images/{reg}.tsv"
    wildcard_constraints:
        reg=dag.one_of(GRID.reg_folders("generated")),
    conda:
        "../../envs/train.yaml"
    resources:
        gpu=1,
    params:
        settings=GRID.get_class_image_params,
        family=GRID.get_family,
        impl=versions.REGULARIZATION,
    script:
        "../scripts/generate_class_images.py"


rule prepare_ground_truth:
    input:
        photos=config["subject"]["ground_truth"] or [],
    output:
        directory(paths.REG_IMAGES),
    log:
        "results/logs/prepare_ground_truth/{reg}.log",
    benchmark:
        "results/benchmarks/prepare_ground_truth/{reg}.tsv"
    wildcard_constraints:
        reg=dag.one_of(GRID.reg_folders("ground_truth")),
    conda:
        "../../envs/train.yaml"
    params:
        fit=GRID.get_ground_truth_params,
        impl=versions.REGULARIZATION,
    script:
        "../scripts/prepare_ground_truth.py"
