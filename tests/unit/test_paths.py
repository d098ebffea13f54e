"""Where the rules write: the templates are a contract with existing results folders."""

import re

from dreamgrid import paths


def test_templates_keep_the_paths_existing_runs_have():
    # Renaming any of these would make Snakemake rerun (or lose) what a study has computed.
    assert paths.CAPTIONS == "results/captions/blip/captions.csv"
    assert paths.CHECKPOINT == "results/arms/{arm}/checkpoints/epoch-{epoch}.safetensors"
    assert (
        paths.RENDER_SHARD == "results/arms/{arm}/epoch-{epoch}/{prompt_set}/renders/shard-{shard}"
    )
    assert paths.FACES_SHARD == (
        "results/arms/{arm}/epoch-{epoch}/{prompt_set}/faces/{model}-{detector}/shard-{shard}.json"
    )
    assert paths.SCORES == "results/arms/{arm}/epoch-{epoch}/{prompt_set}/scores.csv"
    assert paths.REFERENCES == "results/references/{model}-{detector}.json"
    assert paths.CANDIDATE_RENDERS == "results/token_finder/renders/group-{group}/{candidate}"
    assert paths.SUMMARY == "results/summary.csv" and paths.MANIFEST == "results/manifest.json"


def test_every_template_is_under_results_and_names_only_rule_wildcards():
    wildcards = {"arm", "epoch", "prompt_set", "shard", "model", "detector", "reg", "group"}
    wildcards |= {"prepared", "targets", "finder", "page"}  # per base model (axes.base_model)
    templates = {
        name: value
        for name, value in vars(paths).items()
        if name.isupper() and isinstance(value, str) and name != "WORKFLOW_DESCRIPTION"
    }
    templates.update({f"TABLE_PAGES[{k}]": v for k, v in paths.TABLE_PAGES.items()})
    for name, template in templates.items():
        assert template.startswith(paths.RESULTS), name
        assert set(re.findall(r"{(\w+)}", template)) <= wildcards | {"candidate"}, name


def test_report_text_is_the_runs_landing_page_once_written(tmp_path):
    assert paths.report_text(str(tmp_path)) == paths.WORKFLOW_DESCRIPTION
    landing = tmp_path / paths.LANDING_PAGE
    landing.parent.mkdir(parents=True)
    landing.write_text("verdict")
    assert paths.report_text(str(tmp_path)) == str(landing.resolve())
