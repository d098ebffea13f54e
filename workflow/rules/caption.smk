rule caption_images:
    input:
        unpack(GRID.caption_inputs),
    output:
        dag.CAPTIONS,
    log:
        "results/logs/caption_images/{captioner}.log",
    benchmark:
        "results/benchmarks/caption_images/{captioner}.tsv"
    conda:
        "../../envs/caption.yaml"
    resources:
        gpu=1,
    params:
        settings=GRID.caption_params(),
        impl=versions.CAPTION,
    script:
        "../scripts/caption_images.py"
