rule write_manifest:
    input:
        unpack(GRID.get_manifest_inputs),
    output:
        report(
            paths.MANIFEST,
            caption="../report/manifest.rst",
            category="6. Reproducibility",
            labels={"file": "manifest"},
        ),
    log:
        "results/logs/write_manifest/all.log",
    benchmark:
        "results/benchmarks/write_manifest/all.tsv"
    conda:
        "../../envs/train.yaml"
    params:
        config_sha256=manifest.config_hash(config),
        seeds=manifest.seeds(config),
    script:
        "../scripts/write_manifest.py"
