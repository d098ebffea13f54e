"""Where every rule writes, in the order the pipeline runs (relative to the working folder).

Templates in ``{braces}`` are the rules' wildcards; :class:`dreamgrid.dag.Grid` fills them for
the targets and the input functions.
"""

from __future__ import annotations

RESULTS = "results"
#: The inputs the preflight has checked, so an unchanged run does not check them again.
PREFLIGHT_CACHE = f"{RESULTS}/preflight/inputs.json"

# ---- prepare: every model a job loads, prepared once ------------------------------------------
#: The one ``base_model``; each of ``axes.base_model`` is prepared in ``base-<name>``
#: (:func:`base_model_dir`), the folder name being the prepare rule's ``{prepared}``.
BASE_MODEL_DIR = f"{RESULTS}/models/base"
PREPARED_MODEL = f"{RESULTS}/models/{{prepared}}"
CAPTION_MODEL_DIR = f"{RESULTS}/models/captioner"
#: A CLIP model given as a hub id, downloaded once (score.clip_model).
CLIP_MODEL_DIR = f"{RESULTS}/models/clip"
#: LAVIS's checkpoint and tokenizer caches (caption.backend lavis), downloaded once.
LAVIS_MODEL_DIR = f"{RESULTS}/models/lavis"
#: LoRA targets checked against the prepared base model once, before any lora arm trains.
LORA_TARGETS = f"{RESULTS}/models/lora_targets.json"
#: The same per base model (``{targets}``: ``lora_targets`` or ``lora_targets-<name>``).
LORA_TARGETS_OF = f"{RESULTS}/models/{{targets}}.json"

# ---- caption ----------------------------------------------------------------------------------
#: One raw caption per training image; ``blip`` names the one captioner (either backend).
CAPTIONS = f"{RESULTS}/captions/blip/captions.csv"

# ---- regularization ---------------------------------------------------------------------------
#: Class images of one regularization level (``generated`` or ``ground_truth``).
REG_IMAGES = f"{RESULTS}/regularization/{{reg}}/images"

# ---- token finder -----------------------------------------------------------------------------
TOKEN_FINDER = f"{RESULTS}/token_finder"
#: One render job's candidates (token_finder.names_per_job names, in list order): a folder
#: with one sub-folder of base-model renders per name (named by its slug), and their table.
CANDIDATE_GROUP = f"{TOKEN_FINDER}/renders/group-{{group}}"
CANDIDATE_GROUP_TABLE = f"{TOKEN_FINDER}/renders/group-{{group}}.csv"
CANDIDATE_RENDERS = f"{CANDIDATE_GROUP}/{{candidate}}"
RANKING = f"{TOKEN_FINDER}/ranking.csv"
CANDIDATE_SHEET = f"{TOKEN_FINDER}/top.png"
#: The same as rule templates, once per base model: ``{finder}`` is ``token_finder`` for the
#: one base_model (the paths above) or ``token_finder/<name>`` for each of axes.base_model,
#: which renders the candidates itself (a name one model knows may be unknown to another).
FINDER_DIR = f"{RESULTS}/{{finder}}"
CANDIDATE_GROUP_OF = f"{FINDER_DIR}/renders/group-{{group}}"
CANDIDATE_GROUP_TABLE_OF = f"{FINDER_DIR}/renders/group-{{group}}.csv"
RANKING_OF = f"{FINDER_DIR}/ranking.csv"
CANDIDATE_SHEET_OF = f"{FINDER_DIR}/top.png"

