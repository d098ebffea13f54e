from snakemake.utils import min_version

min_version("9.0")


# The embedded demo is the config only when none is given: a --configfile stands alone (plus
# the schema's defaults), so no demo value leaks into a user's study.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/caption.smk"
include: "workflow/rules/regularization.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/token_finder.smk"
include: "workflow/rules/manifest.smk"
include: "workflow/rules/search.smk"


# The run's own landing page (demo banner and verdict first) once a run has written it.
report: paths.report_text()


# On a cluster these run on the submitting node: the only jobs that may download a model
# (compute nodes often have no network; every other job runs offline). The LoRA target check
# reads only configs.
localrules:
    prepare_base_model,
    prepare_caption_model,
    prepare_lavis_model,
    prepare_clip_model,
    prepare_face_models,
    check_lora_targets,


# Specs were built while reading the config (common.smk).
onstart:
    preflight.run(config, cache=paths.PREFLIGHT_CACHE, specs=False)


rule all:
    default_target: True
    input:
        GRID.get_final_outputs,
