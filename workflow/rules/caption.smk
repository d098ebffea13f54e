rule caption_images:
    input:
        unpack(GRID.caption_inputs),
    output:
        dag.CAPTIONS,
    params:
        settings=config["caption"],
        impl=versions.CAPTION,
    log:
        "results/logs/caption_images/{captioner}.log",
    benchmark:
        "results/benchmarks/caption_images/{captioner}.tsv"
    resources:
        gpu=1,
    conda:
        "../../envs/caption.yaml"
    script:
        "../scripts/caption_images.py"