# ---- train ------------------------------------------------------------------------------------
ARM_DIR = f"{RESULTS}/arms/{{arm}}"
CHECKPOINT = f"{ARM_DIR}/checkpoints/epoch-{{epoch}}.safetensors"
CHECKPOINT_META = f"{ARM_DIR}/checkpoints/epoch-{{epoch}}.json"
LOSS_LOG = f"{ARM_DIR}/checkpoints/epoch-{{epoch}}.loss.csv"
#: VAE latents of training and class images, by content (dreamgrid.train.cache), shared by arms.
LATENT_CACHE = f"{RESULTS}/cache/latents"
#: The arm's one resume state (full-precision weights + optimizer), rewritten by every epoch.
#: Not a declared output: epoch e+1 reads it, and it must survive the last epoch so that added
#: epochs continue (Snakemake would delete a temp() output no job needs yet).
RESUME_STATE = f"{ARM_DIR}/state/resume.safetensors"
#: Written when the arm's resume state is deleted after its last planned epoch.
STATE_RELEASED = f"{ARM_DIR}/state/released.json"
#: What keep_checkpoints: best kept and removed of one arm's checkpoints.
CHECKPOINTS_KEPT = f"{ARM_DIR}/checkpoints/kept.json"
#: One arm's training loss against steps (from its epochs' .loss.csv files).
LOSS_CURVE = f"{RESULTS}/plots/loss/{{arm}}.png"

# ---- sample -----------------------------------------------------------------------------------
#: One checkpoint's renders and scores for one prompt set (``main`` = ``sample.prompt``).
PROMPT_DIR = f"{ARM_DIR}/epoch-{{epoch}}/{{prompt_set}}"
RENDERS = f"{PROMPT_DIR}/renders"
#: One shard of a checkpoint's renders (a folder under renders/) and its render table.
RENDER_SHARD = f"{RENDERS}/shard-{{shard}}"
RENDER_SHARD_TABLE = f"{RENDERS}/shard-{{shard}}.csv"

# ---- score ------------------------------------------------------------------------------------
REFERENCES = f"{RESULTS}/references/{{model}}-{{detector}}.json"
#: Faces (embeddings, box areas, content hashes) of one shard for one (model, detector).
FACES_SHARD = f"{PROMPT_DIR}/faces/{{model}}-{{detector}}/shard-{{shard}}.json"
#: Render embeddings by file content hash, shared by all jobs (dreamgrid.scoring.embedding.EmbeddingCache).
FACE_CACHE = f"{RESULTS}/cache/faces"
SCORES = f"{PROMPT_DIR}/scores.csv"
SCORES_META = f"{PROMPT_DIR}/scores.meta.json"
#: CLIPScore of every render against its prompt (only with score.clip_model).
CLIP_SCORES = f"{PROMPT_DIR}/clip.csv"
#: Leave-one-out distances among the reference photos (the "as alike as real photos" line).
REFERENCE_BASELINE = f"{RESULTS}/references/{{model}}-{{detector}}.baseline.csv"
#: Renders against the training photos (dreamgrid.memorization): per render, per checkpoint,
#: and every pair of training photos (the yardstick).
MEMORIZATION_RENDERS = f"{RESULTS}/memorization/renders.tsv"
MEMORIZATION = f"{RESULTS}/memorization.csv"
MEMORIZATION_PAIRS = f"{RESULTS}/memorization/training-pairs.csv"

# ---- search (search.method: successive_halving) -----------------------------------------------
#: One look's decision table (dreamgrid.adaptive.decide), the decide_look checkpoint's output.
SEARCH_LOOK = f"{RESULTS}/search/look-{{epoch}}.tsv"
#: Every look's table, one after the other (the report's table).
SEARCH_DECISIONS = f"{RESULTS}/search/decisions.tsv"

