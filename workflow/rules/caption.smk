rule caption_images:
    input:
        unpack(GRID.get_caption_inputs),
    output:
        paths.CAPTIONS,
    log:
        "results/logs/caption_images/blip.log",
    benchmark:
        "results/benchmarks/caption_images/blip.tsv"
    conda:
        "../../envs/caption.yaml"
    resources:
        gpu=1,
    params:
        settings=GRID.caption_params,
        impl=versions.CAPTION,
    script:
        "../scripts/caption_images.py"
