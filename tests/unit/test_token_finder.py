"""`token: auto`: the candidate list, the finder's jobs, and how arms get the chosen name."""

from types import SimpleNamespace

import pandas as pd
import pytest

from dreamgrid import candidates, dag, paths
from dreamgrid import config as cfg
from dreamgrid.errors import SpecError
from dreamgrid.sample import SampleSettings


def config(tmp_path, names="Idris Elba\nWill Smith\n", token="auto", **finder):
    listing = tmp_path / "names.txt"
    listing.write_text(names)
    return {
        "subject": {"class_word": "man", "train_images": "photos", "references": "refs"},
        "base_model": "tiny",
        "axes": {"token": {"celebrity": token, "rare": "ohwx"}},
        "token_finder": {"candidates": str(listing), **finder},
    }


def test_names_skip_comments_and_blanks_and_refuse_repeats(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("# look-alikes\n\nIdris  Elba   # actor\nWill Smith\n")
    assert candidates.read_names(path) == ["Idris Elba", "Will Smith"]
    path.write_text("Idris Elba\nidris-elba\n")
    with pytest.raises(SpecError, match=r"names.txt:2: 'idris-elba' repeats 'Idris Elba'"):
        candidates.read_names(path)
    path.write_text("# nobody\n")
    with pytest.raises(SpecError, match="no candidate names"):
        candidates.read_names(path)


def test_shipped_lists_hold_a_few_hundred_names_per_class():
    for class_word in ("man", "woman"):
        names = candidates.read_names(candidates.SHIPPED / f"{class_word}.txt")
        assert len(names) >= 200, class_word


def test_auto_needs_a_list_for_the_class_word(tmp_path):
    settings = config(tmp_path)
    settings["token_finder"]["candidates"] = None
    settings["subject"]["class_word"] = "dog"
    with pytest.raises(SpecError, match=r"dog.txt: candidate list not found.*token_finder"):
        cfg.validate(settings)
    settings["axes"]["token"]["celebrity"] = "rex"  # no auto token: no list needed
    cfg.validate(settings)


def test_the_finder_renders_each_name_with_the_finders_prompt_and_seeds(tmp_path):
    grid = dag.Grid(cfg.validate(config(tmp_path, renders=3, seed=7)))
    assert grid.finder_active
    assert grid.candidate_names == {"idris-elba": "Idris Elba", "will-smith": "Will Smith"}
    settings = SampleSettings(**grid.candidate_settings)
    assert settings.seeds == [7, 8, 9]
    assert settings.prompt == "headshot photo of {token} {class}"
    assert paths.RANKING in grid.final_outputs and paths.CANDIDATE_SHEET in grid.final_outputs
    # The summary reads the ranking to name the pick of each auto token.
    assert grid.ranking_files == [paths.RANKING]
    assert grid.tokens == {"celebrity": "auto", "rare": "ohwx"}
    # Grid axes other than the token do not touch the candidates' renders.
    other = config(tmp_path, renders=3, seed=7)
    other["axes"]["regularization"] = ["none", "generated"]
    assert dag.Grid(cfg.validate(other)).candidate_settings == grid.candidate_settings


def test_without_auto_the_finder_does_not_run(tmp_path):
    grid = dag.Grid(cfg.validate(config(tmp_path, token="idris elba")))
    assert not grid.finder_active and grid.candidate_names == {}
    assert paths.RANKING not in grid.final_outputs and grid.ranking_files == []
    assert dag.Grid(cfg.validate(config(tmp_path, token="x", enabled=True))).finder_active


def test_auto_arms_get_the_top_ranked_name_once_the_ranking_is_final(tmp_path):
    ranking = tmp_path / "ranking.csv"
    pd.DataFrame({"candidate": ["Will Smith", "Idris Elba"], "rank": [2, 1]}).to_csv(ranking)

    class NotYet(Exception):
        """Stands for Snakemake's IncompleteCheckpointException."""

    state = {"final": False}

    def resolver(finder):
        assert finder == "token_finder"  # the one base_model's finder
        if not state["final"]:
            raise NotYet
        return str(ranking)

    grid = dag.Grid(cfg.validate(config(tmp_path)), ranking=resolver)
    job = SimpleNamespace(arm="celebrity-noreg-nocap", epoch="1")
    # Before the ranking exists, jobs that use the token wait for it (no file input).
    with pytest.raises(NotYet):
        grid.get_train_inputs(job)
    with pytest.raises(NotYet):
        grid.get_wait_for_token(job)
    assert grid.get_wait_for_token(SimpleNamespace(arm="rare-noreg-nocap")) == []
    state["final"] = True
    assert (
        grid.get_arm_params(SimpleNamespace(arm="celebrity-noreg-nocap"))["token"] == "Idris Elba"
    )
    assert grid.get_arm_params(SimpleNamespace(arm="rare-noreg-nocap"))["token"] == "ohwx"
    assert grid.get_wait_for_token(job) == [] and "ranking" not in grid.get_train_inputs(job)


def test_one_render_job_per_group_of_names_and_a_longer_list_adds_groups(tmp_path):
    names = "".join(f"Name {c}\n" for c in "ABCDE")
    grid = dag.Grid(cfg.validate(config(tmp_path, names=names, names_per_job=2)))
    groups = grid.candidate_groups
    assert [list(g.values()) for g in groups] == [
        ["Name A", "Name B"],
        ["Name C", "Name D"],
        ["Name E"],
    ]
    assert grid.candidate_group_dirs == [paths.CANDIDATE_GROUP.format(group=k) for k in range(3)]
    assert grid.candidate_render_dirs[2] == f"{paths.TOKEN_FINDER}/renders/group-1/name-c"
    assert grid.get_candidate_group_names(SimpleNamespace(group="1")) == groups[1]
    # Appending a name leaves the full groups' jobs as they were: only the last group changes.
    longer = dag.Grid(cfg.validate(config(tmp_path, names=names + "Name F\n", names_per_job=2)))
    assert longer.candidate_groups[:2] == groups[:2]
    assert list(longer.candidate_groups[2].values()) == ["Name E", "Name F"]
    # The shipped list (~200 names) renders in a handful of jobs, one model load each.
    shipped = config(tmp_path)
    shipped["token_finder"]["candidates"] = None
    shipped["subject"]["class_word"] = "woman"
    study = dag.Grid(cfg.validate(shipped))
    assert len(study.candidate_names) > 200 and len(study.candidate_groups) == 7