# ---- report -----------------------------------------------------------------------------------
SCORES_TABLE = f"{RESULTS}/scores.tsv"
SUMMARY = f"{RESULTS}/summary.csv"
SUMMARY_MD = f"{RESULTS}/report/summary.md"
#: Paired comparisons between arms at each epoch, and the factorial effects.
COMPARISONS = f"{RESULTS}/comparisons.csv"
EFFECTS = f"{RESULTS}/effects.csv"
VERDICT = f"{RESULTS}/verdict.json"
#: The smallest difference the run detects with 80% power (the summary's power sentence).
POWER = f"{RESULTS}/power.csv"
#: GPU time measured from the benchmark files of the finished jobs (dreamgrid.budget).
GPU_TIME = f"{RESULTS}/gpu_time.csv"
#: Likeness against class bleed and prompt following per checkpoint (prompt sets).
FLEXIBILITY = f"{RESULTS}/flexibility.csv"
HISTOGRAM = f"{RESULTS}/plots/histograms/{{arm}}/{{prompt_set}}/epoch-{{epoch}}.png"
#: All checkpoints of one arm as one faceted histogram figure.
ARM_HISTOGRAMS = f"{RESULTS}/plots/histograms/{{arm}}/{{prompt_set}}/all-epochs.png"
#: Every arm's renders at its chosen epoch, a panel per base model.
CHOSEN_HISTOGRAMS = f"{RESULTS}/plots/chosen-epochs/{{prompt_set}}.png"
#: Metrics against epoch and against training steps, one line per arm with CI bands.
CURVES_EPOCH = f"{RESULTS}/plots/curves/{{prompt_set}}/by-epoch.png"
CURVES_STEPS = f"{RESULTS}/plots/curves/{{prompt_set}}/by-steps.png"
#: Renders of one checkpoint sorted by distance (best, median, worst).
CONTACT_SHEET = f"{RESULTS}/plots/contact-sheets/{{arm}}/{{prompt_set}}/epoch-{{epoch}}.png"
TRADEOFF = f"{RESULTS}/plots/curves/tradeoff.png"
#: The verdict (summary.md) and the tables as pages the HTML report shows, and the report's
#: landing page (demo banner and verdict first), which the Snakefile's ``report:`` uses once
#: a run has written it.
VERDICT_PAGE = f"{RESULTS}/report/verdict.html"
TABLE_PAGES = {
    "summary": f"{RESULTS}/report/tables/summary.html",
    "comparisons": f"{RESULTS}/report/tables/comparisons.html",
    "effects": f"{RESULTS}/report/tables/effects.html",
    "flexibility": f"{RESULTS}/report/tables/flexibility.html",
}
RANKING_PAGE = f"{RESULTS}/report/tables/ranking.html"
#: The ranking page of each base model (``{page}``: ``ranking`` or ``ranking-<name>``).
RANKING_PAGE_OF = f"{RESULTS}/report/tables/{{page}}.html"
LANDING_PAGE = f"{RESULTS}/report/landing.rst"
WORKFLOW_DESCRIPTION = "workflow/report/workflow.rst"

# ---- manifest ---------------------------------------------------------------------------------
#: What the run was made from: config hash, git commit, versions, model hashes, seeds, hardware.
MANIFEST = f"{RESULTS}/manifest.json"


def report_text(workdir: str = ".") -> str:
    """The report's landing page: the run's own (``LANDING_PAGE``, with its verdict) once it
    exists, else the static description (relative to the Snakefile)."""
    from pathlib import Path

    landing = Path(workdir) / LANDING_PAGE
    return str(landing.resolve()) if landing.is_file() else WORKFLOW_DESCRIPTION


def base_suffix(name: str) -> str:
    """What a base model of ``axes.base_model`` adds to its folders' names ("" for the one
    ``base_model``, whose folders keep the names they had before the axis)."""
    return f"-{name}" if name else ""


def base_model_dir(name: str) -> str:
    """Where prepare_base_model puts base model ``name`` ("" = the one ``base_model``)."""
    return BASE_MODEL_DIR + base_suffix(name)


def lora_targets(name: str) -> str:
    """The LoRA target check of base model ``name``."""
    return LORA_TARGETS_OF.format(targets="lora_targets" + base_suffix(name))


def reg_images(reg: str, name: str) -> str:
    """Class images of regularization level ``reg`` for base model ``name``'s arms (generated
    by that model, or the ground truth fitted to its training resolution)."""
    return REG_IMAGES.format(reg=reg + base_suffix(name))


def finder_folder(name: str) -> str:
    """``{finder}`` of base model ``name``'s token finder (under results/)."""
    return "token_finder" + (f"/{name}" if name else "")


def ranking_page(name: str) -> str:
    """``{page}`` of base model ``name``'s ranking page."""
    return "ranking" + base_suffix(name)
